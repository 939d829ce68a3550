//! `nulab scenario run|list|bless|sweep`: the scenario runner for users without the source
//! tree (`cargo xtask scenario` calls this). A run prints the narrated transcript and writes
//! every output (transcript, JSON, Mermaid, HTML, pcaps, logs) into `--out`; a failing run
//! prints the seed and the command that replays it and exits 1.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum ScenarioCommand {
    /// Run scenarios, print their transcripts and write their outputs
    Run(RunArgs),
    /// List the scenarios of a folder with their titles
    List {
        /// The folder of scenario files
        #[arg(default_value = "scenarios")]
        dir: PathBuf,
    },
    /// Run scenarios and write their transcripts as the new goldens (review the diff!)
    Bless {
        /// Scenario files; all of `scenarios/` when none is given
        files: Vec<PathBuf>,
    },
    /// Run one scenario over a range of seeds (Monte-Carlo over its faults); stops at the first
    /// failing seed and prints it
    Sweep {
        file: PathBuf,
        /// Seeds to try, `A..B` (B excluded)
        #[arg(long, value_parser = parse_range)]
        seeds: std::ops::Range<u64>,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scenario files (TOML)
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Seed (default: the scenario's own)
    #[arg(long)]
    seed: Option<u64>,
    /// Where to write the outputs (one folder per scenario inside)
    #[arg(long, default_value = "nulab-out")]
    out: PathBuf,
    /// Pause between the phases of the transcript (press Enter to go on): for live demos
    #[arg(long)]
    step: bool,
    /// Print only the outcome and the expectations, not the transcript
    #[arg(long)]
    quiet: bool,
}

pub fn run(cmd: ScenarioCommand) -> Result<ExitCode> {
    match cmd {
        ScenarioCommand::Run(args) => run_files(&args),
        ScenarioCommand::List { dir } => list(&dir),
        ScenarioCommand::Bless { files } => bless(files),
        ScenarioCommand::Sweep { file, seeds } => sweep(&file, seeds),
    }
}

fn run_files(args: &RunArgs) -> Result<ExitCode> {
    let mut failed = Vec::new();
    for file in &args.files {
        let loaded = scenario::load(file)?;
        let result = scenario::run(&loaded, args.seed)?;
        let transcript = scenario::views::transcript(&result);
        if args.step {
            step_through(&transcript)?;
        } else if !args.quiet {
            print!("{transcript}");
        }
        let dir = args.out.join(&result.name);
        let written = scenario::write_outputs(&result, &dir)
            .with_context(|| format!("cannot write the outputs into {}", dir.display()))?;
        println!(
            "{}: {} ({} files in {})",
            result.name,
            if result.passed() { "PASSED" } else { "FAILED" },
            written.len(),
            dir.display()
        );
        if !result.passed() {
            print_unmet(&result);
            println!(
                "  seed {}; replay with: {}",
                result.seed,
                scenario::replay_command(file, result.seed)
            );
            failed.push(result.name.clone());
        }
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_unmet(result: &scenario::RunResult) {
    for check in result.checks.iter().filter(|c| !c.met) {
        println!("  unmet: {check}");
    }
}

/// Prints the transcript, waiting for Enter whenever a new phase (or the next section) starts.
fn step_through(transcript: &str) -> Result<()> {
    let stdin = std::io::stdin();
    let mut last_phase = None;
    for line in transcript.lines() {
        let phase = line
            .split("[phase ")
            .nth(1)
            .and_then(|rest| rest.split(']').next())
            .map(str::to_string);
        let section = line.starts_with("== ");
        if (phase.is_some() && phase != last_phase) || section {
            print!("  (Enter to continue)");
            std::io::stdout().flush()?;
            let mut buf = String::new();
            stdin.lock().read_line(&mut buf)?;
            if phase.is_some() {
                last_phase = phase;
            }
        }
        println!("{line}");
    }
    Ok(())
}

fn scenario_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

fn list(dir: &Path) -> Result<ExitCode> {
    let mut bad = 0;
    for file in scenario_files(dir)? {
        match scenario::load(&file) {
            Ok(loaded) => println!("{:<48} {}", loaded.name, loaded.scenario.title),
            Err(err) => {
                bad += 1;
                println!("{err}");
            }
        }
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn bless(files: Vec<PathBuf>) -> Result<ExitCode> {
    let files = if files.is_empty() {
        scenario_files(Path::new("scenarios"))?
    } else {
        files
    };
    for file in files {
        let loaded = scenario::load(&file)?;
        let result = scenario::run(&loaded, None)?;
        if !result.passed() {
            bail!(
                "{}: expectations not met; fix the scenario or the code before blessing (replay: {})",
                file.display(),
                scenario::replay_command(&file, result.seed)
            );
        }
        let golden = scenario::golden_path(&file);
        let transcript = scenario::views::transcript(&result);
        let old = std::fs::read_to_string(&golden).unwrap_or_default();
        std::fs::write(&golden, &transcript)
            .with_context(|| format!("cannot write {}", golden.display()))?;
        println!(
            "{}: {}",
            golden.display(),
            if old == transcript {
                "unchanged"
            } else {
                "updated"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn sweep(file: &Path, seeds: std::ops::Range<u64>) -> Result<ExitCode> {
    let loaded = scenario::load(file)?;
    let bar = indicatif::ProgressBar::new(seeds.end.saturating_sub(seeds.start));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} seeds {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    for seed in seeds.clone() {
        let result = scenario::run(&loaded, Some(seed))?;
        bar.inc(1);
        if !result.passed() {
            bar.abandon();
            println!("{}: seed {seed} FAILS", loaded.name);
            print_unmet(&result);
            println!("  replay with: {}", scenario::replay_command(file, seed));
            return Ok(ExitCode::FAILURE);
        }
    }
    bar.finish();
    println!(
        "{}: all {} seeds ({}..{}) pass",
        loaded.name,
        seeds.end.saturating_sub(seeds.start),
        seeds.start,
        seeds.end
    );
    Ok(ExitCode::SUCCESS)
}

fn parse_range(text: &str) -> Result<std::ops::Range<u64>, String> {
    let (a, b) = text
        .split_once("..")
        .ok_or_else(|| format!("{text:?} is not a range like 1..100"))?;
    let start: u64 = a
        .trim()
        .parse()
        .map_err(|_| format!("{a:?} is not a number"))?;
    let end: u64 = b
        .trim()
        .parse()
        .map_err(|_| format!("{b:?} is not a number"))?;
    if end <= start {
        return Err(format!("the range {text:?} is empty"));
    }
    Ok(start..end)
}
