//! `nulab server` and `nulab client` on a real network, in namespaces: dnsmasq is the separate
//! DHCP server, `nulab server` the WDS Network Unlock provider with a `.pfx` made by
//! `nulab cert new`, and `nulab client` boots a volume made by `nulab volume create` with a
//! Network Unlock protector and a TPM+PIN protector. A capture on the client's interface
//! (tshark in the client namespace) must dissect as the Network Unlock request and reply.
//! With the WDS server not running, the client falls back to the scripted PIN.
//!
//! Topology per test (`testkit::netns::Lan`, namespaces `nunet-<test>-<pid>-*`, all removed on
//! drop): a switch namespace with a bridge, and three hosts plugged into it by veth pairs: `dhcp` (dnsmasq,
//! 192.168.78.1), `wds` (nulab server, 192.168.78.2) and `pc` (nulab client, no address until
//! its lease). Addresses exist only inside the namespaces; every wait is bounded.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::netns::{Lan, Running, wait_for_file};

const NULAB: &str = env!("CARGO_BIN_EXE_nulab");
const PIN: &str = "271828";

/// Hosts `dhcp` (dnsmasq, 192.168.78.1), `wds` (nulab server, 192.168.78.2) and `pc` (nulab
/// client, no address until its lease) on one bridge.
fn topology(test: &str) -> Lan {
    let lan = Lan::new(&format!("nunet-{test}"), &["dhcp", "wds", "pc"]);
    lan.address("dhcp", "192.168.78.1/24");
    lan.address("wds", "192.168.78.2/24");
    lan
}

fn run_ok(command: &mut Command) -> String {
    let out = command.output().expect("runs");
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A certificate pair and a volume with Network Unlock and TPM+PIN protectors.
struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().expect("temp dir");
        let lab = Lab { dir };
        run_ok(
            Command::new(NULAB)
                .args(["cert", "new", "--seed", "11", "--password", "pw"])
                .arg("--out")
                .arg(lab.path("certs")),
        );
        let image = lab.path("disk.img");
        run_ok(
            Command::new(NULAB)
                .args(["volume", "create"])
                .arg(&image)
                .args(["--size", "65536", "--label", "NETLAB", "--seed", "5"])
                .args(["--tpm-pin", PIN])
                .arg("--network-unlock-cert")
                .arg(lab.cer()),
        );
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn certs(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(self.path("certs"))
            .expect("cert folder")
            .map(|e| e.expect("entry").path())
            .collect();
        found.sort();
        found
    }

    fn cer(&self) -> PathBuf {
        self.certs()
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "cer"))
            .expect("nulab cert new wrote a .cer")
    }

    fn pfx(&self) -> PathBuf {
        self.certs()
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "pfx"))
            .expect("nulab cert new wrote a .pfx")
    }
}

fn start_dnsmasq(t: &Lan, lab: &Lab) -> Running {
    t.dnsmasq(
        "dhcp",
        "192.168.78.100,192.168.78.150,255.255.255.0,10m",
        &[],
        lab.dir.path(),
    )
}

