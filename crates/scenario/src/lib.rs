//! Scenarios: the product's main job. A scenario file (TOML) describes a network, the machines
//! that boot on it, what goes wrong and when, and what must come out; the runner replays it in
//! the deterministic simulator through the real cores (DHCP, the Network Unlock provider, the
//! boot client, the TPM and the encrypted volume) and writes what a teacher shows and a CI
//! suite checks.
//!
//! - [`model`]: the file format, its defaults and its `file:line` errors.
//! - [`world`]: building the simulated world from a scenario and a seed.
//! - [`run`]: running it, applying server events at their times, checking expectations.
//! - [`wire`]: the captured frames, decoded and named.
//! - [`views`]: the transcript, Mermaid and HTML diagrams, product-style logs, JSON.
//! - [`recovery`]: recovery-key escrow beside the boots (`recovery_service::sim`), and
//!   [`recovery_views`], its transcript section, handler logs, audit log and database view.
//!
//! The same scenario and seed give byte-identical outputs, every file of them: nothing reads a
//! wall clock or an unseeded random source, and every collection that reaches an output is
//! ordered.

pub mod model;
pub mod recovery;
pub mod recovery_views;
pub mod run;
pub mod views;
pub mod wire;
pub mod world;

use std::path::{Path, PathBuf};

pub use model::{Loaded, ScenarioError, load};
pub use run::{RunResult, run};

/// The files a run writes, by name, in a fixed order.
pub fn outputs(result: &RunResult) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![
        (
            "transcript.txt".to_string(),
            views::transcript(result).into_bytes(),
        ),
        ("result.json".to_string(), views::json(result).into_bytes()),
        (
            "sequence.mmd".to_string(),
            views::mermaid(result).into_bytes(),
        ),
        ("report.html".to_string(), views::html(result).into_bytes()),
    ];
    for (segment, _, pcap) in &result.segments {
        files.push((format!("{segment}.pcap"), pcap.clone()));
    }
    for server in &result.servers {
        files.push((
            format!("wds-{}.log", server.name),
            views::wds_log(result, &server.name).into_bytes(),
        ));
    }
    if result.clients.len() <= 50 {
        for client in &result.clients {
            files.push((
                format!("bitlocker-{}.log", client.name),
                views::bitlocker_log(client).into_bytes(),
            ));
        }
    }
    files.extend(recovery_views::outputs(result));
    files
}

/// Writes [`outputs`] into `dir` (created if needed).
pub fn write_outputs(result: &RunResult, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, bytes) in outputs(result) {
        let path = dir.join(name);
        std::fs::write(&path, bytes)?;
        written.push(path);
    }
    Ok(written)
}

/// The command that replays a run exactly, printed when it fails.
pub fn replay_command(path: &Path, seed: u64) -> String {
    format!("cargo xtask scenario run {} --seed {seed}", path.display())
}

/// The golden transcript kept beside a scenario file.
pub fn golden_path(scenario: &Path) -> PathBuf {
    scenario.with_extension("golden")
}
