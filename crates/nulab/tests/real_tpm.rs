//! A volume sealed to a real TPM 2.0 and booted on it: `nulab volume create --tpm TCTI` seals
//! the TPM protectors on swtpm (its PCRs 7 and 11, and the PIN), `nulab client --tpm TCTI`
//! unseals them at boot, and wrong PINs typed at boot count on the TPM's own dictionary-attack
//! counter until it locks out, when even the right PIN is refused and the user is sent to
//! recovery.
//!
//! Each test has a namespace of its own (`testkit::netns::Lan`, `nutpm-<test>-<pid>-*`, removed
//! on drop) holding the client's interface and, on that namespace's loopback, swtpm started
//! with `tpm::swtpm`'s command line, as the real-kernel lab starts a client's TPM. swtpm's
//! state lives in the test's temporary folder and dies with it. Needs the `real-tpm` feature
//! (CI builds with `--all-features`), root and swtpm.
#![cfg(feature = "real-tpm")]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use testkit::netns::{Lan, Running};

const NULAB: &str = env!("CARGO_BIN_EXE_nulab");
const PIN: &str = "271828";

/// A namespace with the client's interface `pc0` and swtpm on its loopback.
///
/// Fields drop in declaration order: swtpm is killed first, then its state folder goes, then
/// the namespace it runs in.
struct TpmLab {
    _swtpm: Running,
    dir: tempfile::TempDir,
    lan: Lan,
}

