//! `cargo xtask docker-lab`: the docker lab end to end (`docker/ci.sh`): a debootstrapped base
//! image (no registry in CI), dockerd, the lab generated from `docker/lab.toml` by `nulab lab
//! compose`, built and brought up under a run id of its own; each client's outcome and its
//! escrow to the lab's recovery service are checked from their logs, then everything the run
//! made is torn down, whichever way it ends. Part of `cargo xtask test` unless
//! `NULAB_DOCKER_LAB=0`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

pub fn run(root: &Path) -> Result<()> {
    let script = root.join("docker").join("ci.sh");
    eprintln!("$ {}", script.display());
    let status = Command::new("sh")
        .arg(&script)
        .current_dir(root)
        .status()
        .with_context(|| format!("could not start {}", script.display()))?;
    if !status.success() {
        bail!("the docker lab failed ({status})");
    }
    Ok(())
}

/// Whether `cargo xtask test` runs the docker lab (`NULAB_DOCKER_LAB=0` skips it).
pub fn in_test_gate() -> bool {
    std::env::var("NULAB_DOCKER_LAB").map_or(true, |v| v != "0")
}
