//! `nulab scenario` end to end through the binary, as a user and a CI system drive it: the
//! catalogue inside the binary runs from any folder, names it does not hold are refused with
//! the list of those it does, broken and expectation-less files are refused with their line,
//! four shards of the catalogue merged equal one full run, the JUnit report validates against
//! the schema in `fixtures/junit/`, `--json` gives one object (errors too), and a sweep reports
//! its pass rate and the command that replays a failing seed.

// Test code may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

fn nulab_in(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nulab"));
    command.current_dir(dir);
    command
}

fn nulab() -> Command {
    nulab_in(&testkit::workspace_root())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_of(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("{err}: {}", text(&output.stdout)))
}

/// A copy of the happy path whose expectation cannot hold (it unlocks by the network, not the
/// PIN).
fn failing_scenario(dir: &Path) -> std::path::PathBuf {
    let happy =
        std::fs::read_to_string(testkit::workspace_root().join("scenarios/happy-path-ipv4.toml"))
            .unwrap();
    let failing = happy.replace(
        "unlocked_by = \"network-unlock\"",
        "unlocked_by = \"tpm-and-pin\"",
    );
    assert_ne!(happy, failing, "the happy path expects a network unlock");
    let file = dir.join("always-fails.toml");
    std::fs::write(&file, failing).unwrap();
    file
}

#[test]
fn run_writes_every_output_and_passes() {
    let out = tempfile::tempdir().unwrap();
    let output = nulab()
        .args(["scenario", "run", "scenarios/happy-path-ipv4.toml", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("[phase 8]"), "{stdout}");
    assert!(stdout.contains("happy-path-ipv4: PASSED"), "{stdout}");
    let dir = out.path().join("happy-path-ipv4");
    for file in [
        "transcript.txt",
        "result.json",
        "sequence.mmd",
        "report.html",
        "corp.pcap",
        "wds-wds.log",
        "bitlocker-pc1.log",
    ] {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        assert!(!bytes.is_empty(), "{file} is empty");
    }
    // The capture was written in place as the run went, and renamed to its output's name.
    let pcap = std::fs::read(dir.join("corp.pcap")).unwrap();
    assert_eq!(
        pcap[..4],
        [0xa1, 0xb2, 0x3c, 0x4d],
        "big-endian, nanoseconds"
    );
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".partial")), "{names:?}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("result.json")).unwrap()).unwrap();
    assert_eq!(json["passed"], true);
    assert_eq!(json["clients"][0]["unlocked_by"], "network-unlock");
    let golden =
        std::fs::read_to_string(testkit::workspace_root().join("scenarios/happy-path-ipv4.golden"))
            .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("transcript.txt")).unwrap(),
        golden
    );
}

#[test]
fn the_catalogue_runs_by_name_from_any_folder() {
    let elsewhere = tempfile::tempdir().unwrap();
    let output = nulab_in(elsewhere.path())
        .args(["scenario", "run", "happy-path-ipv4", "--quiet"])
        .output()
        .unwrap();
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(stdout.contains("happy-path-ipv4: PASSED"), "{stdout}");
    assert!(
        !stdout.contains("[phase 8]"),
        "--quiet prints no transcript: {stdout}"
    );
    assert!(
        elsewhere
            .path()
            .join("nulab-out/happy-path-ipv4/transcript.txt")
            .is_file()
    );
    // A catalogue scenario whose policy is a file of its own reads it from inside the binary.
    let output = nulab_in(elsewhere.path())
        .args(["scenario", "run", "subnet-policy-from-file", "--quiet"])
        .output()
        .unwrap();
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(
        stdout.contains("subnet-policy-from-file: PASSED"),
        "{stdout}"
    );
    let listed = nulab_in(elsewhere.path())
        .args(["scenario", "list"])
        .output()
        .unwrap();
    let listing = text(&listed.stdout);
    assert!(listed.status.success(), "{listing}");
    assert!(listing.lines().count() >= 30, "{listing}");
    assert!(listing.contains("relay-forwards-to-dhcp-only"), "{listing}");
}

