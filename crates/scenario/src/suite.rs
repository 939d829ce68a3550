//! Scenarios as a regression suite that CI systems drive: the deterministic partition of a
//! catalogue into shards, the per-scenario summary (`--json`) and its JUnit XML form
//! (`--junit`), and the statistics of a sweep over seeds (pass rate with its Wilson 95%
//! interval, unlock-time percentiles per outcome).
//!
//! Nothing here runs a scenario: the command line runs them (on `--jobs` threads) and hands the
//! results over.

use std::fmt::Write as _;
use std::time::Duration;

use boot_client::boot::BootResult;
use serde::Serialize;

use crate::model::Loaded;
use crate::run::RunResult;

/// `--shard K/N`: the K-th of N parts (K from 1). A scenario's part depends on its name only
/// (a hash), so adding a file moves no other scenario to another shard, and the N shards
/// together hold every scenario exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// Whether the job called `key` (a scenario's name; `name@seed` in a sweep) is this shard's.
    pub fn contains(&self, key: &str) -> bool {
        fnv1a(key.as_bytes()) % self.count == self.index - 1
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Shard, String> {
        let bad = || format!("{text:?} is not a shard like 1/4 (K/N with 1 <= K <= N)");
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let index: u64 = k.trim().parse().map_err(|_| bad())?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// FNV-1a, 64 bits: small, stable across platforms and Rust versions (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// How one scenario of a run went, for `--json` and `--junit`.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioSummary {
    pub name: String,
    /// What to type to run it again (the catalogue name, or the file).
    pub scenario: String,
    /// `passed`, `failed` (an expectation not met) or `error` (it could not run).
    pub status: Status,
    pub passed: bool,
    pub seed: u64,
    /// Wall-clock time of the run and its outputs, milliseconds.
    pub duration_ms: u64,
    /// The expectations that did not hold, each with what was seen.
    pub unmet: Vec<String>,
    /// Why it could not run, for `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The folder its outputs were written to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The command that replays it exactly.
    pub replay: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Passed,
    Failed,
    Error,
}

impl ScenarioSummary {
    /// The summary of a run of `loaded` that produced `result`.
    pub fn of(
        loaded: &Loaded,
        result: &RunResult,
        duration: Duration,
        output: Option<String>,
    ) -> ScenarioSummary {
        let unmet: Vec<String> = result
            .checks
            .iter()
            .filter(|c| !c.met)
            .map(ToString::to_string)
            .collect();
        let passed = unmet.is_empty();
        ScenarioSummary {
            name: loaded.name.clone(),
            scenario: loaded.argument(),
            status: if passed {
                Status::Passed
            } else {
                Status::Failed
            },
            passed,
            seed: result.seed,
            duration_ms: millis(duration),
            unmet,
            error: None,
            output,
            replay: crate::replay_command(loaded, result.seed),
        }
    }

    /// The summary of a run of `loaded` with `seed` that could not happen.
    pub fn error(loaded: &Loaded, seed: u64, duration: Duration, error: String) -> ScenarioSummary {
        ScenarioSummary {
            name: loaded.name.clone(),
            scenario: loaded.argument(),
            status: Status::Error,
            passed: false,
            seed,
            duration_ms: millis(duration),
            unmet: Vec::new(),
            error: Some(error),
            output: None,
            replay: crate::replay_command(loaded, seed),
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A whole run, `--json`'s one object.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub passed: bool,
    pub total: usize,
    pub failed: usize,
    pub errors: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    pub duration_ms: u64,
    pub scenarios: Vec<ScenarioSummary>,
}

impl RunSummary {
    pub fn new(
        scenarios: Vec<ScenarioSummary>,
        shard: Option<Shard>,
        duration: Duration,
    ) -> RunSummary {
        let count = |status| scenarios.iter().filter(|s| s.status == status).count();
        let (failed, errors) = (count(Status::Failed), count(Status::Error));
        RunSummary {
            passed: failed == 0 && errors == 0,
            total: scenarios.len(),
            failed,
            errors,
            shard: shard.map(|s| s.to_string()),
            duration_ms: millis(duration),
            scenarios,
        }
    }

    /// The process's exit status: 0 every scenario passed, 1 an expectation was not met, 2 a
    /// scenario could not run.
    pub fn exit_status(&self) -> u8 {
        if self.errors > 0 {
            2
        } else if self.failed > 0 {
            1
        } else {
            0
        }
    }

    /// The run as JUnit XML (one `testsuite`, one `testcase` per scenario: unmet expectations
    /// in `failure`, a scenario that could not run in `error`, the output folder and the
    /// replay command in `system-out`), as GitLab, Jenkins and GitHub test reporters read it;
    /// `fixtures/junit.xsd` is its schema.
    pub fn junit_xml(&self) -> String {
        let seconds = |ms: u64| format!("{}.{:03}", ms / 1000, ms % 1000);
        let suite = match &self.shard {
            Some(shard) => format!("nulab scenarios (shard {shard})"),
            None => "nulab scenarios".to_string(),
        };
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            xml,
            "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{}\">",
            xml_escape(&suite),
            self.total,
            self.failed,
            self.errors,
            seconds(self.duration_ms)
        );
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"0\" time=\"{}\">",
            xml_escape(&suite),
            self.total,
            self.failed,
            self.errors,
            seconds(self.duration_ms)
        );
        for case in &self.scenarios {
            let _ = writeln!(
                xml,
                "    <testcase name=\"{}\" classname=\"scenarios\" time=\"{}\">",
                xml_escape(&case.name),
                seconds(case.duration_ms)
            );
            match case.status {
                Status::Passed => {}
                Status::Failed => {
                    let _ = writeln!(
                        xml,
                        "      <failure message=\"{}\" type=\"unmet expectations\">{}</failure>",
                        xml_escape(&case.unmet.join("; ")),
                        xml_escape(&format!(
                            "{}\nseed {}; replay with: {}",
                            case.unmet.join("\n"),
                            case.seed,
                            case.replay
                        ))
                    );
                }
                Status::Error => {
                    let message = case.error.clone().unwrap_or_default();
                    let _ = writeln!(
                        xml,
                        "      <error message=\"{}\" type=\"scenario error\">{}</error>",
                        xml_escape(&message),
                        xml_escape(&message)
                    );
                }
            }
            let mut out = format!("seed {}\nreplay: {}\n", case.seed, case.replay);
            if let Some(folder) = &case.output {
                out = format!("output folder: {folder}\n{out}");
            }
            let _ = writeln!(xml, "      <system-out>{}</system-out>", xml_escape(&out));
            xml.push_str("    </testcase>\n");
        }
        xml.push_str("  </testsuite>\n</testsuites>\n");
        xml
    }
}

/// `text` for XML text and attribute values; characters XML 1.0 cannot hold become U+FFFD.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' => out.push(c),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// The Wilson score interval at 95% for `passes` out of `runs`: the pass rate's confidence
/// interval that stays inside [0, 1] and means something at 0 or `runs` passes.
pub fn wilson_95(passes: u64, runs: u64) -> (f64, f64) {
    if runs == 0 {
        return (0.0, 1.0);
    }
    const Z: f64 = 1.959_963_984_540_054;
    let n = runs as f64;
    let p = passes as f64 / n;
    let z2 = Z * Z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Each client's outcome in a few words (`network-unlock`, `tpm-and-pin`, `waiting at the PIN
/// prompt`, `stuck`, `still booting`) and, when it unlocked, how long after its power-on.
pub fn client_outcomes(result: &RunResult) -> Vec<(String, Option<Duration>)> {
    result
        .clients
        .iter()
        .map(|client| match client.outcome.as_ref().map(|o| &o.result) {
            Some(BootResult::Unlocked { protector, at }) => (
                protector.cli_name().to_string(),
                Some(at.saturating_sub(client.boot_at)),
            ),
            Some(BootResult::Waiting { prompt, .. }) => (format!("waiting at {prompt}"), None),
            Some(BootResult::Stuck { .. }) => ("stuck".to_string(), None),
            None => ("still booting".to_string(), None),
        })
        .collect()
}

/// Percentiles of unlock times (nearest rank), in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// `None` for no times.
    pub fn of(times: &[Duration]) -> Option<Percentiles> {
        let mut sorted: Vec<Duration> = times.to_vec();
        sorted.sort();
        let last = sorted.last()?;
        let rank = |q: f64| {
            let at = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            sorted[at - 1].as_secs_f64() * 1000.0
        };
        Some(Percentiles {
            count: sorted.len(),
            p50_ms: rank(0.50),
            p90_ms: rank(0.90),
            p99_ms: rank(0.99),
            max_ms: last.as_secs_f64() * 1000.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_every_name_once_by_its_name_alone() {
        let names: Vec<String> = (0..200).map(|i| format!("scenario-{i}")).collect();
        let shards: Vec<Shard> = (1..=4)
            .map(|k| format!("{k}/4").parse().expect("shard"))
            .collect();
        for name in &names {
            assert_eq!(
                shards.iter().filter(|s| s.contains(name)).count(),
                1,
                "{name}"
            );
        }
        // Each shard gets a fair part.
        for shard in &shards {
            let n = names.iter().filter(|name| shard.contains(name)).count();
            assert!((25..=75).contains(&n), "{shard}: {n}");
        }
        // Pinned: a scenario's shard never changes between releases (CI splits stay put).
        let shard_of = |name: &str| shards.iter().position(|s| s.contains(name)).map(|i| i + 1);
        assert_eq!(
            shard_of("happy-path-ipv4"),
            Some(fnv1a(b"happy-path-ipv4") as usize % 4 + 1)
        );
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn a_shard_is_k_of_n() {
        assert_eq!("2/3".parse::<Shard>(), Ok(Shard { index: 2, count: 3 }));
        for bad in ["0/3", "4/3", "1/0", "3", "a/b", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_wilson_interval_matches_the_textbook() {
        let (lo, hi) = wilson_95(8, 10);
        assert!(
            (lo - 0.4902).abs() < 1e-3 && (hi - 0.9433).abs() < 1e-3,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson_95(10, 10);
        assert!(
            (lo - 0.7225).abs() < 1e-3 && (hi - 1.0).abs() < 1e-9,
            "{lo} {hi}"
        );
        assert_eq!(wilson_95(0, 0), (0.0, 1.0));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let times: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&times).expect("some");
        assert_eq!(
            (p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(Percentiles::of(&[]), None);
    }

    #[test]
    fn xml_text_is_escaped_and_control_characters_replaced() {
        assert_eq!(
            xml_escape("a<b>&\"'\u{1}"),
            "a&lt;b&gt;&amp;&quot;&apos;\u{fffd}"
        );
    }
}
