//! Scenarios: the product's main job. A scenario file (TOML) describes a network, the machines
//! that boot on it, what goes wrong and when, and what must come out; the runner replays it in
//! the deterministic simulator through the real cores (DHCP, the Network Unlock provider, the
//! boot client, the TPM and the encrypted volume) and writes what a teacher shows and a CI
//! suite checks.
//!
//! - [`model`]: the file format, its defaults and its `file:line` errors.
//! - [`catalogue`]: `scenarios/*.toml`, inside the binary.
//! - [`world`]: building the simulated world from a scenario and a seed.
//! - [`run`]: running it, applying server events at their times, checking expectations.
//! - [`curve`]: reliability and capacity curves over one parameter, with the analytic model.
//! - [`suite`]: shards, the `--json` and JUnit summaries of many runs, a sweep's statistics.
//! - [`wire`]: the captured frames, decoded and named.
//! - [`capture`]: each segment's capture, spilled to a temporary file as the run goes.
//! - [`golden`]: the reviewed outputs kept beside each scenario, compared and blessed.
//! - [`views`]: the transcript, Mermaid and HTML diagrams, product-style logs, JSON.
//! - [`recovery`]: recovery-key escrow beside the boots (`recovery_service::sim`), and
//!   [`recovery_views`], its transcript section, handler logs, audit log and database view.
//!
//! The same scenario and seed give byte-identical outputs, every file of them: nothing reads a
//! wall clock or an unseeded random source, and every collection that reaches an output is
//! ordered.

pub mod capture;
pub mod catalogue;
pub mod check;
pub mod curve;
pub mod golden;
pub mod model;
pub mod recovery;
pub mod recovery_views;
pub mod run;
pub mod suite;
mod text;
pub mod views;
pub mod wake;
pub mod wire;
pub mod world;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use model::{Loaded, ScenarioError, load, load_catalogue, load_whole_catalogue, resolve};
pub use run::{RunResult, run, run_into};

