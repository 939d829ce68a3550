//! `cargo xtask scenario parity [FILE...]`: scenarios run in the simulator and on the real
//! kernel (`nulab scenario run --backend parity`: namespaces, bridges, real processes; needs
//! root), compared on the protector that unlocks each client, the failure reasons, the server
//! counters and the times within a tolerance, printed as a table; exit non-zero when they
//! differ. With no file, the catalogue scenarios that CI keeps at parity ([`CASES`]). Outputs
//! (both `result.json`s, the real pcaps and logs) land in `target/parity/NAME`. nulab is built
//! with the `real-tpm` feature (libtss2-dev), for the clients whose TPM is swtpm.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The catalogue scenarios kept at parity in CI (`crates/nulab/tests/netns_parity.rs` runs
/// the same list).
pub const CASES: &[&str] = &[
    "happy-path-ipv4",
    "happy-path-ipv6",
    "dhcp-and-wds-across-a-relay",
    "relay-forwards-to-dhcp-only",
    "multi-adapter-both-wired",
    "multi-adapter-first-on-network-without-wds",
    "multi-adapter-first-unplugged",
    "multi-adapter-management-port-first",
    "subnet-listed-allowed",
    "subnet-unlisted-refused",
    "subnet-no-section",
    "subnet-disabled",
    "subnet-corrupted-file",
    "subnet-thumbprint-with-spaces",
    "subnet-ipv6-link-local",
    "wds-service-stopped",
    "loss-recovered-by-retransmission",
    "loss-too-high-fallback",
    // dnsmasq as the DHCP server (`software = "dnsmasq"`), beside the catalogue.
    "crates/kernel-lab/scenarios/happy-path-dnsmasq.toml",
    // The client's TPM is swtpm: nulab is built with the `real-tpm` feature for these.
    "crates/kernel-lab/scenarios/happy-path-swtpm.toml",
    "crates/kernel-lab/scenarios/wds-stopped-swtpm-pin.toml",
];

pub fn run(root: &Path, files: &[String]) -> Result<()> {
    // nulab and nulab-dhcp-server (realnet's), which the real-kernel run starts.
    crate::cargo(&[
        "build",
        "--quiet",
        "--package",
        "nulab",
        "--package",
        "realnet",
        "--bins",
        "--features",
        "nulab/real-tpm",
    ])?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), std::path::PathBuf::from);
    // Private copies: another build in the same target folder must not swap the programs
    // under a run (the real-kernel run starts nulab and nulab-dhcp-server from beside nulab).
    let bin = target.join("parity").join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("cannot create {}", bin.display()))?;
    for name in ["nulab", "nulab-dhcp-server"] {
        let from = target.join("debug").join(name);
        std::fs::copy(&from, bin.join(name))
            .with_context(|| format!("cannot copy {}", from.display()))?;
    }
    let nulab = bin.join("nulab");
    let mut args: Vec<String> = vec!["scenario".into(), "run".into()];
    if files.is_empty() {
        args.extend(CASES.iter().map(|c| (*c).to_owned()));
    } else {
        args.extend(files.iter().cloned());
    }
    args.extend([
        "--backend".into(),
        "parity".into(),
        "--out".into(),
        target.join("parity").display().to_string(),
    ]);
    eprintln!("$ {} {}", nulab.display(), args.join(" "));
    let status = Command::new(&nulab)
        .args(&args)
        .current_dir(root)
        .status()
        .with_context(|| format!("could not start {}", nulab.display()))?;
    if !status.success() {
        bail!("parity: the simulator and the real kernel differ, or a run failed ({status})");
    }
    Ok(())
}
