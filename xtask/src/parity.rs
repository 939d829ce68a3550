//! `cargo xtask scenario parity [FILE...]`: scenarios run in the simulator and on the real
//! kernel (`nulab scenario run --backend parity`: namespaces, bridges, real processes; needs
//! root), compared on the protector that unlocks each client, the failure reasons, the server
//! counters and the times within a tolerance, printed as a table; exit non-zero when they
//! differ. With no file, the scenarios that CI keeps at parity (`crates/kernel-lab/parity-cases.txt`). Outputs
//! (both `result.json`s, the real pcaps and logs) land in `target/parity/NAME`. nulab is built
//! with the `real-tpm` feature (libtss2-dev), for the clients whose TPM is swtpm.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The cases kept at parity in CI (`crates/kernel-lab/parity-cases.txt`, which
/// `crates/nulab/tests/netns_parity.rs` runs too): catalogue names, and files from the
/// workspace root made absolute. nulab is built with `real-tpm`, so the swtpm cases are in.
fn cases(root: &Path) -> Result<Vec<String>> {
    let list = root.join("crates/kernel-lab/parity-cases.txt");
    let text = std::fs::read_to_string(&list)
        .with_context(|| format!("cannot read {}", list.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.strip_prefix("real-tpm:").unwrap_or(line).trim())
        .map(|case| match case.contains('/') {
            true => root.join(case).display().to_string(),
            false => case.to_owned(),
        })
        .collect())
}

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
        args.extend(cases(root)?);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parity_cases_name_catalogue_scenarios_and_files_that_exist() {
        let root = crate::workspace_root();
        let cases = cases(&root).expect("parity-cases.txt");
        assert!(cases.len() >= 21, "{cases:?}");
        for case in &cases {
            if case.contains('/') {
                assert!(Path::new(case).is_file(), "{case} does not exist");
            } else {
                let file = root.join("scenarios").join(format!("{case}.toml"));
                assert!(file.is_file(), "{case} is not in the catalogue");
            }
        }
        assert!(cases.iter().any(|c| c.ends_with("happy-path-swtpm.toml")));
    }
}
