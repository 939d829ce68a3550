//! `nulab recovery` through the binary: `serve` runs as a real process on loopback; a volume
//! made by `nulab volume create` is escrowed over HTTPS; the helpdesk gets its recovery password
//! by the key ID's first 8 characters (audited); the next escrow rotates it on the image and
//! re-escrows; the audit log shows every read.

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

fn nulab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nulab"))
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// `nulab volume unlock --with recovery-password --password PASSWORD IMAGE`.
fn unlock_with_recovery_password(image: &Path, password: &str) -> Output {
    nulab()
        .args([
            "volume",
            "unlock",
            "--with",
            "recovery-password",
            "--password",
            password,
        ])
        .arg(image)
        .output()
        .expect("unlock")
}

fn json(out: Output, what: &str) -> serde_json::Value {
    serde_json::from_str(&ok(out, what)).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The server process; killed when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path) -> (Server, String) {
    serve_with(dir, &[])
}

/// `serve` with more arguments (`--key-file PATH`, say).
fn serve_with(dir: &Path, extra: &[&std::ffi::OsStr]) -> (Server, String) {
    let mut child = nulab()
        .args(["recovery", "serve", "--listen", "127.0.0.1:0"])
        .arg("--db")
        .arg(dir.join("escrow.sqlite"))
        .arg("--ca-out")
        .arg(dir.join("ca.pem"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nulab recovery serve");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the listening line");
    let addr = line
        .trim()
        .strip_prefix("https=")
        .unwrap_or_else(|| panic!("no https= line: {line:?}"))
        .to_owned();
    let port = addr.rsplit(':').next().expect("port").to_owned();
    (server, format!("https://localhost:{port}"))
}

#[test]
fn serve_escrow_get_rotate_and_audit_through_the_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let image = d.join("c.img");
    let created = json(
        nulab()
            .args(["volume", "create"])
            .arg(&image)
            .args([
                "--tpm",
                "--recovery-password",
                "--seed",
                "5",
                "--iterations",
                "64",
                "--json",
            ])
            .output()
            .expect("volume create"),
        "volume create",
    );
    let password = created["recovery_password"]
        .as_str()
        .expect("recovery password")
        .to_owned();

    let (_server, url) = serve(d);
    let db = d.join("escrow.sqlite");
    let device_token = ok(
        nulab()
            .args(["recovery", "enrol", "PC0042", "--db"])
            .arg(&db)
            .output()
            .expect("enrol"),
        "enrol",
    )
    .trim()
    .to_owned();
    let operator = json(
        nulab()
            .args([
                "recovery",
                "operator",
                "CONTOSO\\helpdesk1",
                "--role",
                "administrator",
                "--json",
                "--db",
            ])
            .arg(&db)
            .output()
            .expect("operator"),
        "operator",
    );
    let op_token = operator["token"].as_str().expect("token").to_owned();
    let ca = d.join("ca.pem");
    let log = d.join("BitLockerManagementHandler.log");

    let escrow = || {
        nulab()
            .args(["recovery", "escrow"])
            .arg(&image)
            .args(["--device", "PC0042", "--mp", &url, "--token", &device_token])
            .arg("--ca")
            .arg(&ca)
            .arg("--log")
            .arg(&log)
            .args(["--backoff", "100ms", "--json"])
            .output()
            .expect("escrow")
    };
    let first = json(escrow(), "escrow");
    assert_eq!(first["escrowed"], true, "{first}");
    assert_eq!(first["rotations"].as_array().map(Vec::len), Some(0));
    let handler_log = std::fs::read_to_string(&log).expect("handler log");
    assert!(handler_log.contains(&format!(
        "<![LOG[Checking for Recovery Service at {url}/SMS_MP_MBAM/CoreService.svc]LOG]!>"
    )));

    // The key ID as the recovery screen shows it, from the volume's own listing.
    let protectors = json(
        nulab()
            .args(["volume", "protectors", "--json"])
            .arg(&image)
            .output()
            .expect("protectors"),
        "protectors",
    );
    let key_id = protectors
        .as_array()
        .expect("list")
        .iter()
        .find(|p| p.to_string().contains("Numerical Password"))
        .and_then(|p| p["id"].as_str())
        .unwrap_or_else(|| panic!("no recovery password protector in {protectors}"))
        .trim_start_matches('{')
        .to_owned();
    let short = &key_id[..8];

    let get = |key: &str, reason: &str| {
        nulab()
            .args(["recovery", "get", "--key-id", key, "--reason", reason])
            .args(["--server", &url, "--token", &op_token, "--json"])
            .arg("--ca")
            .arg(&ca)
            .output()
            .expect("get")
    };
    let got = json(get(short, "user locked out, ticket 4711"), "get");
    assert_eq!(got["text"], password.as_str(), "{got}");
    assert_eq!(got["rotation_requested"], true);
    assert_eq!(got["device"], "PC0042");

    // Without a valid token nothing is disclosed.
    let refused = nulab()
        .args(["recovery", "get", "--key-id", short, "--reason", "x"])
        .args(["--server", &url, "--token", &device_token])
        .arg("--ca")
        .arg(&ca)
        .output()
        .expect("get");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));

    // The next contact rotates the disclosed password on the image and re-escrows.
    let second = json(escrow(), "escrow");
    assert_eq!(
        second["rotations"].as_array().map(Vec::len),
        Some(1),
        "{second}"
    );
    assert_eq!(second["re_escrowed"], true);
    let new_key = second["rotations"][0]["new"]
        .as_str()
        .expect("new")
        .to_owned();
    let unlocked = unlock_with_recovery_password(&image, &password);
    assert!(
        !unlocked.status.success(),
        "the disclosed password still unlocks"
    );
    let fresh = json(get(&new_key, "verify rotation"), "get new");
    let new_password = fresh["text"].as_str().expect("text");
    let unlocked = unlock_with_recovery_password(&image, new_password);
    ok(unlocked, "unlock with the re-escrowed password");

    let audit = json(
        nulab()
            .args([
                "recovery", "audit", "--server", &url, "--token", &op_token, "--json",
            ])
            .arg("--ca")
            .arg(&ca)
            .output()
            .expect("audit"),
        "audit",
    );
    let entries = audit.as_array().expect("entries");
    let outcomes: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    assert_eq!(outcomes, ["disclosed", "disclosed"]);
    assert_eq!(entries[0]["operator"], "CONTOSO\\helpdesk1");
    assert_eq!(entries[0]["reason"], "user locked out, ticket 4711");
    assert_eq!(entries[0]["query"], short.to_ascii_uppercase());
}

