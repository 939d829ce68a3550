//! `cargo xtask fuzz [TARGET…] [--time S] [--record]`: the coverage-guided fuzz targets of
//! `fuzz/` (cargo-fuzz, libFuzzer), each for S seconds, starting from its seeds (`fuzz/seeds/`)
//! and the fixtures and scenarios. A crash fails the run and names the input that caused it.
//! `--record` adds each target's executions to the survival table of FUZZING.md.
//!
//! The fuzz crate is its own workspace outside the main one: libFuzzer needs nightly flags.
//! With a nightly toolchain installed, `cargo +nightly fuzz` builds it; without one, stable with
//! `RUSTC_BOOTSTRAP=1`. No sanitizer (`-s none`): the targets are safe Rust, where the bugs
//! looked for are panics, which libFuzzer catches as crashes either way, and it runs several
//! times faster. `cargo xtask test` (CI) runs every target for [`CI_SECONDS`] seconds.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Seconds per target in CI, as issue 13 asks (about 30 s each): 11 targets, five and a half
/// minutes in all, plus the fuzz build (a release build of the lab crates, several minutes on a
/// fresh machine). A clean-clone CI run took 18 minutes with 15 s a target; it must stay well
/// under 30.
pub const CI_SECONDS: u64 = 30;
/// Seconds per target for `cargo xtask fuzz` without `--time`.
const DEFAULT_SECONDS: u64 = 60;

/// Every target, and the folders (from the workspace root) whose files seed it besides
/// `fuzz/seeds/TARGET`.
pub const TARGETS: &[(&str, &[&str])] = &[
    ("dhcp_server_v4", &[]),
    ("dhcp_client_v4", &[]),
    ("dhcp_v6", &[]),
    ("unlock_provider", &[]),
    ("boot_exchange", &[]),
    ("packet_decode", &["fixtures/windows-captures"]),
    ("policy_ini", &[]),
    ("scenario_toml", &["scenarios"]),
    ("certificate_files", &[]),
    ("recovery_bodies", &[]),
    ("volume_image", &[]),
];

/// What one target survived.
pub struct Survived {
    pub target: &'static str,
    pub seconds: u64,
    pub executions: u64,
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut seconds = DEFAULT_SECONDS;
    let mut record = false;
    let mut chosen = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--time" => {
                let value = args.next().context("--time needs a number of seconds")?;
                seconds = value
                    .trim_end_matches('s')
                    .parse()
                    .with_context(|| format!("--time {value:?}: not a number of seconds"))?;
            }
            "--record" => record = true,
            name => match TARGETS.iter().find(|(target, _)| *target == name) {
                Some(target) => chosen.push(*target),
                None => bail!(
                    "no fuzz target `{name}`; the targets: {}",
                    TARGETS
                        .iter()
                        .map(|(t, _)| *t)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
        }
    }
    if chosen.is_empty() {
        chosen = TARGETS.to_vec();
    }
    let survived = fuzz(root, &chosen, seconds)?;
    if record {
        record_in_fuzzing_md(root, &survived)?;
    }
    Ok(())
}