#[test]
fn an_unknown_name_is_refused_with_the_names_that_exist() {
    let output = nulab()
        .args(["scenario", "run", "happy-path-ipv5"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("happy-path-ipv5"), "{stderr}");
    assert!(
        stderr.contains("happy-path-ipv4, happy-path-ipv6"),
        "{stderr}"
    );
    // One scenario named twice would write one folder twice.
    let output = nulab()
        .args([
            "scenario",
            "run",
            "happy-path-ipv4",
            "scenarios/happy-path-ipv4.toml",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("two scenarios are called \"happy-path-ipv4\""),
        "{}",
        text(&output.stderr)
    );
    // With --json the error is one JSON object on standard output.
    let output = nulab()
        .args(["scenario", "run", "happy-path-ipv5", "--json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let json = json_of(&output);
    assert_eq!(json["exit_code"], 2);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("wrong-pin-then-right"),
        "{json}"
    );
}

#[test]
fn a_broken_file_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(
        &file,
        "title = \"x\"\n\n[[segment]]\nname = \"corp\"\nsubnett = \"10.0.0.0/24\"\n",
    )
    .unwrap();
    let output = nulab()
        .args(["scenario", "run"])
        .arg(&file)
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("broken.toml:5:"), "{stderr}");
    assert!(stderr.contains("subnett"), "{stderr}");
}

#[test]
fn a_scenario_without_expectations_and_an_empty_folder_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let output = nulab()
        .args(["scenario", "run"])
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("an empty suite would pass"),
        "{}",
        text(&output.stderr)
    );
    let file = dir.path().join("nothing.toml");
    std::fs::write(
        &file,
        "title = \"x\"\n[[segment]]\nname = \"corp\"\nsubnet = \"10.0.0.0/24\"\n",
    )
    .unwrap();
    let output = nulab()
        .args(["scenario", "run"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("nothing.toml:1:1:"), "{stderr}");
    assert!(stderr.contains("expect_nothing = true"), "{stderr}");
}

/// name → (status, seed, unmet) of a `--json` run summary.
fn outcomes(summary: &serde_json::Value) -> BTreeMap<String, (String, u64, String)> {
    summary["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                (
                    s["status"].as_str().unwrap().to_string(),
                    s["seed"].as_u64().unwrap(),
                    s["unmet"].to_string(),
                ),
            )
        })
        .collect()
}

#[test]
fn four_shards_of_the_catalogue_merged_equal_one_full_run() {
    let out = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let output = nulab()
            .args(["scenario", "run", "--json", "--jobs", "2", "--out"])
            .arg(out.path())
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        // Off a terminal there is no progress, and with --json nothing but the object.
        assert!(output.stderr.is_empty(), "{}", text(&output.stderr));
        json_of(&output)
    };
    let full = run(&[]);
    let all = outcomes(&full);
    assert!(all.len() >= 30, "{full}");
    assert_eq!(full["total"], all.len());
    let mut merged = BTreeMap::new();
    for k in 1..=4 {
        let shard = run(&["--shard", &format!("{k}/4")]);
        assert_eq!(shard["shard"], format!("{k}/4"));
        for (name, outcome) in outcomes(&shard) {
            assert!(
                merged.insert(name.clone(), outcome).is_none(),
                "{name} ran in two shards"
            );
        }
    }
    assert_eq!(merged, all);
    let first = &full["scenarios"][0];
    assert!(first["duration_ms"].is_u64(), "{first}");
    assert!(
        first["output"]
            .as_str()
            .unwrap()
            .ends_with("boot-storm-after-patch-reboot"),
        "{first}"
    );
}

#[test]
fn the_junit_report_validates_and_carries_the_failure() {
    if !testkit::require_tool("xmllint") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let failing = failing_scenario(dir.path());
    let junit = dir.path().join("reports/junit.xml");
    let output = nulab()
        .args(["scenario", "run", "--quiet", "happy-path-ipv4"])
        .arg(&failing)
        .arg("--out")
        .arg(dir.path().join("out"))
        .arg("--junit")
        .arg(&junit)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stdout));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains(&format!(
            "replay with: nulab scenario run {} --seed 1",
            failing.display()
        )),
        "{stdout}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("<testcase name=\"happy-path-ipv4\""), "{xml}");
    assert!(xml.contains("<testcase name=\"always-fails\""), "{xml}");
    assert!(
        xml.contains(
            "<failure message=\"pc1 is unlocked by TPM And PIN (got: pc1: unlocked by Network"
        ),
        "{xml}"
    );
    assert!(xml.contains("output folder: "), "{xml}");
    let schema = testkit::workspace_root().join("fixtures/junit/junit.xsd");
    let check = Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(&schema)
        .arg(&junit)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        text(&check.stdout),
        text(&check.stderr)
    );
    // The schema is not a formality: a report without its testcases' names fails it.
    let broken = dir.path().join("broken.xml");
    std::fs::write(&broken, xml.replace("testcase name=", "testcase nom=")).unwrap();
    let check = Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(&schema)
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!check.status.success());
}