impl TpmLab {
    fn new(test: &str) -> TpmLab {
        let lan = Lan::new(&format!("nutpm-{test}"), &["pc"]);
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("swtpm");
        std::fs::create_dir_all(&state).expect("swtpm state folder");
        let port = tpm::swtpm::DEFAULT_PORT;
        let swtpm = Running::spawn(
            lan.command("pc", "swtpm")
                .args(tpm::swtpm::socket_args(port, &state))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        assert!(
            lan.wait_for_tcp(
                "pc",
                tpm::swtpm::control_port(port),
                Duration::from_secs(10)
            ),
            "swtpm did not start in {}",
            lan.ns("pc")
        );
        TpmLab {
            _swtpm: swtpm,
            dir,
            lan,
        }
    }

    fn tcti(&self) -> String {
        tpm::swtpm::tcti(tpm::swtpm::DEFAULT_PORT)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `nulab ARGS` inside the namespace: (success, stdout, stderr).
    fn nulab(&self, args: &[&str]) -> (bool, String, String) {
        let out = self
            .lan
            .command("pc", NULAB)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("nulab runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `nulab volume create IMAGE --tpm TCTI EXTRA... --json`, which must succeed.
    fn create(&self, image: &str, extra: &[&str]) -> serde_json::Value {
        let tcti = self.tcti();
        let mut args = vec!["volume", "create", image, "--tpm", &tcti];
        args.extend(extra);
        args.extend(["--size", "65536", "--iterations", "16", "--seed", "9"]);
        args.push("--json");
        let (ok, stdout, stderr) = self.nulab(&args);
        assert!(ok, "volume create failed: {stdout}{stderr}");
        serde_json::from_str(&stdout).expect("volume create --json")
    }

    /// One boot of `image` on the real TPM, `pin` typed at the prompt (if any): its outcome
    /// (the `--outcome-json` object) and what it printed.
    fn boot(&self, image: &str, pin: Option<&str>) -> (serde_json::Value, String) {
        let outcome = self.path("outcome.json");
        let _ = std::fs::remove_file(&outcome);
        let tcti = self.tcti();
        let outcome_arg = outcome.display().to_string();
        let mut args = vec![
            "client",
            "--volume",
            image,
            "--interface",
            "pc0",
            "--tpm",
            &tcti,
            "--limit",
            "30s",
            "--outcome-json",
            &outcome_arg,
        ];
        if let Some(pin) = pin {
            args.extend(["--pin", pin]);
        }
        let (_, stdout, stderr) = self.nulab(&args);
        let text = format!("{stdout}{stderr}");
        let json = std::fs::read_to_string(&outcome)
            .unwrap_or_else(|e| panic!("no outcome written ({e}):\n{text}"));
        (serde_json::from_str(&json).expect("outcome JSON"), text)
    }
}

fn have_everything() -> bool {
    testkit::require_root()
        && ["ip", "swtpm", "bash"]
            .iter()
            .all(|t| testkit::require_tool(t))
}

/// The reasons of an outcome's failures, in order.
fn reasons(outcome: &serde_json::Value) -> Vec<String> {
    outcome["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|f| f["reason"].as_str().expect("reason").to_owned())
        .collect()
}

/// "N tries left before lockout" in a wrong-PIN reason.
fn tries_left(reason: &str) -> Option<u32> {
    let before = reason.split(" tries left").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

fn no_simulated_state(dir: &Path, image: &str) {
    assert!(
        !dir.join(format!("{image}.tpm.json")).exists(),
        "a simulated TPM state was written for a volume sealed on a real TPM"
    );
}

#[test]
fn a_volume_sealed_on_swtpm_unlocks_at_boot_with_its_pin_or_its_tpm() {
    if !have_everything() {
        return;
    }
    let lab = TpmLab::new("unseal");
    let created = lab.create("pin.img", &["--tpm-pin", PIN, "--recovery-password"]);
    assert_eq!(created["tpm"], lab.tcti().as_str(), "{created}");
    assert!(created["tpm_state"].is_null(), "{created}");
    let kinds: Vec<&str> = created["protectors"]
        .as_array()
        .expect("protectors")
        .iter()
        .map(|p| p["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        kinds,
        ["tpm-and-pin", "recovery-password"],
        "one TPM protector: with --tpm-pin it is TPM+PIN"
    );
    no_simulated_state(lab.dir.path(), "pin.img");

    let (outcome, text) = lab.boot("pin.img", Some(PIN));
    assert_eq!(outcome["state"], "unlocked", "{text}");
    assert_eq!(outcome["unlocked_by"], "tpm-and-pin", "{text}");
    assert!(text.contains("the volume label reads NULAB"), "{text}");

    // Nobody at the console: the real TPM does not release a PIN-sealed key without it.
    let (outcome, text) = lab.boot("pin.img", None);
    assert_eq!(outcome["state"], "waiting-for-pin", "{text}");

    // The TPM-only protector on the same TPM unlocks with nobody typing.
    let created = lab.create("tpm.img", &[]);
    assert_eq!(created["protectors"][0]["kind"], "tpm", "{created}");
    let (outcome, text) = lab.boot("tpm.img", None);
    assert_eq!(outcome["unlocked_by"], "tpm", "{text}");

    // The simulated TPM cannot open what the real one sealed.
    let (ok, stdout, stderr) = lab.nulab(&[
        "volume",
        "unlock",
        "pin.img",
        "--with",
        "tpm-and-pin",
        "--pin",
        PIN,
    ]);
    assert!(!ok, "a simulated TPM unsealed a real TPM's blob: {stdout}");
    assert!(stderr.contains("not valid for this TPM"), "{stderr}");
}

#[test]
fn wrong_pins_at_boot_lock_the_real_tpm_out_and_the_right_pin_is_then_refused() {
    if !have_everything() {
        return;
    }
    let lab = TpmLab::new("lockout");
    lab.create("pin.img", &["--tpm-pin", PIN, "--recovery-password"]);

    // Each boot with a wrong PIN is one failure on the TPM's counter: the tries left go down
    // by one each time (swtpm's manufacturer default is a few tries; the test follows it).
    let mut left = None;
    for boot in 1..=40 {
        let (outcome, text) = lab.boot("pin.img", Some("000000"));
        assert_eq!(outcome["state"], "waiting-for-pin", "boot {boot}: {text}");
        let reasons = reasons(&outcome);
        assert_eq!(reasons.len(), 1, "boot {boot}: {text}");
        assert!(reasons[0].contains("wrong PIN"), "boot {boot}: {text}");
        let now = tries_left(&reasons[0])
            .unwrap_or_else(|| panic!("boot {boot}: no count of tries left in {reasons:?}"));
        if let Some(before) = left {
            assert_eq!(
                now + 1,
                before,
                "boot {boot}: every wrong PIN counts: {text}"
            );
        }
        left = Some(now);
        if now == 0 {
            break;
        }
    }
    assert_eq!(left, Some(0), "the TPM never ran out of tries");

    // Locked out: the right PIN is refused too, and BitLocker sends the user to recovery.
    let (outcome, text) = lab.boot("pin.img", Some(PIN));
    assert_eq!(outcome["state"], "waiting-for-recovery-password", "{text}");
    let reasons = reasons(&outcome);
    assert!(
        reasons.iter().any(|r| r.contains("locked out")),
        "{reasons:?}"
    );
    // The same TPM, asked by `volume unlock`, is still locked out.
    let tcti = lab.tcti();
    let (ok, _, stderr) = lab.nulab(&[
        "volume",
        "unlock",
        "pin.img",
        "--with",
        "tpm-and-pin",
        "--pin",
        PIN,
        "--tpm",
        &tcti,
    ]);
    assert!(!ok && stderr.contains("locked out"), "{stderr}");
}

#[test]
fn counts_of_tries_left_are_read_from_the_reason() {
    assert_eq!(
        tries_left("the TPM refused: wrong PIN (TPM_RC_AUTH_FAIL); 2 tries left before lockout"),
        Some(2)
    );
    assert_eq!(tries_left("the TPM is locked out"), None);
}