/// Builds the targets, then runs each for `seconds`; fails on the first crash.
pub fn fuzz(
    root: &Path,
    targets: &[(&'static str, &[&str])],
    seconds: u64,
) -> Result<Vec<Survived>> {
    ensure_cargo_fuzz()?;
    let toolchain = Toolchain::find()?;
    let mut build = toolchain.cargo_fuzz(root);
    build.args(["build", "-s", "none"]);
    run_checked(&mut build, "cargo fuzz build")?;
    let mut survived = Vec::new();
    for (target, extra_seeds) in targets {
        let corpus = prepare_corpus(root, target, extra_seeds)?;
        let artifacts = root.join("fuzz/artifacts").join(target);
        std::fs::create_dir_all(&artifacts)
            .with_context(|| format!("cannot create {}", artifacts.display()))?;
        // The binary cargo-fuzz built, run directly: `cargo fuzz run` would check the build
        // again for each target.
        let binary = root
            .join("fuzz/target")
            // cargo-fuzz builds for the host; CI and the lab machines are Linux (glibc).
            .join(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
            .join("release")
            .join(target);
        eprintln!("$ {} ({seconds} s)", binary.display());
        let output = Command::new(&binary)
            .arg(&corpus)
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg("-print_final_stats=1")
            .output()
            .with_context(|| format!("could not start {}", binary.display()))?;
        let log = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            // The panic message and the first frames, and where libFuzzer wrote the input.
            let lines: Vec<&str> = log.lines().collect();
            let from = lines
                .iter()
                .position(|l| l.contains("panicked at"))
                .unwrap_or(lines.len().saturating_sub(30));
            let mut report: Vec<&str> = lines[from..]
                .iter()
                .filter(|l| !l.trim_start().starts_with("at /rustc"))
                .take(24)
                .copied()
                .collect();
            report.extend(lines.iter().filter(|l| l.contains("Test unit written")));
            bail!(
                "fuzz target {target} crashed ({}); the input is in {}:\n{}",
                output.status,
                artifacts.display(),
                report.join("\n")
            );
        }
        let executions = final_stat(&log, "stat::number_of_executed_units")
            .with_context(|| format!("{target}: libFuzzer printed no final stats"))?;
        eprintln!("  {target}: {executions} executions, no crash");
        survived.push(Survived {
            target,
            seconds,
            executions,
        });
    }
    eprintln!("\n| target | seconds | executions |\n| --- | ---: | ---: |");
    for s in &survived {
        eprintln!("| {} | {} | {} |", s.target, s.seconds, s.executions);
    }
    Ok(survived)
}

/// How cargo-fuzz gets the nightly features libFuzzer needs.
enum Toolchain {
    Nightly,
    StableWithBootstrap,
}

impl Toolchain {
    fn find() -> Result<Self> {
        let list = Command::new("rustup")
            .args(["toolchain", "list"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        Ok(if list.lines().any(|l| l.starts_with("nightly")) {
            Self::Nightly
        } else {
            Self::StableWithBootstrap
        })
    }

    fn cargo_fuzz(&self, root: &Path) -> Command {
        let mut command = Command::new("cargo");
        command.current_dir(root);
        // The outer `cargo xtask` sets these for its own toolchain; cargo-fuzz picks its own.
        command.env_remove("CARGO").env_remove("RUSTC");
        match self {
            Self::Nightly => {
                command.arg("+nightly");
            }
            Self::StableWithBootstrap => {
                command.env("RUSTC_BOOTSTRAP", "1");
            }
        }
        command.arg("fuzz");
        command
    }
}

fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    eprintln!("cargo-fuzz is missing: installing it from crates.io");
    run_checked(
        Command::new("cargo").args(["install", "--locked", "cargo-fuzz"]),
        "cargo install cargo-fuzz",
    )
}

fn run_checked(command: &mut Command, what: &str) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("could not start `{what}`"))?;
    if !status.success() {
        bail!("`{what}` failed ({status})");
    }
    Ok(())
}

/// `fuzz/corpus/TARGET`, holding the seeds and the fixtures (copied, so that libFuzzer's new
/// inputs never land among the project's files).
fn prepare_corpus(root: &Path, target: &str, extra: &[&str]) -> Result<PathBuf> {
    let corpus = root.join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("cannot create {}", corpus.display()))?;
    let seeds = root.join("fuzz/seeds").join(target);
    let folders = std::iter::once(seeds).chain(extra.iter().map(|f| root.join(f)));
    for folder in folders {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries {
            let path = entry
                .with_context(|| format!("cannot list {}", folder.display()))?
                .path();
            if !path.is_file() {
                continue;
            }
            if let Some(name) = path.file_name() {
                let into = corpus.join(format!("seed-{}", name.to_string_lossy()));
                std::fs::copy(&path, &into).with_context(|| {
                    format!("cannot copy {} to {}", path.display(), into.display())
                })?;
            }
        }
    }
    Ok(corpus)
}

/// A `stat::NAME: N` line of libFuzzer's final statistics.
fn final_stat(log: &str, name: &str) -> Option<u64> {
    log.lines()
        .filter_map(|line| line.trim().strip_prefix(name))
        .filter_map(|rest| rest.trim_start_matches(':').trim().parse().ok())
        .next_back()
}

/// Adds the executions to FUZZING.md's table (`| target | total executions | … |`), between
/// its `<!-- survival -->` markers.
fn record_in_fuzzing_md(root: &Path, survived: &[Survived]) -> Result<()> {
    let path = root.join("FUZZING.md");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = String::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let updated = match cells.as_slice() {
            ["", target, total, seconds, rest @ ..] => survived
                .iter()
                .find(|s| s.target == target.trim_matches('`'))
                .and_then(|s| {
                    let total: u64 = total.replace(',', "").parse().ok()?;
                    let secs: u64 = seconds.replace(',', "").parse().ok()?;
                    Some(format!(
                        "| {target} | {} | {} | {}",
                        total + s.executions,
                        secs + s.seconds,
                        rest.join(" | ")
                    ))
                }),
            _ => None,
        };
        out.push_str(updated.as_deref().unwrap_or(line).trim_end());
        out.push('\n');
    }
    std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzers_final_stats() {
        let log = "#1234 DONE cov: 10\nstat::number_of_executed_units: 98765\n\
                   stat::average_exec_per_sec:     4938\n";
        assert_eq!(
            final_stat(log, "stat::number_of_executed_units"),
            Some(98765)
        );
        assert_eq!(final_stat(log, "stat::average_exec_per_sec"), Some(4938));
        assert_eq!(
            final_stat("nothing", "stat::number_of_executed_units"),
            None
        );
    }

    #[test]
    fn every_target_has_a_source_file_and_seeds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for (target, _) in TARGETS {
            let source = root.join(format!("fuzz/fuzz_targets/{target}.rs"));
            assert!(source.is_file(), "{}", source.display());
        }
        let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).expect("manifest");
        for (target, _) in TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{target}\"")),
                "{target} is not a [[bin]] of fuzz/Cargo.toml"
            );
        }
    }
}