/// Issue 20, hole 1 through the binary: a second device escrows the same image (so the same
/// key ID) under its own name. `recovery get` names both devices and refuses to guess;
/// `--device` chooses; `recovery audit` shows the choice with UTC ISO 8601 times.
#[test]
fn get_chooses_by_device_when_a_key_id_is_held_by_several() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let image = d.join("c.img");
    let created = json(
        nulab()
            .args(["volume", "create"])
            .arg(&image)
            .args(["--tpm", "--recovery-password", "--seed", "7"])
            .args(["--iterations", "64", "--json"])
            .output()
            .expect("volume create"),
        "volume create",
    );
    let password = created["recovery_password"]
        .as_str()
        .expect("pw")
        .to_owned();
    let (_server, url) = serve(d);
    let db = d.join("escrow.sqlite");
    let ca = d.join("ca.pem");
    let enrol = |device: &str| {
        ok(
            nulab()
                .args(["recovery", "enrol", device, "--db"])
                .arg(&db)
                .output()
                .expect("enrol"),
            "enrol",
        )
        .trim()
        .to_owned()
    };
    for device in ["PC0042", "PC0099"] {
        let token = enrol(device);
        let escrowed = json(
            nulab()
                .args(["recovery", "escrow"])
                .arg(&image)
                .args(["--device", device, "--mp", &url, "--token", &token])
                .arg("--ca")
                .arg(&ca)
                .arg("--json")
                .output()
                .expect("escrow"),
            "escrow",
        );
        assert_eq!(escrowed["escrowed"], true, "{device}: {escrowed}");
    }
    let op_token = ok(
        nulab()
            .args(["recovery", "operator", "CONTOSO\\admin1", "--role"])
            .args(["administrator", "--db"])
            .arg(&db)
            .output()
            .expect("operator"),
        "operator",
    )
    .trim()
    .to_owned();
    let protectors = json(
        nulab()
            .args(["volume", "protectors", "--json"])
            .arg(&image)
            .output()
            .expect("protectors"),
        "protectors",
    );
    let key_id = protectors
        .as_array()
        .expect("list")
        .iter()
        .find(|p| p.to_string().contains("Numerical Password"))
        .and_then(|p| p["id"].as_str())
        .expect("recovery password protector")
        .trim_matches(|c| c == '{' || c == '}')
        .to_owned();
    let get = |extra: &[&str]| {
        nulab()
            .args([
                "recovery", "get", "--key-id", &key_id, "--reason", "ticket 7",
            ])
            .args(["--server", &url, "--token", &op_token])
            .arg("--ca")
            .arg(&ca)
            .args(extra)
            .output()
            .expect("get")
    };
    let refused = get(&[]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("held-by-several-devices"), "{stderr}");
    assert!(
        stderr.contains("held by device PC0042 (volume C)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("held by device PC0099 (volume C)")
            && stderr.contains("while another device already held this key ID"),
        "{stderr}"
    );
    let got = json(get(&["--device", "PC0042", "--json"]), "get --device");
    assert_eq!(got["device"], "PC0042");
    assert_eq!(got["text"], password.as_str());

    let audit = ok(
        nulab()
            .args(["recovery", "audit", "--server", &url, "--token", &op_token])
            .arg("--ca")
            .arg(&ca)
            .output()
            .expect("audit"),
        "audit",
    );
    let lines: Vec<&str> = audit.lines().collect();
    assert_eq!(lines.len(), 2, "{audit}");
    assert!(lines[0].contains("held-by-several-devices"), "{audit}");
    assert!(
        lines[1].contains("of PC0042: disclosed (PC0042)"),
        "{audit}"
    );
    for line in lines {
        // `#1 at 2026-12-07T02:17:33.123Z: ...`
        let at = line
            .split(" at ")
            .nth(1)
            .and_then(|rest| rest.split(": ").next())
            .unwrap_or_else(|| panic!("no time in {line:?}"));
        let b = at.as_bytes();
        assert!(
            at.len() == 24
                && b[4] == b'-'
                && b[10] == b'T'
                && b[19] == b'.'
                && at.ends_with('Z')
                && at.starts_with("20"),
            "not UTC ISO 8601: {at:?} in {line:?}"
        );
    }
}