#[test]
fn a_failing_sweep_prints_the_replay_command_and_keep_going_reports_the_rate() {
    let dir = tempfile::tempdir().unwrap();
    let failing = failing_scenario(dir.path());
    let output = nulab()
        .args(["scenario", "sweep", "--seeds", "5..8", "--jobs", "1"])
        .arg(&failing)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("always-fails: seed 5 FAILS"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "replay with: nulab scenario run {} --seed 5",
            failing.display()
        )),
        "{stdout}"
    );
    let output = nulab()
        .args([
            "scenario",
            "sweep",
            "--seeds",
            "1..5",
            "--keep-going",
            "--json",
            "happy-path-ipv4",
        ])
        .arg(&failing)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let json = json_of(&output);
    assert_eq!(json["complete"], true);
    let happy = &json["scenarios"][0];
    assert_eq!(
        (happy["runs"].as_u64(), happy["passed"].as_u64()),
        (Some(4), Some(4))
    );
    let interval = happy["pass_rate_95"].as_array().unwrap();
    assert!(interval[0].as_f64().unwrap() > 0.45 && interval[1].as_f64().unwrap() > 0.99);
    let times = &happy["unlock_times"][0];
    assert_eq!(times[0], "network-unlock", "{happy}");
    assert_eq!(times[1]["count"], 4, "{happy}");
    let failed = &json["scenarios"][1];
    assert_eq!(failed["passed"], 0);
    let seeds: Vec<u64> = failed["failing_seeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["seed"].as_u64().unwrap())
        .collect();
    assert_eq!(seeds, [1, 2, 3, 4]);
    assert_eq!(
        failed["failing_seeds"][0]["replay"],
        format!("nulab scenario run {} --seed 1", failing.display())
    );
}

#[test]
fn bless_writes_every_text_output_as_a_golden() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("happy-path-ipv4.toml");
    std::fs::copy(
        testkit::workspace_root().join("scenarios/happy-path-ipv4.toml"),
        &file,
    )
    .unwrap();
    let bless = || {
        let output = nulab()
            .args(["scenario", "bless", "--json"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stdout));
        json_of(&output)
    };
    let first = bless();
    let written: Vec<(String, bool)> = first["goldens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["golden"].as_str().unwrap().to_string(),
                g["changed"].as_bool().unwrap(),
            )
        })
        .collect();
    for name in [
        "happy-path-ipv4.golden",
        "result.json",
        "sequence.mmd",
        "wds-wds.log",
        "bitlocker-pc1.log",
    ] {
        assert!(
            written
                .iter()
                .any(|(path, changed)| path.ends_with(name) && *changed),
            "{name}: {written:?}"
        );
    }
    assert!(
        written.iter().all(|(path, _)| !path.ends_with(".pcap")),
        "{written:?}"
    );
    // The transcript golden is the catalogue's own, and the outputs sit beside it.
    for golden in [
        "happy-path-ipv4.golden",
        "happy-path-ipv4.outputs/result.json",
    ] {
        assert!(
            std::fs::read_to_string(dir.path().join(golden)).unwrap()
                == std::fs::read_to_string(
                    testkit::workspace_root().join("scenarios").join(golden)
                )
                .unwrap(),
            "{golden} differs from the catalogue's"
        );
    }
    let again = bless();
    assert!(
        again["goldens"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["changed"] == false),
        "{again}"
    );
}

#[test]
fn sweep_shards_split_the_seeds_between_them() {
    let sweep = |shard: &str| {
        let output = nulab()
            .args([
                "scenario",
                "sweep",
                "happy-path-ipv4",
                "--seeds",
                "1..13",
                "--keep-going",
                "--json",
                "--shard",
                shard,
            ])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
        let json = json_of(&output);
        assert_eq!(json["shard"], shard);
        json["scenarios"][0]["runs"].as_u64().unwrap_or(0)
    };
    let (a, b) = (sweep("1/2"), sweep("2/2"));
    assert_eq!(a + b, 12);
    assert!(a > 0 && b > 0, "{a} + {b}");
}

#[test]
fn a_scenario_that_cannot_run_is_an_error_in_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let happy =
        std::fs::read_to_string(testkit::workspace_root().join("scenarios/happy-path-ipv4.toml"))
            .unwrap();
    // A policy file that is not there: the file reads, the world cannot be built.
    let broken = happy.replacen(
        "[[wds]]\n",
        "[[wds]]\npolicy_file = \"no-such-policy.ini\"\n",
        1,
    );
    assert_ne!(happy, broken);
    let file = dir.path().join("missing-policy.toml");
    std::fs::write(&file, broken).unwrap();
    let output = nulab()
        .args(["scenario", "run", "--json", "happy-path-ipv4"])
        .arg(&file)
        .arg("--out")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let json = json_of(&output);
    assert_eq!(
        (json["total"].as_u64(), json["errors"].as_u64()),
        (Some(2), Some(1))
    );
    let failed = &json["scenarios"][1];
    assert_eq!(failed["status"], "error", "{json}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("no-such-policy.ini"),
        "{json}"
    );
    assert_eq!(json["scenarios"][0]["status"], "passed", "{json}");
}

