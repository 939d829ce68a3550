//! `cargo xtask bench`: the benchmarks whose targets are ratios to OpenSSL, measured side by
//! side in one run on the same machine, and written to BENCHMARKS.md.
//!
//! Today: the unlock provider's per-request path (decode, RSA-2048 decrypt, seal, encode) on one
//! core against `openssl speed rsa2048` private-key operations (signatures: the same RSA
//! private-key exponentiation a decryption does). Target: at least 90% of OpenSSL's rate. The
//! two are measured in alternating short rounds and the best round of each is compared.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The target ratio of the per-request path to OpenSSL's RSA-2048 private-key operations.
const TARGET_RATIO: f64 = 0.90;

/// Interleaved rounds of each side: the machine may be busy (builds, other jobs), and the best
/// of several short runs measured alternately is what each side can do when it has a core.
const ROUNDS: u32 = 5;

pub fn run(args: &[String]) -> Result<()> {
    let seconds = match args {
        [flag, value] if flag == "--seconds" => {
            value.parse().context("--seconds takes a number")?
        }
        [] => 2u32,
        _ => bail!(
            "usage: cargo xtask bench [--seconds N]   (N: seconds per round, {ROUNDS} rounds)"
        ),
    };
    crate::cargo(&[
        "build",
        "--release",
        "--package",
        "nkpu",
        "--example",
        "server_rate",
    ])?;
    let rate_binary = target_dir().join("release/examples/server_rate");
    let mut ours_runs = Vec::new();
    let mut openssl_runs = Vec::new();
    for round in 1..=ROUNDS {
        eprintln!("round {round}/{ROUNDS}");
        openssl_runs.push(openssl_rsa2048_sign_per_second(seconds)?);
        ours_runs.push(server_rate(&rate_binary, seconds)?);
    }
    let best = |runs: &[f64]| runs.iter().copied().fold(0.0, f64::max);
    let (ours, openssl) = (best(&ours_runs), best(&openssl_runs));
    let ratio = ours / openssl;
    let verdict = if ratio >= TARGET_RATIO {
        "meets"
    } else {
        "MISSES"
    };
    let list = |runs: &[f64]| {
        runs.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let cpu = cpu_model();
    let report = format!(
        "# Benchmarks\n\n\
         Written by `cargo xtask bench`: {ROUNDS} rounds of {seconds} s, each side measured in turn \
         in the same run on the same machine; the best round of each is compared, so that load \
         from other jobs does not favour either side.\n\n\
         Machine: {cpu}, {cores} cores.\n\n\
         ## Unlock provider, per request, one core\n\n\
         | what | best per second | rounds |\n| --- | ---: | --- |\n\
         | nulab: decode request, RSA-2048 decrypt (aws-lc-rs), seal reply, encode (`nkpu` example `server_rate`), per second of CPU time | {ours:.0} | {ours_list} |\n\
         | `openssl speed -seconds {seconds} rsa2048`, private-key operations (sign/s, per second of CPU time) | {openssl:.0} | {openssl_list} |\n\
         | ratio | {pct:.1}% | |\n\n\
         Target: at least {target:.0}% of OpenSSL's rate on one core; this run **{verdict}** it.\n\n\
         The per-step costs (decode, RSA, seal, encode, open) are in `cargo bench -p nkpu --bench server_path`.\n",
        cores = std::thread::available_parallelism().map_or(1, usize::from),
        ours_list = list(&ours_runs),
        openssl_list = list(&openssl_runs),
        pct = ratio * 100.0,
        target = TARGET_RATIO * 100.0,
    );
    let path = workspace_root().join("BENCHMARKS.md");
    std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    print!("{report}");
    if ratio < TARGET_RATIO {
        bail!(
            "the per-request path runs at {:.1}% of OpenSSL's rate, below the {:.0}% target",
            ratio * 100.0,
            TARGET_RATIO * 100.0
        );
    }
    Ok(())
}

fn server_rate(binary: &std::path::Path, seconds: u32) -> Result<f64> {
    let out = Command::new(binary)
        .arg(seconds.to_string())
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("server_rate prints one number")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

pub(crate) fn openssl_rsa2048_sign_per_second(seconds: u32) -> Result<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", &seconds.to_string(), "rsa2048"])
        .output()
        .context("running `openssl speed` (install openssl)")?;
    if !out.status.success() {
        bail!(
            "`openssl speed rsa2048` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_openssl_speed(&String::from_utf8_lossy(&out.stdout))
}

/// sign/s from `openssl speed rsa2048` output.
fn parse_openssl_speed(text: &str) -> Result<f64> {
    // "rsa 2048 bits 0.000919s 0.000027s   1088.3  37545.7": sign/s is the third number.
    let line = text
        .lines()
        .find(|l| l.starts_with("rsa 2048 bits") || l.starts_with("rsa  2048 bits"))
        .context("no `rsa 2048 bits` line in `openssl speed` output")?;
    let numbers: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches('s').parse().ok())
        .collect();
    // [2048, sign time, verify time, sign/s, verify/s]
    numbers
        .get(3)
        .copied()
        .context("cannot read sign/s from `openssl speed` output")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_openssl_speed_output() {
        let text = "                  sign    verify    sign/s verify/s\nrsa 2048 bits 0.000919s 0.000027s   1088.3  37545.7\n";
        assert_eq!(parse_openssl_speed(text).unwrap(), 1088.3);
        assert!(parse_openssl_speed("nothing here").is_err());
    }
}
