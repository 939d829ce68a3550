//! `nulab scenario run|list|bless|sweep`: the scenario runner, for users and CI systems without
//! the source tree (the catalogue is inside the binary; `cargo xtask scenario` calls this).
//!
//! A scenario is named by a file, a folder of files, or a catalogue name (`happy-path-ipv4`);
//! none names the whole catalogue. `run` prints each narrated transcript (not with `--quiet`
//! or `--json`) and writes every output (transcript, JSON, Mermaid, HTML, pcaps, logs) into
//! `--out/NAME`; many scenarios run on `--jobs` threads, `--shard K/N` takes a stable part of
//! them, `--junit FILE` writes a JUnit report and `--json` prints one summary object. `sweep`
//! runs scenarios over a range of seeds. A failure prints the command that replays it.
//!
//! Exit status: 0 every scenario passed; 1 an expectation was not met; 2 a scenario could not
//! be read or run, or the command line is wrong. With `--json`, errors are JSON too.

use std::io::{BufRead, IsTerminal};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use scenario::suite::{Percentiles, RunSummary, ScenarioSummary, Shard, wilson_95};
use scenario::{Loaded, RunResult};
use serde::Serialize;

use crate::output::{self, errln, out, outln};

/// The exit status of a scenario that could not be read or run, or a wrong command line.
const REFUSED: u8 = 2;

/// How long a run goes before it shows progress.
const PROGRESS_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug, Subcommand)]
pub enum ScenarioCommand {
    /// Run scenarios, print their transcripts and write their outputs (exit 0 all passed,
    /// 1 an expectation not met, 2 a scenario could not be read or run)
    Run(RunArgs),
    /// List the scenarios of the catalogue (or of a folder) with their titles
    List {
        /// A folder of scenario files; by default the catalogue inside the binary
        dir: Option<PathBuf>,
        /// One JSON object: the scenarios with their titles
        #[arg(long)]
        json: bool,
    },
    /// Run scenarios and write every text output as the new goldens (`NAME.golden`,
    /// `NAME.outputs/`; review the diff!)
    Bless {
        /// Scenario files; all of `scenarios/` when none is given
        files: Vec<PathBuf>,
        /// One JSON object: each golden file written, with whether it changed
        #[arg(long)]
        json: bool,
    },
    /// Run scenarios over a range of seeds (Monte-Carlo over their faults); stops at the first
    /// failing seed unless `--keep-going`
    Sweep(SweepArgs),
    /// Run one scenario over a grid of one parameter with many seeds per point, and write the
    /// reliability or capacity curve as curve.csv, curve.json, curve.svg and curve.png
    Curve(CurveArgs),
}