#[test]
fn a_bad_fault_is_refused_at_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let happy =
        std::fs::read_to_string(testkit::workspace_root().join("scenarios/happy-path-ipv4.toml"))
            .unwrap();
    let file = dir.path().join("bad-fault.toml");
    let lines = happy.lines().count();
    std::fs::write(
        &file,
        format!("{happy}\n[[fault]]\nsender = \"wds\"\nlatency = \"2500ms\"\ncorrupt = \"5%\"\n"),
    )
    .unwrap();
    let output = nulab()
        .args(["scenario", "run"])
        .arg(&file)
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    // Checked when the world is built, like every reference: the run's ERROR line says where.
    let said = text(&output.stdout) + &text(&output.stderr);
    // The second effect's key, on the fault's fourth line.
    let at = format!("bad-fault.toml:{}:11: ", lines + 5);
    assert!(said.contains(&at), "{at} in {said}");
    assert!(said.contains("give `corrupt` its own [[fault]]"), "{said}");
}

#[test]
fn curve_writes_its_three_files_and_prints_the_points() {
    let dir = tempfile::tempdir().unwrap();
    let output = nulab()
        .args([
            "scenario",
            "curve",
            "reliability-under-loss",
            "--vary",
            "loss=0..60:3",
            "--seeds",
            "6",
            "--jobs",
            "2",
            "--json",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let json = json_of(&output);
    let points = json["curve"]["points"].as_array().unwrap();
    assert_eq!(points.len(), 3);
    assert_eq!(points[0]["x"], 0.0);
    assert_eq!(
        points[0]["success_rate"], 1.0,
        "no loss, every boot unlocks"
    );
    assert_eq!(points[0]["boots"], 6);
    assert!(points[2]["analytic"].as_f64().unwrap() < 0.1, "{json}");
    for name in ["curve.csv", "curve.json", "curve.svg", "curve.png"] {
        let bytes = std::fs::read(dir.path().join(name)).unwrap();
        assert!(bytes.len() > 100, "{name}");
    }
    let png = std::fs::read(dir.path().join("curve.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    // The same command twice gives the same CSV (the seeds are the scenario's and the next).
    let again = tempfile::tempdir().unwrap();
    let output = nulab()
        .args([
            "scenario",
            "curve",
            "reliability-under-loss",
            "--vary",
            "loss=0..60:3",
            "--seeds",
            "6",
            "--out",
        ])
        .arg(again.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(text(&output.stdout).contains("reliability-under-loss over loss=0..60:3"));
    assert_eq!(
        std::fs::read(dir.path().join("curve.csv")).unwrap(),
        std::fs::read(again.path().join("curve.csv")).unwrap()
    );
}

#[test]
fn curve_refuses_a_bad_grid_and_a_parameter_the_scenario_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let output = nulab()
        .args([
            "scenario",
            "curve",
            "happy-path-ipv4",
            "--vary",
            "speed=1..2:2",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("unknown parameter"),
        "{}",
        text(&output.stderr)
    );
    let output = nulab()
        .args([
            "scenario",
            "curve",
            "happy-path-ipv4",
            "--vary",
            "loss=0..50:2",
            "--json",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let json = json_of(&output);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("no [[fault]] with `loss`"),
        "{json}"
    );
}

/// Runs `nulab ARGS` with standard error on a pseudo-terminal (util-linux `script`) and
/// standard output into a file: what the terminal showed, and what went to standard output.
fn on_a_terminal(dir: &Path, args: &str) -> (String, String) {
    let stdout = dir.join("stdout.txt");
    let command = format!(
        "{} {args} > {}",
        env!("CARGO_BIN_EXE_nulab"),
        stdout.display()
    );
    let output = Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .current_dir(dir)
        .output()
        .unwrap();
    (
        text(&output.stdout),
        std::fs::read_to_string(&stdout).unwrap(),
    )
}

#[test]
fn a_long_run_shows_progress_on_a_terminal_and_never_on_stdout() {
    if !testkit::require_tool("script") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The 1,000-client storm takes longer than the 2 s after which the bar appears.
    let long = "scenario run boot-storm-after-patch-reboot --jobs 1 --out runs";
    let (terminal, stdout) = on_a_terminal(dir.path(), long);
    assert!(
        terminal.contains("1/1 scenarios") && terminal.contains("ETA"),
        "no progress bar on the terminal: {terminal}"
    );
    assert!(!stdout.contains("ETA"), "the bar reached stdout: {stdout}");
    assert!(stdout.contains("PASSED"), "{stdout}");

    let (terminal, _) = on_a_terminal(dir.path(), &format!("{long} --quiet"));
    assert!(
        !terminal.contains("ETA"),
        "--quiet still drew a bar: {terminal}"
    );
}
