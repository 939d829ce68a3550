//! `cargo xtask`: the project's chores, in Rust rather than shell scripts.
//!
//! - `cargo xtask test`: the CI gate. Installs the system tools the tests use when they are
//!   missing (apt-get, as root), then runs `cargo fmt --check`, clippy with `-D warnings`,
//!   every test of the workspace, and every fuzz target for a few seconds.
//! - `cargo xtask fuzz [TARGET] [--time S]`: the fuzz targets, longer (FUZZING.md).
//! - `cargo xtask demo`: the README's main job: the happy-path scenario and the classic relay
//!   misconfiguration, narrated phase by phase, with their pcaps, diagrams and logs.
//! - `cargo xtask scenario run|list|bless|sweep`: the scenario runner (`nulab scenario`).
//! - `cargo xtask bench`: the benchmarks, beside `openssl speed rsa2048` measured in the same run,
//!   then recovery escrow over TLS (`cargo xtask escrow` alone) and the 10,000-client boot storm
//!   (`cargo xtask storm` alone).
//! - `cargo xtask attack`: the recovery service under attack (slow, idle and oversized
//!   unauthenticated clients while devices escrow); also part of `bench`.

mod attack;
mod bench;
mod docker_lab;
mod escrow;
mod fuzz;
mod parity;
mod storm;
mod system;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test           fmt --check, clippy -D warnings, every test (installs missing system tools)
  demo           run two teaching scenarios (happy path, relay misconfiguration) into target/demo
  scenario ...   run|list|bless|sweep scenarios (see `cargo xtask scenario --help`)
  scenario parity [FILE...]
                 simulator and real kernel (--backend netns, root) compared in a table
  bench          criterion benchmarks beside `openssl speed rsa2048`; writes BENCHMARKS.md
  escrow         only the recovery-escrow throughput over TLS, 10k and 1M records (part of `bench`)
  attack         only the recovery service under attack (part of `bench`)
  storm          only the 10,000-client boot storm beside openssl (part of `bench`)
  fuzz [TARGET] [--time S] [--record]
                 the fuzz targets (default all, 60 s each); --record adds to FUZZING.md
  docker-lab     the docker lab from docker/lab.toml, built, up, each client's outcome checked
  install-deps   only install the system tools the tests use
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let Some(command) = args.first() else {
        eprint!("{USAGE}");
        bail!("no command given");
    };
    let rest = &args[1..];
    match command.as_str() {
        "test" => test(rest),
        "demo" => demo(rest),
        "scenario" if rest.first().is_some_and(|a| a == "parity") => {
            parity::run(&workspace_root(), &rest[1..])
        }
        "scenario" => nulab("scenario", rest),
        "bench" => {
            bench::run(rest)?;
            escrow::run(&workspace_root())?;
            attack::run(&workspace_root())?;
            storm::run(&workspace_root())
        }
        "escrow" => escrow::run(&workspace_root()),
        "attack" => attack::run(&workspace_root()),
        "storm" => storm::run(&workspace_root()),
        "fuzz" => fuzz::run(&workspace_root(), rest),
        "docker-lab" => docker_lab::run(&workspace_root()),
        "install-deps" => system::ensure_tools(),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("{USAGE}");
            bail!("unknown command `{other}`")
        }
    }
}

/// The CI gate: what `.ci/run` calls and what the README names as the test command.
fn test(extra: &[String]) -> Result<()> {
    system::ensure_tools()?;
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ])?;
    let mut test_args = vec!["test", "--workspace", "--all-features"];
    test_args.extend(extra.iter().map(String::as_str));
    cargo(&test_args)?;
    scenario_suite()?;
    if docker_lab::in_test_gate() {
        docker_lab::run(&workspace_root())?;
    }
    // Bounded fuzzing: any crash fails CI (NULAB_FUZZ_SECONDS=0 skips it on a slow machine).
    let seconds = match std::env::var("NULAB_FUZZ_SECONDS") {
        Ok(value) => value
            .parse()
            .with_context(|| format!("NULAB_FUZZ_SECONDS={value:?}: not a number"))?,
        Err(_) => fuzz::CI_SECONDS,
    };
    if seconds > 0 {
        fuzz::fuzz(&workspace_root(), fuzz::TARGETS, seconds)?;
    }
    Ok(())
}

/// The scenario catalogue as CI runs it: every scenario on every core (`--jobs`), with a JUnit
/// report in `target/junit.xml` for the CI system's test view (the build `cargo test` made).
fn scenario_suite() -> Result<()> {
    let jobs = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .to_string();
    let target = workspace_root().join("target");
    let junit = target.join("junit.xml").display().to_string();
    let out = target.join("scenario-out").display().to_string();
    cargo(&[
        "run",
        "--quiet",
        "--all-features",
        "--package",
        "nulab",
        "--",
        "scenario",
        "run",
        "--quiet",
        "--jobs",
        &jobs,
        "--junit",
        &junit,
        "--out",
        &out,
    ])
}

/// The README's main job: two scenarios of the catalogue, narrated, with every output.
fn demo(extra: &[String]) -> Result<()> {
    let mut args: Vec<String> = [
        "run",
        "scenarios/happy-path-ipv4.toml",
        "scenarios/relay-forwards-to-dhcp-only.toml",
        "--out",
        "target/demo",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    args.extend(extra.iter().cloned());
    nulab("scenario", &args)
}

/// `nulab SUBCOMMAND ARGS`, built in release mode (a boot storm is thousands of boots).
fn nulab(subcommand: &str, extra: &[String]) -> Result<()> {
    let mut args = vec![
        "run",
        "--quiet",
        "--release",
        "--package",
        "nulab",
        "--",
        subcommand,
    ];
    args.extend(extra.iter().map(String::as_str));
    cargo(&args)
}

fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

pub(crate) fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .status()
        .with_context(|| format!("could not start `{cargo}`"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