/// `recovery serve --json` says where it listens in one JSON line; durations take a unit.
#[test]
fn serve_says_where_it_listens_in_json_and_durations_take_a_unit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = nulab()
        .args(["recovery", "serve", "--listen", "127.0.0.1:0", "--json"])
        .arg("--db")
        .arg(dir.path().join("escrow.sqlite"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nulab recovery serve");
    let stdout = child.stdout.take().expect("stdout");
    let _server = Server(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the listening line");
    let value: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(value["type"], "listening", "{line}");
    assert!(
        value["https"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{line}"
    );
    assert!(value["http"].is_null(), "{line}");
    let ca = value["ca"].as_str().expect("the CA written");
    assert!(std::path::Path::new(ca).exists(), "{line}");
    assert!(value["new_key_file"].is_string(), "{line}");

    let bare = nulab()
        .args([
            "recovery",
            "escrow",
            "x.img",
            "--device",
            "D",
            "--mp",
            "https://h",
        ])
        .args(["--token", "t", "--backoff", "500"])
        .output()
        .expect("runs");
    assert_eq!(bare.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bare.stderr).contains("500ms"),
        "{}",
        String::from_utf8_lossy(&bare.stderr)
    );
}

/// Issue 13's one grammar on the PEM flags: `-` reads standard input. `serve --cert - --key -`
/// takes the chain and the key from one PEM stream; `audit --ca -` and `get --ca -` take the
/// root from standard input; PEM text that holds no certificate is refused naming `<stdin>`.
#[test]
fn the_pem_flags_read_standard_input_for_a_dash() {
    use rand_core::SeedableRng as _;
    use std::io::Write as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("escrow.sqlite");
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(13);
    let ca = recovery_service::pki::RootCa::generate("Contoso Root CA", &mut rng).expect("ca");
    let id = ca
        .issue_server(&["localhost".into()], &mut rng)
        .expect("server certificate");

    let mut child = nulab()
        .args(["recovery", "serve", "--listen", "127.0.0.1:0"])
        .args(["--cert", "-", "--key", "-", "--no-encrypt", "--db"])
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nulab recovery serve");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{}{}", id.chain_pem, id.key_pem).as_bytes())
        .expect("write the PEM");
    drop(stdin);
    let stdout = child.stdout.take().expect("stdout");
    let _server = Server(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the listening line");
    let port = line
        .trim()
        .strip_prefix("https=")
        .and_then(|a| a.rsplit(':').next())
        .unwrap_or_else(|| panic!("no https= line: {line:?}"))
        .to_owned();
    let url = format!("https://localhost:{port}");
    let operator = json(
        nulab()
            .args(["recovery", "operator", "CONTOSO\\auditor1", "--role"])
            .args(["administrator", "--json", "--db"])
            .arg(&db)
            .output()
            .expect("operator"),
        "operator",
    );
    let token = operator["token"].as_str().expect("token").to_owned();

    let with_stdin = |args: &[&str], input: &str| {
        let mut child = nulab()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("output")
    };
    let audit = ["recovery", "audit", "--server", &url, "--token", &token];
    let log = json(
        with_stdin(&[&audit[..], &["--ca", "-", "--json"]].concat(), ca.pem()),
        "audit with --ca -",
    );
    assert_eq!(log.as_array().map(Vec::len), Some(0), "{log}");
    let get = [
        "recovery",
        "get",
        "--key-id",
        "8F3B1C2D",
        "--reason",
        "ticket 13",
        "--server",
        &url,
        "--token",
        &token,
        "--ca",
        "-",
    ];
    let missing = with_stdin(&get, ca.pem());
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("404"),
        "reached the service through the root read from stdin: {missing:?}"
    );

    let refused = with_stdin(
        &[&audit[..], &["--ca", "-"]].concat(),
        "not a certificate\n",
    );
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("<stdin>: no CERTIFICATE block"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The administration commands open an encrypted database with its at-rest key: `DB.key` by
/// default, `--key-file` when it lives elsewhere; without the key they say why, once, and exit
/// non-zero (an unencrypted write would leave rows the encrypted service refuses).
#[test]
fn enrol_and_operator_use_the_at_rest_key_and_refuse_without_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let db = d.join("escrow.sqlite");
    let key = d.join("elsewhere.key");
    let (server, _) = serve_with(d, &["--key-file".as_ref(), key.as_os_str()]);
    drop(server);
    assert!(key.exists(), "serve wrote its at-rest key");

    let refused = nulab()
        .args(["recovery", "enrol", "PC1", "--db"])
        .arg(&db)
        .output()
        .expect("enrol");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("at-rest key"), "{err}");
    assert_eq!(
        err.matches("encryption at rest").count(),
        1,
        "said once: {err}"
    );

    for args in [
        &["enrol", "PC1"][..],
        &["operator", "CONTOSO\\helpdesk1", "--role", "helpdesk"][..],
    ] {
        let token = ok(
            nulab()
                .arg("recovery")
                .args(args)
                .arg("--db")
                .arg(&db)
                .arg("--key-file")
                .arg(&key)
                .output()
                .expect("admin command"),
            args[0],
        );
        assert!(
            token.trim().len() >= 32,
            "{args:?} printed a token: {token:?}"
        );
    }

    // The default key file, DB.key, is found without the flag.
    std::fs::rename(&key, d.join("escrow.sqlite.key")).expect("move the key");
    ok(
        nulab()
            .args(["recovery", "enrol", "PC2", "--db"])
            .arg(&db)
            .output()
            .expect("enrol"),
        "enrol with DB.key",
    );
}
