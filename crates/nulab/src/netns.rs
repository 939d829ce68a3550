//! `nulab scenario run --backend netns`: the scenarios on the running Linux kernel through
//! `kernel_lab` (namespaces, bridges, veths, nulab's own server and client processes, dnsmasq
//! as relay, tcpdump), one after the other. Each scenario's outputs land in `--out/NAME` as in
//! the simulator: `result.json`, a pcap per segment, the WDS and BitLocker logs.
//!
//! Exit status as for the simulator: 0 every scenario passed, 1 an expectation was not met, 2 a
//! scenario could not run (refused before anything was created, with why; not root; a tool
//! missing, named with its Debian package).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use scenario::Loaded;

use crate::output::{errln, out, outln};

/// Where `nulab scenario run` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The deterministic simulator
    Sim,
    /// The running Linux kernel: network namespaces and real processes (needs root)
    Netns,
    /// Both, compared: the protector that unlocks each client, failure reasons, server
    /// counters and times within a tolerance, printed as a table (`cargo xtask scenario
    /// parity`); exit 1 when they differ
    Parity,
}

/// Runs `chosen` on real kernels (and in the simulator, for parity), writing into `out/NAME`.
pub fn run(
    backend: Backend,
    chosen: &[Loaded],
    out: &Path,
    seed: Option<u64>,
    json: bool,
) -> Result<ExitCode> {
    let parity = backend == Backend::Parity;
    let mut rows = Vec::new();
    let nulab = std::env::current_exe().context("cannot find the nulab executable")?;
    let dhcp_server = nulab
        .parent()
        .map(|dir| dir.join("nulab-dhcp-server"))
        .unwrap_or_else(|| PathBuf::from("nulab-dhcp-server"));
    let mut worst = 0u8;
    let mut summaries = Vec::new();
    for loaded in chosen {
        let options = kernel_lab::Options {
            nulab: nulab.clone(),
            dhcp_server: dhcp_server.clone(),
            out: out.join(&loaded.name),
            seed,
        };
        if !json {
            outln!("== {} (real kernel)", loaded.name)?;
        }
        let result = kernel_lab::run(loaded, &options, |line| {
            if !json {
                let _ = outln!("  {line}");
            }
        });
        if parity && let Ok(run) = &result {
            let simulated = scenario::run(loaded, seed)
                .map_err(|err| anyhow::anyhow!("{}: {err}", loaded.name))?;
            let sim_json = scenario::views::json(&simulated);
            std::fs::write(
                out.join(&loaded.name).join("simulator-result.json"),
                &sim_json,
            )
            .context("cannot write simulator-result.json")?;
            let sim: serde_json::Value = serde_json::from_str(&sim_json)?;
            let real: serde_json::Value = serde_json::from_str(&run.result_json)?;
            let compared = kernel_lab::parity::compare(&loaded.name, &sim, &real);
            if compared.iter().any(|r| !r.matches) {
                worst = worst.max(1);
            }
            rows.extend(compared);
        }
        let status = match result {
            Ok(_) if parity => "compared",
            Ok(run) if run.passed => "passed",
            Ok(_) => {
                worst = worst.max(1);
                "failed"
            }
            Err(err) => {
                worst = 2;
                errln!("nulab scenario run --backend netns: {}: {err}", loaded.name);
                if matches!(err, kernel_lab::LabError::Interrupted) {
                    break;
                }
                "error"
            }
        };
        if !json {
            outln!("{}: {status}", loaded.name)?;
        }
        summaries.push(serde_json::json!({"scenario": loaded.name, "status": status}));
    }
    if json {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({"scenario": r.scenario, "compared": r.what,
                    "simulator": r.simulator, "real": r.real, "matches": r.matches})
            })
            .collect();
        outln!(
            "{}",
            serde_json::json!({"backend": if parity { "parity" } else { "netns" },
                "scenarios": summaries, "parity": rows})
        )?;
    } else if parity {
        out!("{}", kernel_lab::parity::table(&rows))?;
        outln!(
            "parity: {} of {} compared quantities match (times within ±{}s, plus {}s per \
             jittered DHCPv4 retransmission wait)",
            rows.iter().filter(|r| r.matches).count(),
            rows.len(),
            kernel_lab::parity::TOLERANCE.as_secs_f64(),
            kernel_lab::parity::JITTERED_WAIT.as_secs_f64()
        )?;
    }
    Ok(ExitCode::from(worst))
}