/// Which scenarios, and how to run them.
#[derive(Debug, Args)]
pub struct Selection {
    /// Scenario files, folders of them, or catalogue names; none: the whole catalogue
    scenarios: Vec<String>,
    /// Scenarios run at once (default: the number of cores)
    #[arg(long)]
    jobs: Option<NonZeroUsize>,
    /// Run only part K of N (`1/4`): a partition by scenario name that stays put when
    /// scenarios are added; the N parts together run everything once
    #[arg(long)]
    shard: Option<Shard>,
    /// One JSON summary object on standard output (errors are JSON too); no transcripts
    #[arg(long)]
    json: bool,
    /// No transcripts and no progress: only the outcomes
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    selection: Selection,
    /// Seed (default: each scenario's own)
    #[arg(long)]
    seed: Option<u64>,
    /// Where to write the outputs (one folder per scenario inside)
    #[arg(long, default_value = "nulab-out")]
    out: PathBuf,
    /// Pause between the phases of the transcript (press Enter to go on): for live demos
    #[arg(long)]
    step: bool,
    /// Also write a JUnit XML report here (one testcase per scenario)
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Where to run: `sim` (the simulator) or `netns` (the running Linux kernel: namespaces,
    /// bridges and real processes; needs root)
    #[arg(long, value_enum, default_value = "sim")]
    backend: crate::netns::Backend,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    selection: Selection,
    /// Seeds to try, `A..B` (B excluded)
    #[arg(long, value_parser = parse_range)]
    seeds: std::ops::Range<u64>,
    /// Run every seed, then report the pass rate (95% interval), unlock-time percentiles per
    /// outcome and the first failing seeds
    #[arg(long)]
    keep_going: bool,
}

#[derive(Debug, Args)]
pub struct CurveArgs {
    /// A scenario file or catalogue name
    scenario: String,
    /// What to vary and over which grid, `KEY=A..B:STEPS` (both ends included): `loss` (%, of
    /// the first [[fault]] with loss), `latency` (ms, of the first [[fault]] with latency),
    /// `cores` or `decrypt_time` (ms) of the WDS servers, `clients` (the first [[client]]'s count)
    #[arg(long)]
    vary: scenario::curve::Vary,
    /// Seeds per point (1..=N)
    #[arg(long, default_value_t = 20)]
    seeds: u64,
    /// Runs at once (default: the number of cores)
    #[arg(long)]
    jobs: Option<NonZeroUsize>,
    /// Where to write the four files
    #[arg(long, default_value = "nulab-curve")]
    out: PathBuf,
    /// One JSON object on standard output (the curve and the files written); errors are JSON too
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: ScenarioCommand) -> Result<ExitCode> {
    match cmd {
        ScenarioCommand::Run(args) => run_scenarios(&args),
        ScenarioCommand::List { dir, json } => list(dir.as_deref(), json),
        ScenarioCommand::Bless { files, json } => bless(files, json),
        ScenarioCommand::Sweep(args) => sweep(&args),
        ScenarioCommand::Curve(args) => curve(&args),
    }
}

/// Says why the command cannot go on (as [`output::JsonError`] with `--json`) and gives the
/// status for it.
fn refuse(json: bool, message: &str) -> Result<ExitCode> {
    if json {
        output::json_line(&output::JsonError {
            error: message.to_string(),
            exit_code: REFUSED,
        })?;
    } else {
        errln!("nulab: error: {message}");
    }
    Ok(ExitCode::from(REFUSED))
}

/// The scenarios `args` name, loaded (and checked), in order, before anything runs.
fn select(args: &[String]) -> Result<Vec<Loaded>, String> {
    if args.is_empty() {
        return scenario::load_whole_catalogue().map_err(|err| err.to_string());
    }
    let mut loaded = Vec::new();
    for arg in args {
        let path = Path::new(arg);
        if path.is_dir() {
            let files = scenario_files(path).map_err(|err| format!("{err:#}"))?;
            if files.is_empty() {
                return Err(format!(
                    "{}: no scenario (*.toml) in this folder: an empty suite would pass",
                    path.display()
                ));
            }
            for file in files {
                loaded.push(scenario::load(&file).map_err(|err| err.to_string())?);
            }
        } else {
            loaded.push(scenario::resolve(arg).map_err(|err| err.to_string())?);
        }
    }
    // Outputs go to a folder per name, and summaries are keyed by it.
    let mut names = std::collections::BTreeMap::new();
    for l in &loaded {
        if let Some(other) = names.insert(l.name.as_str(), l.argument()) {
            return Err(format!(
                "two scenarios are called {:?} ({other} and {}): their outputs would share a folder",
                l.name,
                l.argument()
            ));
        }
    }
    Ok(loaded)
}

fn jobs(selection: &Selection) -> usize {
    selection
        .jobs
        .map(NonZeroUsize::get)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
}

/// Progress on standard error: a bar with count, rate and ETA on a terminal once the work has
/// taken [`PROGRESS_AFTER`]; nothing off a terminal or with `--quiet`.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    shown: std::cell::Cell<bool>,
}

impl Progress {
    fn new(total: usize, what: &str, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(total as u64),
                indicatif::ProgressDrawTarget::hidden(),
            );
            bar.set_style(
                indicatif::ProgressStyle::with_template(&format!(
                    "{{bar:40}} {{pos}}/{{len}} {what} ({{per_sec}}, ETA {{eta}}) {{msg}}"
                ))
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Progress {
            bar,
            started: Instant::now(),
            shown: std::cell::Cell::new(false),
        }
    }

