//! Parity between the simulator and the real kernel (`nulab scenario run --backend parity`,
//! crate `kernel-lab`): the catalogue scenarios below run in both, and the protector that
//! unlocks each client, the failure reasons, the WDS counters and the times (within
//! `kernel_lab::parity::TOLERANCE`) must match. Needs root, tcpdump, dnsmasq, kea-dhcp4 (one
//! case runs ISC Kea as the DHCP server), nft and, with the
//! `real-tpm` feature (two cases boot on swtpm), swtpm (skipped
//! locally without them, failed under CI=true) and `nulab-dhcp-server` built beside `nulab`
//! (`cargo test --workspace` builds it). The cases run in three `nulab` processes at once, each
//! scenario in namespaces named by its own run id, so CI pays about a third of the time.

// Test code may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The cases kept at parity (`crates/kernel-lab/parity-cases.txt`, which `cargo xtask scenario
/// parity` reads too): catalogue names, and files from the workspace root made absolute; the
/// swtpm cases only with the `real-tpm` feature.
fn cases() -> Vec<String> {
    include_str!("../../kernel-lab/parity-cases.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| match line.strip_prefix("real-tpm:") {
            Some(case) => cfg!(feature = "real-tpm").then_some(case.trim()),
            None => Some(line),
        })
        .map(|case| match case.contains('/') {
            true => testkit::workspace_root().join(case).display().to_string(),
            false => case.to_owned(),
        })
        .collect()
}

const PROCESSES: usize = 3;

#[test]
fn catalogue_scenarios_match_between_the_simulator_and_the_real_kernel() {
    if !testkit::require_root() {
        return;
    }
    for tool in ["tcpdump", "dnsmasq", "kea-dhcp4", "nft", "ip"] {
        if !testkit::require_tool(tool) {
            return;
        }
    }
    if cfg!(feature = "real-tpm") && !testkit::require_tool("swtpm") {
        return;
    }
    let nulab = PathBuf::from(env!("CARGO_BIN_EXE_nulab"));
    let dhcp_server = nulab.with_file_name("nulab-dhcp-server");
    if !dhcp_server.is_file() {
        assert!(
            !testkit::in_ci(),
            "{} is missing: build realnet's binaries (cargo build -p realnet --bins)",
            dhcp_server.display()
        );
        eprintln!("skipping: {} is not built", dhcp_server.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|part| {
            let cases: Vec<String> = cases().into_iter().skip(part).step_by(PROCESSES).collect();
            let child = Command::new(&nulab)
                .args(["scenario", "run"])
                .args(&cases)
                .args(["--backend", "parity", "--json", "--out"])
                .arg(dir.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (cases, child)
        })
        .collect();
    let mut compared = Vec::new();
    for (cases, child) in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let summary: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|err| panic!("{cases:?}: {err}: {stdout}\n{stderr}"));
        for scenario in summary["scenarios"].as_array().unwrap() {
            assert_eq!(
                scenario["status"], "compared",
                "{scenario}: could not run on the real kernel: {stderr}"
            );
        }
        let differing: Vec<&serde_json::Value> = summary["parity"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|row| row["matches"] != true)
            .collect();
        assert!(differing.is_empty(), "parity differs: {differing:#?}");
        assert!(out.status.success(), "{cases:?}: {stderr}");
        compared.extend(
            summary["parity"]
                .as_array()
                .unwrap()
                .iter()
                .map(|row| row["scenario"].as_str().unwrap().to_owned()),
        );
    }
    for case in cases() {
        let name = std::path::Path::new(&case)
            .file_stem()
            .and_then(|n| n.to_str())
            .unwrap();
        assert!(
            compared.iter().any(|c| c == name),
            "{case} was not compared"
        );
    }
}

/// The namespaces whose names start with `prefix`.
fn namespaces(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// PIDs of processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(name);
        }
    }
    found
}

#[test]
fn ctrl_c_mid_run_leaves_no_namespace_and_no_process() {
    if !testkit::require_root() {
        return;
    }
    for tool in ["tcpdump", "nft", "ip"] {
        if !testkit::require_tool(tool) {
            return;
        }
    }
    let nulab = PathBuf::from(env!("CARGO_BIN_EXE_nulab"));
    if !nulab.with_file_name("nulab-dhcp-server").is_file() {
        assert!(!testkit::in_ci(), "nulab-dhcp-server is not built");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.log");
    // The PIN fallback takes 9 s: the run is surely in the middle when interrupted.
    let mut run = testkit::netns::Running::spawn(
        Command::new(&nulab)
            .args([
                "scenario",
                "run",
                "loss-too-high-fallback",
                "--backend",
                "netns",
                "--out",
            ])
            .arg(dir.path())
            .stdout(std::fs::File::create(&log).unwrap()),
    );
    assert!(
        testkit::netns::wait_for_file(&log, "boot: the clients power on", Duration::from_secs(30)),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let id = text
        .split("run id ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .to_owned();
    let prefix = format!("nl{id}-");
    assert!(
        !namespaces(&prefix).is_empty(),
        "the run made its namespaces"
    );
    let out_dir = dir.path().display().to_string();
    assert!(
        processes_mentioning(&out_dir).len() > 1,
        "the run started its processes"
    );
    run.signal("INT");
    let status = run.wait(Duration::from_secs(30)).status;
    assert!(!status.success(), "an interrupted run fails");
    assert_eq!(namespaces(&prefix), Vec::<String>::new());
    assert_eq!(processes_mentioning(&out_dir), Vec::<String>::new());
}
