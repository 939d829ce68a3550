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
//! - [`capture`]: each segment's capture, spilled to a temporary file as the run goes.
//! - [`views`]: the transcript, Mermaid and HTML diagrams, product-style logs, JSON.
//! - [`recovery`]: recovery-key escrow beside the boots (`recovery_service::sim`), and
//!   [`recovery_views`], its transcript section, handler logs, audit log and database view.
//!
//! The same scenario and seed give byte-identical outputs, every file of them: nothing reads a
//! wall clock or an unseeded random source, and every collection that reaches an output is
//! ordered.

pub mod capture;
pub mod model;
pub mod recovery;
pub mod recovery_views;
pub mod run;
pub mod views;
pub mod wire;
pub mod world;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use model::{Loaded, ScenarioError, load};
pub use run::{RunResult, run};

/// One file a run writes, rendered only when it is written (a storm's views are never all in
/// memory at once).
enum Output<'a> {
    Transcript,
    Json,
    Mermaid,
    Html,
    Pcap(&'a capture::SpilledCapture),
    WdsLog(&'a str),
    BitLockerLog(&'a run::ClientResult),
    /// Small files rendered with the list (the recovery service's logs and database view).
    Rendered(Vec<u8>),
}

/// The files of `result`, by name, in a fixed order.
fn output_list(result: &RunResult) -> Vec<(String, Output<'_>)> {
    let mut files = vec![
        ("transcript.txt".to_string(), Output::Transcript),
        ("result.json".to_string(), Output::Json),
        ("sequence.mmd".to_string(), Output::Mermaid),
        ("report.html".to_string(), Output::Html),
    ];
    for (segment, _, capture) in &result.segments {
        files.push((format!("{segment}.pcap"), Output::Pcap(capture)));
    }
    for server in &result.servers {
        files.push((
            format!("wds-{}.log", server.name),
            Output::WdsLog(&server.name),
        ));
    }
    if result.clients.len() <= 50 {
        for client in &result.clients {
            files.push((
                format!("bitlocker-{}.log", client.name),
                Output::BitLockerLog(client),
            ));
        }
    }
    files.extend(
        recovery_views::outputs(result)
            .into_iter()
            .map(|(name, bytes)| (name, Output::Rendered(bytes))),
    );
    files
}

fn render<W: Write>(result: &RunResult, output: &Output<'_>, mut out: W) -> std::io::Result<W> {
    let text = match output {
        Output::Transcript => views::transcript(result),
        Output::Json => views::json(result),
        Output::Mermaid => views::mermaid(result),
        Output::Html => views::html(result),
        Output::WdsLog(server) => views::wds_log(result, server),
        Output::BitLockerLog(client) => views::bitlocker_log(client),
        Output::Pcap(capture) => return capture.copy_to(out),
        Output::Rendered(bytes) => {
            out.write_all(bytes)?;
            return Ok(out);
        }
    };
    out.write_all(text.as_bytes())?;
    Ok(out)
}

/// The files a run writes, by name, in a fixed order, in memory.
pub fn outputs(result: &RunResult) -> Vec<(String, Vec<u8>)> {
    output_list(result)
        .into_iter()
        .map(|(name, output)| {
            // Writing into a Vec cannot fail.
            let bytes = render(result, &output, Vec::new()).unwrap_or_default();
            (name, bytes)
        })
        .collect()
}

/// Writes the files of [`outputs`] into `dir` (created if needed), one at a time.
pub fn write_outputs(result: &RunResult, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, output) in output_list(result) {
        let path = dir.join(name);
        let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        render(result, &output, file)?.flush()?;
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