    /// `done` jobs finished, the last of them `last`; shows the bar once the run is long.
    fn tick(&self, done: u64, last: Option<&str>) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            if let Some(last) = last {
                bar.set_message(last.to_string());
            }
            if !self.shown.get() && self.started.elapsed() >= PROGRESS_AFTER {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                self.shown.set(true);
            }
        }
    }

    /// Prints on standard output without tearing the bar.
    fn print(&self, text: &str) -> Result<(), output::OutputError> {
        match &self.bar {
            Some(bar) => bar.suspend(|| out!("{text}")),
            None => out!("{text}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Runs `count` jobs on `threads` threads, handing each finished one (by index) to `done` in
/// the order they finish, and keeping `progress` up to date (`name` names a job); `done`
/// returning true ends the run after the jobs under way.
fn run_parallel<T: Send>(
    count: usize,
    threads: usize,
    progress: &Progress,
    name: impl Fn(usize) -> String,
    job: impl Fn(usize) -> T + Sync,
    mut done: impl FnMut(usize, T) -> bool,
) {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, count.max(1)) {
            let tx = tx.clone();
            let (next, stop, job) = (&next, &stop, &job);
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= count {
                        break;
                    }
                    if tx.send((index, job(index))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut finished = 0;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok((index, value)) => {
                    finished += 1;
                    progress.tick(finished, Some(&name(index)));
                    if done(index, value) {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                // A long job: the bar still appears, and its ETA moves.
                Err(mpsc::RecvTimeoutError::Timeout) => progress.tick(finished, None),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    });
}

/// One scenario run by `run`, as a worker hands it back.
struct Finished {
    summary: ScenarioSummary,
    transcript: Option<String>,
}

fn run_scenarios(args: &RunArgs) -> Result<ExitCode> {
    let sel = &args.selection;
    let started = Instant::now();
    let loaded = match select(&sel.scenarios) {
        Ok(loaded) => loaded,
        Err(message) => return refuse(sel.json, &message),
    };
    if loaded.is_empty() {
        return refuse(sel.json, "no scenario to run: an empty suite would pass");
    }
    let chosen: Vec<Loaded> = match sel.shard {
        Some(shard) => loaded
            .into_iter()
            .filter(|l| shard.contains(&l.name))
            .collect(),
        None => loaded,
    };
    if args.backend != crate::netns::Backend::Sim {
        return crate::netns::run(args.backend, &chosen, &args.out, args.seed, sel.json);
    }
    let threads = if args.step { 1 } else { jobs(sel) };
    let show_transcripts = !sel.quiet && !sel.json;
    let progress = Progress::new(chosen.len(), "scenarios", sel.quiet || sel.json);
    let mut pending: Vec<Option<Finished>> = (0..chosen.len()).map(|_| None).collect();
    let mut printed = 0;
    let mut failure: Option<anyhow::Error> = None;
    run_parallel(
        chosen.len(),
        threads,
        &progress,
        |index| chosen[index].name.clone(),
        |index| run_one(&chosen[index], args, show_transcripts),
        |index, outcome| {
            match outcome {
                Ok(done) => pending[index] = Some(done),
                Err(err) => {
                    failure = Some(err);
                    return true;
                }
            }
            // In the order given, as soon as each is ready.
            while let Some(Some(done)) = pending.get_mut(printed).map(Option::take) {
                if let Err(err) = report_one(args, &progress, &done) {
                    failure = Some(err);
                    return true;
                }
                pending[printed] = Some(done);
                printed += 1;
            }
            false
        },
    );
    progress.finish();
    if let Some(err) = failure {
        // A closed pipe ends quietly (main knows it); anything else is a run that failed.
        if output::is_broken_pipe(&err) {
            return Err(err);
        }
        return refuse(sel.json, &output::error_message(&err));
    }
    let summaries: Vec<ScenarioSummary> = pending
        .into_iter()
        .flatten()
        .map(|done| done.summary)
        .collect();
    let summary = RunSummary::new(summaries, sel.shard, started.elapsed());
    if let Some(path) = &args.junit {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && let Err(err) = std::fs::create_dir_all(parent)
        {
            return refuse(
                sel.json,
                &format!("cannot create {}: {err}", parent.display()),
            );
        }
        if let Err(err) = std::fs::write(path, summary.junit_xml()) {
            return refuse(sel.json, &format!("cannot write {}: {err}", path.display()));
        }
    }
    if sel.json {
        output::json(&summary)?;
    } else if summary.total != 1 {
        outln!(
            "{} scenario(s): {} passed, {} failed, {} could not run{}",
            summary.total,
            summary.total - summary.failed - summary.errors,
            summary.failed,
            summary.errors,
            sel.shard
                .map(|s| format!(" (shard {s})"))
                .unwrap_or_default()
        )?;
    }
    Ok(ExitCode::from(summary.exit_status()))
}

/// Runs one scenario and writes its outputs.
fn run_one(loaded: &Loaded, args: &RunArgs, transcript: bool) -> Result<Finished> {
    let started = Instant::now();
    let seed = args.seed.unwrap_or(loaded.scenario.seed);
    let dir = args.out.join(&loaded.name);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot write the outputs into {}", dir.display()))?;
    // The captures are written into the output directory as the run goes (no copy after).
    let result = match scenario::run_into(loaded, Some(seed), Some(&dir)) {
        Ok(result) => result,
        Err(err) => {
            // Nothing was written (a capture the run started is deleted with it): no empty
            // directory either. `remove_dir` leaves a directory with files in it alone.
            let _ = std::fs::remove_dir(&dir);
            return Ok(Finished {
                summary: ScenarioSummary::error(loaded, seed, started.elapsed(), err.to_string()),
                transcript: None,
            });
        }
    };
    scenario::write_outputs(&result, &dir)
        .with_context(|| format!("cannot write the outputs into {}", dir.display()))?;
    Ok(Finished {
        summary: ScenarioSummary::of(
            loaded,
            &result,
            started.elapsed(),
            Some(dir.display().to_string()),
        ),
        transcript: transcript.then(|| scenario::views::transcript(&result)),
    })
}

/// Prints one scenario's transcript (or steps through it) and outcome.
fn report_one(args: &RunArgs, progress: &Progress, done: &Finished) -> Result<()> {
    if args.selection.json {
        return Ok(());
    }
    if let Some(transcript) = &done.transcript {
        if args.step {
            step_through(transcript)?;
        } else {
            progress.print(transcript)?;
        }
    }
    let s = &done.summary;
    let mut text = match (&s.error, &s.output) {
        (Some(error), _) => format!("{}: ERROR {error}\n", s.name),
        (None, Some(dir)) => format!(
            "{}: {} ({} ms, outputs in {dir})\n",
            s.name,
            if s.passed { "PASSED" } else { "FAILED" },
            s.duration_ms
        ),
        (None, None) => format!(
            "{}: {}\n",
            s.name,
            if s.passed { "PASSED" } else { "FAILED" }
        ),
    };
    if !s.passed {
        for unmet in &s.unmet {
            text.push_str(&format!("  unmet: {unmet}\n"));
        }
        text.push_str(&format!("  seed {}; replay with: {}\n", s.seed, s.replay));
    }
    progress.print(&text)?;
    Ok(())
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
            out!("  (Enter to continue)")?;
            output::flush()?;
            let mut buf = String::new();
            stdin.lock().read_line(&mut buf)?;
            if phase.is_some() {
                last_phase = phase;
            }
        }
        outln!("{line}")?;
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

fn list(dir: Option<&Path>, json: bool) -> Result<ExitCode> {
    let loaded: Vec<Result<Loaded, String>> = match dir {
        None => scenario::catalogue::names()
            .into_iter()
            .map(|name| scenario::load_catalogue(name).map_err(|err| err.to_string()))
            .collect(),
        Some(dir) => {
            let files = match scenario_files(dir) {
                Ok(files) => files,
                Err(err) => return refuse(json, &format!("{err:#}")),
            };
            files
                .iter()
                .map(|file| scenario::load(file).map_err(|err| err.to_string()))
                .collect()
        }
    };
    if loaded.is_empty() {
        return refuse(json, "no scenario (*.toml) here: an empty suite would pass");
    }
    let bad = loaded.iter().filter(|l| l.is_err()).count();
    if json {
        #[derive(Serialize)]
        struct Entry {
            name: String,
            title: String,
        }
        #[derive(Serialize)]
        struct Listing {
            scenarios: Vec<Entry>,
            errors: Vec<String>,
        }
        let mut listing = Listing {
            scenarios: Vec::new(),
            errors: Vec::new(),
        };
        for entry in loaded {
            match entry {
                Ok(l) => listing.scenarios.push(Entry {
                    name: l.name,
                    title: l.scenario.title,
                }),
                Err(err) => listing.errors.push(err),
            }
        }
        output::json(&listing)?;
    } else {
        for entry in loaded {
            match entry {
                Ok(l) => outln!("{:<48} {}", l.name, l.scenario.title)?,
                Err(err) => outln!("{err}")?,
            }
        }
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(REFUSED)
    })
}

fn bless(files: Vec<PathBuf>, json: bool) -> Result<ExitCode> {
    let files = if files.is_empty() {
        match scenario_files(Path::new(scenario::catalogue::FOLDER)) {
            Ok(files) => files,
            Err(err) => return refuse(json, &format!("{err:#}")),
        }
    } else {
        files
    };
    if files.is_empty() {
        return refuse(json, "no scenario to bless");
    }
    #[derive(Serialize)]
    struct Blessed {
        golden: String,
        changed: bool,
    }
    let mut all = Vec::new();
    for file in files {
        let loaded = match scenario::load(&file) {
            Ok(loaded) => loaded,
            Err(err) => return refuse(json, &err.to_string()),
        };
        let result = match scenario::run(&loaded, None) {
            Ok(result) => result,
            Err(err) => return refuse(json, &err.to_string()),
        };
        if !result.passed() {
            return refuse(
                json,
                &format!(
                    "{}: expectations not met; fix the scenario or the code before blessing (replay: {})",
                    file.display(),
                    scenario::replay_command(&loaded, result.seed)
                ),
            );
        }
        let written = scenario::golden::bless(&file, &result)
            .with_context(|| format!("cannot write the goldens of {}", file.display()))?;
        let changed: Vec<String> = written
            .iter()
            .filter(|(_, changed)| *changed)
            .map(|(path, _)| path.display().to_string())
            .collect();
        if !json {
            if changed.is_empty() {
                outln!("{}: {} goldens unchanged", file.display(), written.len())?;
            } else {
                outln!("{}: updated {}", file.display(), changed.join(", "))?;
            }
        }
        all.extend(written.into_iter().map(|(path, changed)| Blessed {
            golden: path.display().to_string(),
            changed,
        }));
    }
    if json {
        #[derive(Serialize)]
        struct Report {
            goldens: Vec<Blessed>,
        }
        output::json(&Report { goldens: all })?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One run of a sweep, as a worker hands it back.
struct SeedRun {
    passed: bool,
    unmet: Vec<String>,
    outcomes: Vec<(String, Option<Duration>)>,
    error: Option<String>,
}

/// A sweep's figures for one scenario (`--json`).
#[derive(Debug, Serialize)]
struct SweepReport {
    name: String,
    scenario: String,
    runs: u64,
    passed: u64,
    pass_rate: f64,
    /// Wilson score interval at 95%.
    pass_rate_95: (f64, f64),
    /// Unlock times after power-on, per way the clients ended (every client of every seed).
    unlock_times: Vec<(String, Option<Percentiles>)>,
    /// The first failing seeds (at most 5), each with its replay command.
    failing_seeds: Vec<FailingSeed>,
}

#[derive(Debug, Serialize)]
struct FailingSeed {
    seed: u64,
    unmet: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    replay: String,
}

#[derive(Debug, Serialize)]
struct SweepSummary {
    passed: bool,
    /// Whether every seed ran (`--keep-going`, or no failure).
    complete: bool,
    seeds: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    shard: Option<String>,
    scenarios: Vec<SweepReport>,
}

fn sweep(args: &SweepArgs) -> Result<ExitCode> {
    let sel = &args.selection;
    let loaded = match select(&sel.scenarios) {
        Ok(loaded) => loaded,
        Err(message) => return refuse(sel.json, &message),
    };
    if loaded.is_empty() {
        return refuse(sel.json, "no scenario to sweep");
    }
    // Every (scenario, seed) pair is one job; a shard takes a stable part of the pairs.
    let pairs: Vec<(usize, u64)> = loaded
        .iter()
        .enumerate()
        .flat_map(|(i, _)| args.seeds.clone().map(move |seed| (i, seed)))
        .filter(|(i, seed)| {
            sel.shard
                .is_none_or(|shard| shard.contains(&format!("{}@{seed}", loaded[*i].name)))
        })
        .collect();
    let progress = Progress::new(pairs.len(), "runs", sel.quiet || sel.json);
    let mut runs: Vec<Option<SeedRun>> = (0..pairs.len()).map(|_| None).collect();
    let keep_going = args.keep_going;
    run_parallel(
        pairs.len(),
        jobs(sel),
        &progress,
        |index| {
            let (scenario, seed) = pairs[index];
            format!("{} seed {seed}", loaded[scenario].name)
        },
        |index| {
            let (scenario, seed) = pairs[index];
            sweep_one(&loaded[scenario], seed)
        },
        |index, run| {
            let stop = !run.passed && !keep_going;
            runs[index] = Some(run);
            stop
        },
    );
    progress.finish();
    let complete = runs.iter().all(Option::is_some);
    let mut reports = Vec::new();
    for (i, l) in loaded.iter().enumerate() {
        let mine: Vec<(u64, &SeedRun)> = pairs
            .iter()
            .zip(&runs)
            .filter(|((s, _), _)| *s == i)
            .filter_map(|((_, seed), run)| run.as_ref().map(|r| (*seed, r)))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let total = mine.len() as u64;
        let passed = mine.iter().filter(|(_, r)| r.passed).count() as u64;
        let mut by_outcome: std::collections::BTreeMap<String, Vec<Duration>> =
            std::collections::BTreeMap::new();
        for (_, run) in &mine {
            for (outcome, time) in &run.outcomes {
                let times = by_outcome.entry(outcome.clone()).or_default();
                times.extend(time);
            }
        }
        reports.push(SweepReport {
            name: l.name.clone(),
            scenario: l.argument(),
            runs: total,
            passed,
            pass_rate: passed as f64 / total as f64,
            pass_rate_95: wilson_95(passed, total),
            unlock_times: by_outcome
                .into_iter()
                .map(|(outcome, times)| (outcome, Percentiles::of(&times)))
                .collect(),
            failing_seeds: mine
                .iter()
                .filter(|(_, r)| !r.passed)
                .take(5)
                .map(|(seed, r)| FailingSeed {
                    seed: *seed,
                    unmet: r.unmet.clone(),
                    error: r.error.clone(),
                    replay: scenario::replay_command(l, *seed),
                })
                .collect(),
        });
    }
    let all_passed = reports.iter().all(|r| r.passed == r.runs) && complete;
    let errors = runs.iter().flatten().any(|r| r.error.is_some());
    let summary = SweepSummary {
        passed: all_passed,
        complete,
        seeds: format!("{}..{}", args.seeds.start, args.seeds.end),
        shard: sel.shard.map(|s| s.to_string()),
        scenarios: reports,
    };
    if sel.json {
        output::json(&summary)?;
    } else {
        print_sweep(&summary, keep_going)?;
    }
    Ok(ExitCode::from(if errors {
        REFUSED
    } else if summary.passed {
        0
    } else {
        1
    }))
}

fn sweep_one(loaded: &Loaded, seed: u64) -> SeedRun {
    match scenario::run(loaded, Some(seed)) {
        Ok(result) => seed_run(&result),
        Err(err) => SeedRun {
            passed: false,
            unmet: Vec::new(),
            outcomes: Vec::new(),
            error: Some(err.to_string()),
        },
    }
}

fn seed_run(result: &RunResult) -> SeedRun {
    SeedRun {
        passed: result.passed(),
        unmet: result
            .checks
            .iter()
            .filter(|c| !c.met)
            .map(ToString::to_string)
            .collect(),
        outcomes: scenario::suite::client_outcomes(result),
        error: None,
    }
}

fn print_sweep(summary: &SweepSummary, keep_going: bool) -> Result<()> {
    for report in &summary.scenarios {
        if !keep_going {
            match report.failing_seeds.first() {
                Some(failing) => {
                    outln!("{}: seed {} FAILS", report.name, failing.seed)?;
                    print_failing(failing)?;
                }
                None => outln!(
                    "{}: all {} seeds ({}) pass",
                    report.name,
                    report.runs,
                    summary.seeds
                )?,
            }
            continue;
        }
        let (lo, hi) = report.pass_rate_95;
        outln!(
            "{}: {}/{} seeds pass ({:.1}%, 95% interval {:.1}%–{:.1}%)",
            report.name,
            report.passed,
            report.runs,
            report.pass_rate * 100.0,
            lo * 100.0,
            hi * 100.0
        )?;
        for (outcome, times) in &report.unlock_times {
            match times {
                Some(p) => outln!(
                    "  {outcome}: {} unlock(s), p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    p.count,
                    p.p50_ms,
                    p.p90_ms,
                    p.p99_ms,
                    p.max_ms
                )?,
                None => outln!("  {outcome}")?,
            }
        }
        for failing in &report.failing_seeds {
            outln!("  seed {} FAILS", failing.seed)?;
            print_failing(failing)?;
        }
    }
    if !summary.complete {
        outln!("stopped at the first failure (--keep-going runs every seed)")?;
    }
    Ok(())
}

fn print_failing(failing: &FailingSeed) -> Result<()> {
    if let Some(error) = &failing.error {
        outln!("  error: {error}")?;
    }
    for unmet in &failing.unmet {
        outln!("  unmet: {unmet}")?;
    }
    outln!("  replay with: {}", failing.replay)?;
    Ok(())
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

/// `curve`: the grid run on every core, a table of the points, and the four files.
fn curve(args: &CurveArgs) -> Result<ExitCode> {
    if args.seeds == 0 {
        return refuse(args.json, "--seeds must be at least 1");
    }
    let loaded = match scenario::resolve(&args.scenario) {
        Ok(loaded) => loaded,
        Err(err) => return refuse(args.json, &err.to_string()),
    };
    let threads = args
        .jobs
        .map(NonZeroUsize::get)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get));
    let bar = (!args.json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} runs (ETA {eta})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let progress = |done: usize, total: usize| {
        if let Some(bar) = &bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    };
    let result = scenario::curve::run_curve(&loaded, &args.vary, args.seeds, threads, &progress);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let curve = match result {
        Ok(curve) => curve,
        Err(err) => return refuse(args.json, &err.to_string()),
    };
    let files = match scenario::curve::write(&curve, &args.out) {
        Ok(files) => files,
        Err(err) => return refuse(args.json, &format!("cannot write the curve: {err}")),
    };
    let errors: Vec<&String> = curve.points.iter().flat_map(|p| &p.errors).collect();
    if args.json {
        #[derive(Serialize)]
        struct CurveReport<'a> {
            curve: &'a scenario::curve::Curve,
            files: Vec<String>,
        }
        output::json_line(&CurveReport {
            curve: &curve,
            files: files.iter().map(|f| f.display().to_string()).collect(),
        })?;
    } else {
        outln!(
            "{} over {} ({} seed(s) per point)",
            curve.scenario,
            args.vary,
            curve.seeds
        )?;
        outln!(
            "{:>12}  {:>8}  {:>17}  {:>9}  {:>9}  {:>9}  {:>10}",
            curve.parameter.key(),
            "unlocked",
            "95% interval",
            "predicted",
            "p50 ms",
            "p99 ms",
            "all in 2s"
        )?;
        for p in &curve.points {
            let t = p.unlock_time.as_ref();
            outln!(
                "{:>12}  {:>7.1}%  {:>7.1}% - {:>5.1}%  {:>9}  {:>9}  {:>9}  {:>4}/{:<5}",
                p.x,
                p.success_rate * 100.0,
                p.success_low * 100.0,
                p.success_high * 100.0,
                p.analytic
                    .map_or("-".to_string(), |a| format!("{:.1}%", a * 100.0)),
                t.map_or("-".to_string(), |t| format!("{:.1}", t.p50_ms)),
                t.map_or("-".to_string(), |t| format!("{:.1}", t.p99_ms)),
                p.runs_all_within_2s,
                p.runs
            )?;
        }
        for file in &files {
            outln!("wrote {}", file.display())?;
        }
    }
    for err in &errors {
        errln!("nulab: a run failed: {err}");
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(REFUSED)
    })
}
