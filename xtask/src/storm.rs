//! The boot-storm benchmark (issue 6's target): 10,000 clients in 100 branch subnets reboot at
//! once and unlock over the network through relays, in the deterministic simulator, measured
//! against the time `openssl speed rsa2048` needs for 10,000 private-key operations on the same
//! machine in the same run. Target: at most twice OpenSSL's time, peak memory under 256 MiB.
//!
//! The WDS server of the storm models its processor (8 cores, 1 ms per RSA-2048 decryption), so
//! the requests queue as they would on a real server while the decryptions themselves run on a
//! thread per core of this machine.
//!
//! The storm runs as a separate `nulab scenario run` process (release build) so its peak
//! resident set (VmHWM from /proc, sampled until it exits) is the storm's alone.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const CLIENTS_PER_BRANCH: usize = 100;
const BRANCHES: usize = 100;
const CLIENTS: usize = CLIENTS_PER_BRANCH * BRANCHES;
const MAX_RATIO: f64 = 2.0;
const MAX_PEAK_MIB: f64 = 256.0;

/// Runs the storm and appends its section to BENCHMARKS.md.
pub fn run(root: &Path) -> Result<()> {
    let dir = crate::bench::target_dir().join("storm");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("boot-storm-10k.toml");
    std::fs::write(&file, scenario_text())
        .with_context(|| format!("writing {}", file.display()))?;
    crate::cargo(&["build", "--quiet", "--release", "--package", "nulab"])?;
    let nulab = crate::bench::target_dir().join("release/nulab");

    let openssl_per_second = crate::bench::openssl_rsa2048_sign_per_second(10)?;
    let openssl_time = Duration::from_secs_f64(CLIENTS as f64 / openssl_per_second);

    let started = Instant::now();
    let mut child = Command::new(&nulab)
        .args(["scenario", "run", "--quiet", "--out"])
        .arg(dir.join("out"))
        .arg(&file)
        .spawn()
        .with_context(|| format!("starting {}", nulab.display()))?;
    let status_path = PathBuf::from(format!("/proc/{}/status", child.id()));
    let mut peak_kib = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            peak_kib = peak_kib.max(vm_hwm_kib(&text));
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let storm_time = started.elapsed();
    if !status.success() {
        bail!(
            "the boot storm scenario failed ({status}): see {}",
            dir.display()
        );
    }
    let ratio = storm_time.as_secs_f64() / openssl_time.as_secs_f64();
    let peak_mib = peak_kib as f64 / 1024.0;
    let mut section = String::new();
    let _ = write!(
        section,
        "\n## Boot storm: {CLIENTS} clients (`cargo xtask bench`)\n\n\
         {CLIENTS} clients in {BRANCHES} branch subnets reboot at the same instant and unlock \
         over the network through DHCP relays (DORA, then the Network Unlock exchange; one \
         RSA-2048 decryption per client on the provider), in the deterministic simulator, as \
         one `nulab scenario run` process (release build). The WDS server is modelled with 8 \
         cores at 1 ms per private-key operation; the real decryptions run on one thread per \
         core of this machine while the simulator goes on, and every segment's capture is \
         streamed to disk as it happens.\n\n\
         | measure | value | target |\n|---|---|---|\n\
         | storm, wall time (world build + run + outputs) | {:.2} s | |\n\
         | `openssl speed rsa2048`: time for {CLIENTS} private-key operations | {:.2} s ({openssl_per_second:.0}/s) | |\n\
         | ratio | {ratio:.2}× | ≤ {MAX_RATIO}× |\n\
         | peak resident memory (VmHWM) | {peak_mib:.0} MiB | < {MAX_PEAK_MIB} MiB |\n",
        storm_time.as_secs_f64(),
        openssl_time.as_secs_f64(),
    );
    print!("{section}");
    crate::bench::write_section(root, &section)?;
    if ratio > MAX_RATIO {
        bail!("the boot storm took {ratio:.2}× OpenSSL's time, above {MAX_RATIO}×");
    }
    if peak_mib >= MAX_PEAK_MIB {
        bail!("the boot storm peaked at {peak_mib:.0} MiB, above {MAX_PEAK_MIB} MiB");
    }
    Ok(())
}

fn vm_hwm_kib(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The storm as a scenario file: a data centre with the DHCP and WDS servers, a core router
/// relaying from every branch.
fn scenario_text() -> String {
    let mut s = String::from(
        "title = \"Boot storm: 10,000 clients reboot at once\"\ntranscript = \"summary\"\n\
         duration = \"60s\"\n\n[[certificate]]\nname = \"nu\"\nseed = 1\n\n\
         [[segment]]\nname = \"corp\"\nsubnet = \"10.0.4.0/24\"\n",
    );
    for b in 0..BRANCHES {
        let _ = write!(
            s,
            "\n[[segment]]\nname = \"branch{b}\"\nsubnet = \"10.{}.{}.0/24\"\n",
            1 + b / 250,
            b % 250
        );
    }
    s.push_str(
        "\n[[router]]\nname = \"core\"\n[[router.interface]]\nsegment = \"corp\"\naddress = \"10.0.4.1/24\"\n",
    );
    for b in 0..BRANCHES {
        let _ = write!(
            s,
            "[[router.interface]]\nsegment = \"branch{b}\"\naddress = \"10.{}.{}.1/24\"\n\
             relay_to = [\"10.0.4.2\", \"10.0.4.10\"]\n",
            1 + b / 250,
            b % 250
        );
    }
    s.push_str(
        "\n[[dhcp_server]]\nname = \"dhcp\"\nsegment = \"corp\"\naddress = \"10.0.4.2/24\"\n\n\
         [[wds]]\nname = \"wds\"\nsegment = \"corp\"\naddress = \"10.0.4.10/24\"\n\
         cores = 8\ndecrypt_time = \"1ms\"\n",
    );
    for b in 0..BRANCHES {
        let _ = write!(
            s,
            "\n[[client]]\nname = \"branch{b}\"\ncount = {CLIENTS_PER_BRANCH}\n\
             protectors = [\"tpm-and-pin\"]\n[[client.adapter]]\nsegment = \"branch{b}\"\n\n\
             [[expect]]\nclient = \"branch{b}\"\nunlocked_by = \"network-unlock\"\n"
        );
    }
    let _ = write!(
        s,
        "\n[[expect_server]]\nwds = \"wds\"\ncounters = {{ replied = {CLIENTS} }}\n"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_in_kib() {
        assert_eq!(vm_hwm_kib("Name: x\nVmHWM:\t  123456 kB\n"), 123_456);
        assert_eq!(vm_hwm_kib("Name: x\n"), 0);
    }

    #[test]
    fn the_storm_names_every_branch() {
        let text = scenario_text();
        assert_eq!(text.matches("[[client]]").count(), BRANCHES);
        assert!(text.contains(&format!("replied = {CLIENTS}")));
    }
}
