//! `cargo xtask`: the project's chores, in Rust rather than shell scripts.
//!
//! - `cargo xtask test`: the CI gate. Installs the system tools the tests use when they are
//!   missing (apt-get, as root), then runs `cargo fmt --check`, clippy with `-D warnings` and
//!   every test of the workspace.
//! - `cargo xtask demo`: the README's main job, something real to look at.
//! - `cargo xtask bench`: the benchmarks, beside `openssl speed rsa2048` measured in the same run.

mod bench;
mod system;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test           fmt --check, clippy -D warnings, every test (installs missing system tools)
  demo           decode the real Windows Network Unlock capture and run an unlock exchange
  bench          criterion benchmarks beside `openssl speed rsa2048`; writes BENCHMARKS.md
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
        "bench" => bench::run(rest),
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
    cargo(&test_args)
}

/// The README's main job: decode the real capture, then generate a certificate and run one
/// request/reply exchange through the real codec and crypto.
fn demo(extra: &[String]) -> Result<()> {
    let mut args = vec![
        "run",
        "--quiet",
        "--release",
        "--package",
        "nulab",
        "--",
        "demo",
    ];
    args.extend(extra.iter().map(String::as_str));
    cargo(&args)
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