fn start_server(t: &Lan, lab: &Lab) -> Running {
    let log = lab.path("wds.log");
    let running = Running::spawn(
        t.command("wds", NULAB)
            .args(["server", "--interface", "wds0", "--password", "pw"])
            .arg("--cert-dir")
            .arg(lab.path("certs"))
            .arg("--log")
            .arg(&log)
            .args(["--for", "120s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    assert!(
        wait_for_file(
            &log,
            "WDS service listening on wds0",
            Duration::from_secs(20)
        ),
        "nulab server did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    running
}

fn boot_client(t: &Lan, lab: &Lab, extra: &[&str]) -> (bool, String) {
    let client = Running::spawn(
        t.command("pc", NULAB)
            .args([
                "client",
                "--interface",
                "pc0",
                "--pin",
                PIN,
                "--pin-after",
                "1s",
            ])
            .arg("--volume")
            .arg(lab.path("disk.img"))
            .args(["--limit", "60s", "--seed", "3"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let out = client.wait(Duration::from_secs(90));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// People read the client's output: sentences and log lines, no Rust `Debug` dump.
fn assert_no_debug_dump(text: &str) {
    for dump in ["{ ", "Lease", "Some(", "[192, "] {
        assert!(!text.contains(dump), "a Debug dump ({dump:?}) in:\n{text}");
    }
}

fn have_everything() -> bool {
    testkit::require_root()
        && ["ip", "dnsmasq", "tshark"]
            .iter()
            .all(|tool| testkit::require_tool(tool))
}

fn tshark_fields(path: &Path, filter: &str, fields: &[&str]) -> Vec<String> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(path).args(["-Y", filter]);
    cmd.args(["-T", "fields", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    run_ok(&mut cmd)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn the_client_unlocks_over_the_network_and_tshark_dissects_the_exchange() {
    if !have_everything() {
        return;
    }
    let t = topology("unlock");
    let lab = Lab::new();
    let _dnsmasq = start_dnsmasq(&t, &lab);
    let mut server = start_server(&t, &lab);
    let capture = lab.path("pc0.pcapng");
    let tshark_log = lab.path("tshark.log");
    let mut tshark = Running::spawn(
        t.command("pc", "tshark")
            .args(["-i", "pc0", "-f", "udp port 67 or udp port 68", "-w"])
            .arg(&capture)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&tshark_log).expect("log file")),
    );
    assert!(
        wait_for_file(&tshark_log, "Capturing on", Duration::from_secs(20)),
        "tshark did not start: {}",
        std::fs::read_to_string(&tshark_log).unwrap_or_default()
    );
    // dumpcap says it is capturing a moment before the socket really sees packets.
    std::thread::sleep(Duration::from_secs(1));

    let keylog = lab.path("nkpu-keys.log");
    let keylog_arg = keylog.display().to_string();
    let (unlocked, transcript) = boot_client(&t, &lab, &["--keylog", &keylog_arg]);
    assert!(unlocked, "the client did not unlock:\n{transcript}");
    // Every phase the client performs, with the values its boot core computed (phases 4 and 5
    // are the server's).
    for phase in [1, 2, 3, 6, 7, 8, 9] {
        assert!(
            transcript.contains(&format!("[phase {phase}]")),
            "phase {phase} is told:\n{transcript}"
        );
    }
    let line_of = |phase: &str| -> &str {
        transcript
            .lines()
            .find(|l| l.contains(phase) && l.contains("sha256:"))
            .unwrap_or_else(|| panic!("a {phase} line with key fingerprints:\n{transcript}"))
    };
    assert!(line_of("[phase 1]").contains("session key SK sha256:"));
    assert!(line_of("[phase 7]").contains("network key CK"));
    assert!(line_of("[phase 8]").contains("volume master key (sha256:"));
    assert!(
        transcript
            .lines()
            .any(|l| l.contains("[phase 9]") && l.contains("\"NETLAB\"")),
        "phase 9 reads the label from the decrypted volume:\n{transcript}"
    );
    // The key log: one NKPU_SESSION line for the exchange, for Wireshark's dissector.
    let keys = std::fs::read_to_string(&keylog).expect("the client wrote its key log");
    let session: Vec<&str> = keys.lines().collect();
    assert_eq!(session.len(), 1, "{keys}");
    let fields: Vec<&str> = session[0].split(' ').collect();
    assert_eq!(fields[0], "NKPU_SESSION", "{keys}");
    assert_eq!(
        fields.len(),
        4,
        "thumbprint, key protector prefix, SK: {keys}"
    );
    assert!(
        transcript.contains(fields[1]),
        "the key log's thumbprint is the certificate phase 1 names:\n{transcript}"
    );
    assert!(
        transcript.contains("with the Network (Certificate Based) protector (network-unlock)"),
        "Network Unlock unlocked the volume:\n{transcript}"
    );
    assert!(
        transcript.contains("the volume label reads NETLAB"),
        "the data decrypts:\n{transcript}"
    );
    assert_no_debug_dump(&transcript);
    assert!(
        transcript.contains("192.168.78."),
        "the lease came from dnsmasq:\n{transcript}"
    );

    // Let the capture see the last packet, then stop it cleanly so the file is complete.
    std::thread::sleep(Duration::from_millis(500));
    tshark.signal("INT");
    let _ = tshark.wait(Duration::from_secs(10));

    let requests = tshark_fields(
        &capture,
        "dhcp.option.vendor_class_id == \"BITLOCKER\" && udp.dstport == 67",
        &["dhcp.option.type", "dhcp.option.length", "dhcp.ip.client"],
    );
    let summary = || {
        run_ok(Command::new("tshark").arg("-r").arg(&capture).args([
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "udp.srcport",
            "-e",
            "udp.dstport",
            "-e",
            "dhcp.option.type",
            "-e",
            "dhcp.option.vendor_class_id",
        ]))
    };
    assert!(
        !requests.is_empty(),
        "a Network Unlock request on the wire; the capture:\n{}\ntshark: {}",
        summary(),
        std::fs::read_to_string(&tshark_log).unwrap_or_default()
    );
    let cols: Vec<&str> = requests[0].split('|').collect();
    let types: Vec<&str> = cols[0].split(',').collect();
    let length_of = |t: &str| testkit::tshark_dhcp_option_length(cols[0], cols[1], t);
    assert_eq!(length_of("60"), "9");
    assert_eq!(length_of("43"), "152");
    assert_eq!(length_of("125"), "135");
    assert!(!types.contains(&"53"), "no option 53: {types:?}");
    assert!(
        cols[2].starts_with("192.168.78."),
        "ciaddr is the lease: {}",
        cols[2]
    );

    let replies = tshark_fields(
        &capture,
        "dhcp.option.vendor_class_id == \"BITLOCKER\" && udp.srcport == 67 && ip.src == 192.168.78.2",
        &["dhcp.type", "dhcp.option.type", "dhcp.option.length"],
    );
    assert!(
        !replies.is_empty(),
        "the WDS server's reply on the wire; the capture:\n{}",
        summary()
    );
    let cols: Vec<&str> = replies[0].split('|').collect();
    assert_eq!(cols[0], "2", "a BOOTREPLY");
    let types: Vec<&str> = cols[1].split(',').collect();
    let lengths: Vec<&str> = cols[2].split(',').collect();
    assert_eq!(&types[..2], ["43", "60"]);
    assert_eq!(
        lengths[0], "62",
        "option 43 holds the 60-byte key protector reply"
    );

    // The server counted the reply, and the certificate store reloads on SIGHUP: with the .pfx
    // gone, the certificate is logged as removed (the seed's error condition).
    std::fs::remove_file(lab.pfx()).expect("pfx removed");
    server.signal("HUP");
    let log = lab.path("wds.log");
    assert!(
        wait_for_file(
            &log,
            "is no longer in the FVE_NKP store",
            Duration::from_secs(10)
        ),
        "reload logged: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    server.signal("TERM");
    let out = server.wait(Duration::from_secs(10));
    let counters = String::from_utf8_lossy(&out.stdout);
    assert!(
        counters
            .lines()
            .any(|l| l.starts_with("replied ") && l != "replied 0"),
        "the server counted its replies:\n{counters}"
    );
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text.contains("key returned to"),
        "the WDS log names the reply:\n{log_text}"
    );
    // The counter summary is in the log too, as WDS-style lines.
    assert!(
        log_text
            .lines()
            .any(|l| l.contains("Info: counter summary: replied ") && !l.ends_with(" 0")),
        "the counter summary in the WDS log:\n{log_text}"
    );
    assert!(
        log_text.contains("counter summary: received "),
        "{log_text}"
    );
}

#[test]
fn with_no_wds_server_the_client_falls_back_to_the_pin() {
    if !have_everything() {
        return;
    }
    let t = topology("fallback");
    let lab = Lab::new();
    let _dnsmasq = start_dnsmasq(&t, &lab);
    let (unlocked, transcript) = boot_client(&t, &lab, &[]);
    assert!(unlocked, "the PIN unlocks:\n{transcript}");
    assert!(
        transcript.contains("with the TPM And PIN protector (tpm-and-pin)"),
        "TPM+PIN unlocked the volume:\n{transcript}"
    );
    assert!(
        transcript.contains("The Network (Certificate Based) protector did not unlock the volume"),
        "the outcome says why Network Unlock failed:\n{transcript}"
    );
    assert!(
        transcript.contains("the volume label reads NETLAB"),
        "{transcript}"
    );
    assert_no_debug_dump(&transcript);

    // The machine form: JSON lines, the outcome last.
    let (unlocked, lines) = boot_client(&t, &lab, &["--json"]);
    assert!(unlocked, "the PIN unlocks:\n{lines}");
    let values: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?} in\n{lines}")))
        .collect();
    assert!(
        values
            .iter()
            .any(|v| v["type"] == "event" && v["adapter"] == "pc0"),
        "{lines}"
    );
    let outcome = values.last().expect("an outcome line");
    assert_eq!(outcome["type"], "outcome", "{lines}");
    assert_eq!(outcome["state"], "unlocked", "{lines}");
    assert_eq!(outcome["unlocked_by"], "tpm-and-pin", "{lines}");
    assert_eq!(outcome["volume_label"], "NETLAB", "{lines}");
    assert_eq!(
        outcome["failures"][0]["protector"], "network-unlock",
        "{lines}"
    );
}

#[test]
fn the_server_speaks_json_lines_and_logs_its_summary() {
    if !have_everything() {
        return;
    }
    let t = Lan::new("nunet-json", &["wds"]);
    t.address("wds", "192.168.79.2/24");
    let lab = Lab::new();
    let log = lab.path("wds.log");
    let out = Running::spawn(
        t.command("wds", NULAB)
            .args([
                "server",
                "--interface",
                "wds0",
                "--password",
                "pw",
                "--json",
            ])
            .arg("--cert-dir")
            .arg(lab.path("certs"))
            .arg("--log")
            .arg(&log)
            .args(["--for", "1500ms"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .wait(Duration::from_secs(30));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?} in\n{text}")))
        .collect();
    assert!(
        values.iter().any(|v| v["type"] == "log"
            && v["level"] == "info"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("listening on wds0"))),
        "{text}"
    );
    let summary = values.last().expect("a summary line");
    assert_eq!(summary["type"], "summary", "{text}");
    assert_eq!(summary["received"], 0, "{text}");
    assert!(summary["counters"].is_object(), "{text}");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text.contains("Info: counter summary: received 0"),
        "{log_text}"
    );
    // A bare number is refused: durations take a unit.
    let bare = std::process::Command::new(NULAB)
        .args(["server", "--interface", "lo", "--for", "90"])
        .output()
        .expect("runs");
    assert_eq!(bare.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bare.stderr).contains("90s"));
}
