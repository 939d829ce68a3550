//! The goldens kept beside each scenario of the catalogue: every text output of its run with
//! its own seed, reviewed once and compared byte for byte after that (`cargo test -p scenario
//! --test catalogue`), refreshed by `nulab scenario bless`. `NAME.golden` is the transcript;
//! `NAME.outputs/` holds the others (`result.json`, `sequence.mmd`, the WDS, BitLocker and
//! recovery logs, the recovery database view). The pcaps are binary and `report.html` is the
//! same story drawn from the same result, so neither is kept.

use std::path::{Path, PathBuf};

use crate::RunResult;

/// Whether an output file is kept as a golden.
fn kept(name: &str) -> bool {
    !name.ends_with(".pcap") && name != "report.html"
}

/// The golden transcript kept beside a scenario file.
pub fn transcript_path(scenario: &Path) -> PathBuf {
    scenario.with_extension("golden")
}

/// The folder of the other goldens kept beside a scenario file.
pub fn outputs_dir(scenario: &Path) -> PathBuf {
    scenario.with_extension("outputs")
}

/// Every golden of `result` for the scenario at `scenario`, by path, in a fixed order.
pub fn files(scenario: &Path, result: &RunResult) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = outputs_dir(scenario);
    crate::outputs(result)
        .into_iter()
        .filter(|(name, _)| kept(name))
        .map(|(name, bytes)| {
            let path = if name == "transcript.txt" {
                transcript_path(scenario)
            } else {
                dir.join(name)
            };
            (path, bytes)
        })
        .collect()
}

/// Compares `result` with the goldens of `scenario`: the first difference, or a file missing
/// or left over, as a message that says how to refresh them.
pub fn compare(scenario: &Path, result: &RunResult) -> Result<(), String> {
    let expected = files(scenario, result);
    let bless = format!(
        "if the change is intended, run `nulab scenario bless {}` and review the diff",
        scenario.display()
    );
    for (path, bytes) in &expected {
        let golden =
            std::fs::read(path).map_err(|err| format!("{}: {err}; {bless}", path.display()))?;
        if &golden != bytes {
            return Err(format!(
                "{} differs (seed {}) at {}; {bless}",
                path.display(),
                result.seed,
                first_difference(
                    &String::from_utf8_lossy(&golden),
                    &String::from_utf8_lossy(bytes)
                )
            ));
        }
    }
    match stale_files(scenario, &expected).first() {
        Some(stale) => Err(format!(
            "{} is no output of the run any more; {bless}",
            stale.display()
        )),
        None => Ok(()),
    }
}

/// Writes the goldens of `result` for `scenario` and removes those it no longer has: each
/// path with whether it changed.
pub fn bless(scenario: &Path, result: &RunResult) -> std::io::Result<Vec<(PathBuf, bool)>> {
    let expected = files(scenario, result);
    std::fs::create_dir_all(outputs_dir(scenario))?;
    let mut written = Vec::new();
    for (path, bytes) in &expected {
        let changed = std::fs::read(path).map_or(true, |old| &old != bytes);
        if changed {
            std::fs::write(path, bytes)?;
        }
        written.push((path.clone(), changed));
    }
    for stale in stale_files(scenario, &expected) {
        std::fs::remove_file(&stale)?;
        written.push((stale, true));
    }
    Ok(written)
}

/// Files in the outputs folder that `expected` does not hold.
fn stale_files(scenario: &Path, expected: &[(PathBuf, Vec<u8>)]) -> Vec<PathBuf> {
    let mut stale: Vec<PathBuf> = std::fs::read_dir(outputs_dir(scenario))
        .map(|dir| {
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| !expected.iter().any(|(path, _)| path == p))
                .collect()
        })
        .unwrap_or_default();
    stale.sort();
    stale
}

/// Where two texts first differ, as a line number with both lines.
pub fn first_difference(golden: &str, actual: &str) -> String {
    for (i, (g, a)) in golden.lines().zip(actual.lines()).enumerate() {
        if g != a {
            return format!("line {}:\n  golden: {g}\n  actual: {a}", i + 1);
        }
    }
    format!(
        "the end ({} lines golden, {} lines now)",
        golden.lines().count(),
        actual.lines().count()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_difference_names_its_line() {
        assert!(first_difference("a\nb\n", "a\nc\n").starts_with("line 2:"));
        assert!(first_difference("a\n", "a\nb\n").contains("1 lines golden, 2 lines now"));
    }

    #[test]
    fn pcaps_and_the_html_report_are_not_kept() {
        assert!(kept("result.json") && kept("wds-wds.log") && kept("sequence.mmd"));
        assert!(!kept("corp.pcap") && !kept("report.html"));
    }
}
