//! `cargo xtask bench`: the benchmarks whose targets are ratios to OpenSSL, measured side by
//! side in one run on the same machine, and written to BENCHMARKS.md.
//!
//! Today: the unlock provider's per-request path (decode, RSA-2048 decrypt, seal, encode) on one
//! core against `openssl speed rsa2048` private-key operations (signatures: the same RSA
//! private-key exponentiation a decryption does). Target: at least 90% of OpenSSL's rate.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The target ratio of the per-request path to OpenSSL's RSA-2048 private-key operations.
const TARGET_RATIO: f64 = 0.90;

pub fn run(args: &[String]) -> Result<()> {
    let seconds = match args {
        [flag, value] if flag == "--seconds" => {
            value.parse().context("--seconds takes a number")?
        }
        [] => 5u32,
        _ => bail!("usage: cargo xtask bench [--seconds N]"),
    };
    let measurement = seconds.to_string();
    crate::cargo(&[
        "bench",
        "--package",
        "nkpu",
        "--bench",
        "server_path",
        "--",
        "--warm-up-time",
        "2",
        "--measurement-time",
        &measurement,
        "server_path/whole_request",
    ])?;
    let ours = criterion_per_second("server_path/whole_request")?;
    let openssl = openssl_rsa2048_sign_per_second(seconds)?;
    let ratio = ours / openssl;
    let verdict = if ratio >= TARGET_RATIO {
        "meets"
    } else {
        "MISSES"
    };
    let cpu = cpu_model();
    let report = format!(
        "# Benchmarks\n\n\
         Written by `cargo xtask bench`; both numbers come from the same run on the same machine.\n\n\
         Machine: {cpu}, {cores} cores.\n\n\
         ## Unlock provider, per request, one core\n\n\
         | what | per second |\n| --- | ---: |\n\
         | nulab: decode request, RSA-2048 decrypt (aws-lc-rs), seal reply, encode (`nkpu` bench `server_path/whole_request`) | {ours:.0} |\n\
         | `openssl speed -seconds {seconds} rsa2048`, private-key operations (sign/s) | {openssl:.0} |\n\
         | ratio | {pct:.1}% |\n\n\
         Target: at least {target:.0}% of OpenSSL's rate on one core; this run **{verdict}** it.\n",
        cores = std::thread::available_parallelism().map_or(1, usize::from),
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

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

/// Elements per second from criterion's saved estimate (mean time per iteration).
fn criterion_per_second(id: &str) -> Result<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let path = target.join("criterion").join(id).join("new/estimates.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading criterion's estimate {}", path.display()))?;
    let nanos = json_number_after(&text, "\"mean\"", "\"point_estimate\"")
        .with_context(|| format!("no mean point estimate in {}", path.display()))?;
    Ok(1e9 / nanos)
}

/// The first number after `outer` then `key` in a small JSON text (criterion's estimates file):
/// enough here, without a JSON dependency in xtask.
fn json_number_after(text: &str, outer: &str, key: &str) -> Option<f64> {
    let rest = &text[text.find(outer)?..];
    let rest = &rest[rest.find(key)? + key.len()..];
    let rest = rest.trim_start_matches([' ', ':']);
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn openssl_rsa2048_sign_per_second(seconds: u32) -> Result<f64> {
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
    let text = String::from_utf8_lossy(&out.stdout);
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
    fn reads_criterion_mean() {
        let text = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":2.0},"point_estimate":865321.5,"standard_error":1.0},"median":{"point_estimate":3.0}}"#;
        assert_eq!(
            json_number_after(text, "\"mean\"", "\"point_estimate\""),
            Some(865321.5)
        );
    }
}