/// One file a run writes, rendered only when it is written (a storm's views are never all in
/// memory at once).
enum Output<'a> {
    Transcript,
    Json,
    /// Both drawings share one [`views::Drawing`] (a storm's frames sifted once).
    Mermaid(std::rc::Rc<views::Drawing>),
    Html(std::rc::Rc<views::Drawing>),
    Pcap(&'a capture::SpilledCapture),
    WdsLog(&'a str),
    BitLockerLog(&'a run::ClientResult),
    /// Small files rendered with the list (the recovery service's logs and database view).
    Rendered(Vec<u8>),
}

/// The files of `result`, by name, in a fixed order.
fn output_list(result: &RunResult) -> Vec<(String, Output<'_>)> {
    let drawing = std::rc::Rc::new(views::Drawing::of(result));
    let mut files = vec![
        ("transcript.txt".to_string(), Output::Transcript),
        ("result.json".to_string(), Output::Json),
        (
            "sequence.mmd".to_string(),
            Output::Mermaid(std::rc::Rc::clone(&drawing)),
        ),
        ("report.html".to_string(), Output::Html(drawing)),
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
    let key_log = views::key_log(result);
    if !key_log.is_empty() {
        files.push((
            views::KEY_LOG.to_string(),
            Output::Rendered(key_log.into_bytes()),
        ));
    }
    if result.clients.len() <= 50 {
        for client in &result.clients {
            files.push((
                format!("bitlocker-{}.log", client.name),
                Output::BitLockerLog(client),
            ));
        }
        for client in &result.clients {
            if let Some(text) = views::client_checks::text(client) {
                files.push((
                    views::client_checks::file_name(&client.name),
                    Output::Rendered(text.into_bytes()),
                ));
            }
        }
    }
    files.extend(
        recovery_views::outputs(result.recovery.as_ref())
            .into_iter()
            .map(|(name, bytes)| (name, Output::Rendered(bytes))),
    );
    files
}

fn render<W: Write>(result: &RunResult, output: &Output<'_>, mut out: W) -> std::io::Result<W> {
    let text = match output {
        Output::Transcript => views::transcript(result),
        Output::Json => views::json(result),
        Output::Mermaid(drawing) => views::mermaid(result, drawing),
        Output::Html(drawing) => views::html(result, drawing),
        Output::WdsLog(server) => {
            views::write_wds_log(result, server, &mut out)?;
            return Ok(out);
        }
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
        // A capture the run wrote into this directory is already there, under another name.
        if let Output::Pcap(capture) = &output
            && capture.move_to(&path)?
        {
            written.push(path);
            continue;
        }
        // One output at a time, through a large buffer: the page cache takes large writes in
        // large folios (a storm's WDS log is 10 MB at 10,000 clients).
        let file = std::io::BufWriter::with_capacity(256 * 1024, std::fs::File::create(&path)?);
        render(result, &output, file)?.flush()?;
        written.push(path);
    }
    Ok(written)
}

/// The command that replays a run exactly, printed when it fails: it works without the source
/// tree for a catalogue scenario.
pub fn replay_command(loaded: &Loaded, seed: u64) -> String {
    format!("nulab scenario run {} --seed {seed}", loaded.argument())
}

/// The golden transcript kept beside a scenario file ([`golden`] has the others).
pub fn golden_path(scenario: &Path) -> PathBuf {
    golden::transcript_path(scenario)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    /// The crate's modules (a `model/` folder belongs to `model`) and the modules each one
    /// names with `crate::`, outside its tests.
    fn module_imports() -> BTreeMap<String, BTreeSet<String>> {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        let mut dirs = vec![src.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("src is readable").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        let mut graph = BTreeMap::new();
        for file in files {
            let relative = file.strip_prefix(&src).expect("under src");
            let module = relative
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .map(|c| c.trim_end_matches(".rs").to_string())
                .expect("a file name");
            if module == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("readable");
            let code: String = text
                .split("#[cfg(test)]")
                .next()
                .unwrap_or_default()
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let names: &mut BTreeSet<String> = graph.entry(module.clone()).or_default();
            let ident = |text: &str| -> String {
                text.trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect()
            };
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                // `crate::{a::X, b}` names each of its first segments.
                let firsts: Vec<String> = match rest.strip_prefix('{') {
                    Some(group) => group
                        .split('}')
                        .next()
                        .unwrap_or_default()
                        .split(',')
                        .map(ident)
                        .collect(),
                    None => vec![ident(rest)],
                };
                names.extend(firsts.into_iter().filter(|name| *name != module));
            }
        }
        // Only modules count (`crate::RunResult` is a re-export of lib.rs).
        let modules: BTreeSet<String> = graph.keys().cloned().collect();
        for names in graph.values_mut() {
            names.retain(|name| modules.contains(name));
        }
        graph
    }

    #[test]
    fn the_modules_import_each_other_without_a_cycle() {
        let graph = module_imports();
        assert!(
            graph.contains_key("run") && graph.contains_key("model"),
            "{graph:?}"
        );
        assert!(
            graph["run"].contains("world"),
            "the reader misses imports: {graph:?}"
        );
        // Depth-first search for a back edge, reporting the cycle it closes.
        fn visit<'a>(
            graph: &'a BTreeMap<String, BTreeSet<String>>,
            module: &'a str,
            path: &mut Vec<&'a str>,
            done: &mut BTreeSet<&'a str>,
        ) -> Result<(), String> {
            if let Some(at) = path.iter().position(|m| *m == module) {
                return Err(format!("{} -> {module}", path[at..].join(" -> ")));
            }
            if !done.insert(module) {
                return Ok(());
            }
            path.push(module);
            for next in graph.get(module).into_iter().flatten() {
                visit(graph, next, path, done)?;
            }
            path.pop();
            Ok(())
        }
        let mut done = BTreeSet::new();
        for module in graph.keys() {
            let mut path = Vec::new();
            if let Err(cycle) = visit(&graph, module, &mut path, &mut done) {
                panic!("an import cycle: {cycle}");
            }
        }
    }
}
