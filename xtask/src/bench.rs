//! `cargo xtask bench`: the benchmarks whose targets are ratios to OpenSSL, measured side by
//! side in one run on the same machine, and written to BENCHMARKS.md.
//!
//! 1. The unlock provider's per-request path (decode, RSA-2048 decrypt, seal, encode) on one
//!    core against `openssl speed rsa2048` private-key operations (signatures: the same RSA
//!    private-key exponentiation a decryption does), both per second of CPU time. Target: at
//!    least 90% of OpenSSL's rate. The two are measured in alternating short rounds and the best
//!    round of each is compared.
//! 2. Every core: the real server (`realnet::wds` on the loopback interface: UDP sockets, the
//!    receive loop, the bounded queue, one decrypt worker per core; `realnet` example
//!    `wds_rate`) under a closed-loop load against `openssl speed -elapsed -multi N rsa2048`,
//!    both per second of wall-clock time, N = the number of cores. The load generator runs on
//!    the same cores, so this side pays for its own clients. Needs root (`SO_BINDTODEVICE`).
//! 3. Overload: requests offered at three times the rate the server just managed, for a few
//!    seconds; what was answered, what was shed and counted (`drop.overloaded`), and the peak
//!    queue length, which must stay within the queue's bound.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The target ratio of the per-request path to OpenSSL's RSA-2048 private-key operations.
const TARGET_RATIO: f64 = 0.90;

/// Interleaved rounds of each side: the machine may be busy (builds, other jobs), and the best
/// of several short runs measured alternately is what each side can do when it has a core.
const ROUNDS: u32 = 5;

pub fn run(args: &[String]) -> Result<()> {
    let seconds = match args {
        [flag, value] if flag == "--seconds" => {
            value.parse().context("--seconds takes a number")?
        }
        [] => 2u32,
        _ => bail!(
            "usage: cargo xtask bench [--seconds N]   (N: seconds per round, {ROUNDS} rounds)"
        ),
    };
    crate::cargo(&[
        "build",
        "--release",
        "--package",
        "nkpu",
        "--example",
        "server_rate",
    ])?;
    crate::cargo(&[
        "build",
        "--release",
        "--package",
        "realnet",
        "--example",
        "wds_rate",
    ])?;
    let rate_binary = target_dir().join("release/examples/server_rate");
    let wds_binary = target_dir().join("release/examples/wds_rate");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut ours_runs = Vec::new();
    let mut openssl_runs = Vec::new();
    for round in 1..=ROUNDS {
        eprintln!("round {round}/{ROUNDS}");
        openssl_runs.push(openssl_rsa2048_sign_per_second(seconds)?);
        ours_runs.push(server_rate(&rate_binary, seconds)?);
    }
    let mut wds_runs = Vec::new();
    let mut openssl_multi_runs = Vec::new();
    for round in 1..=ROUNDS {
        eprintln!("every core, round {round}/{ROUNDS}");
        openssl_multi_runs.push(openssl_rsa2048_multi_per_second(seconds, cores)?);
        wds_runs.push(wds_throughput(&wds_binary, seconds, cores)?);
    }
    let wds_best = wds_runs.iter().copied().fold(0.0, f64::max);
    let openssl_multi_best = openssl_multi_runs.iter().copied().fold(0.0, f64::max);
    let overload_rate = (3.0 * wds_best).max(100.0);
    eprintln!("overload at {overload_rate:.0} requests/s");
    let overload = wds_overload(&wds_binary, OVERLOAD_SECONDS, cores, overload_rate)?;
    let best = |runs: &[f64]| runs.iter().copied().fold(0.0, f64::max);
    let (ours, openssl) = (best(&ours_runs), best(&openssl_runs));
    let ratio = ours / openssl;
    let verdict = if ratio >= TARGET_RATIO {
        "meets"
    } else {
        "MISSES"
    };
    let list = |runs: &[f64]| {
        runs.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let cpu = cpu_model();
    let report = format!(
        "# Benchmarks\n\n\
         Written by `cargo xtask bench`: {ROUNDS} rounds of {seconds} s, each side measured in turn \
         in the same run on the same machine; the best round of each is compared, so that load \
         from other jobs does not favour either side.\n\n\
         Machine: {cpu}, {cores} cores.\n\n\
         ## Unlock provider, per request, one core\n\n\
         | what | best per second | rounds |\n| --- | ---: | --- |\n\
         | nulab: decode request, RSA-2048 decrypt (aws-lc-rs), seal reply, encode (`nkpu` example `server_rate`), per second of CPU time | {ours:.0} | {ours_list} |\n\
         | `openssl speed -seconds {seconds} rsa2048`, private-key operations (sign/s, per second of CPU time) | {openssl:.0} | {openssl_list} |\n\
         | ratio | {pct:.1}% | |\n\n\
         Target: at least {target:.0}% of OpenSSL's rate on one core; this run **{verdict}** it.\n\n\
         The per-step costs (decode, RSA, seal, encode, open) are in `cargo bench -p nkpu --bench server_path`.\n\n\
         ## Every core: the real server\n\n\
         `nulab server`'s engine (`realnet::wds`) on the loopback interface: real UDP sockets, one receive loop that runs the cheap checks, a bounded queue, one RSA worker per core; a closed-loop load generator (a window of requests in flight, one more sent per reply) on the same machine.\n\n\
         | what | best per second (wall clock) | rounds |\n| --- | ---: | --- |\n\
         | nulab: `realnet` example `wds_rate throughput {seconds} {cores}` ({cores} workers), replies | {wds_best:.0} | {wds_list} |\n\
         | `openssl speed -elapsed -multi {cores} -seconds {seconds} rsa2048`, private-key operations | {openssl_multi_best:.0} | {openssl_multi_list} |\n\
         | ratio | {multi_pct:.1}% | |\n\
         | nulab on {cores} cores against nulab's per-core rate above | {scaling:.2}x | |\n\n\
         The load generator and the receive loop share the {cores} cores with the workers, and wall-clock time counts whatever else the machine runs; OpenSSL's children only sign.\n\n\
         ## Overload\n\n\
         Requests offered open-loop at three times the best rate above for {overload_seconds} s (`wds_rate overload`).\n\n\
         | what | count |\n| --- | ---: |\n\
         | offered | {offered} |\n\
         | received by the server | {received} |\n\
         | answered (replies the client got) | {answered} |\n\
         | shed and counted (`drop.overloaded`) | {overloaded} |\n\
         | peak queue length | {peak} of {capacity} ({workers} workers) |\n\n\
         Every request the server received was answered or counted: {accounted}. The queue stayed within its bound: {bounded}.\n",
        ours_list = list(&ours_runs),
        openssl_list = list(&openssl_runs),
        pct = ratio * 100.0,
        target = TARGET_RATIO * 100.0,
        wds_list = list(&wds_runs),
        openssl_multi_list = list(&openssl_multi_runs),
        multi_pct = 100.0 * wds_best / openssl_multi_best,
        scaling = wds_best / ours,
        overload_seconds = OVERLOAD_SECONDS,
        offered = overload.get("offered"),
        received = overload.get("received"),
        answered = overload.get("answered"),
        overloaded = overload.get("overloaded"),
        peak = overload.get("peak_queue"),
        capacity = overload.get("capacity"),
        workers = overload.get("workers"),
        accounted = yes_no(
            overload.get("received") == overload.get("replied") + overload.get("overloaded")
        ),
        bounded = yes_no(overload.get("peak_queue") <= overload.get("capacity")),
    );
    let path = crate::workspace_root().join("BENCHMARKS.md");
    std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    print!("{report}");
    if overload.get("peak_queue") > overload.get("capacity") {
        bail!("the decrypt queue grew past its bound under overload");
    }
    if ratio < TARGET_RATIO {
        bail!(
            "the per-request path runs at {:.1}% of OpenSSL's rate, below the {:.0}% target",
            ratio * 100.0,
            TARGET_RATIO * 100.0
        );
    }
    Ok(())
}

fn server_rate(binary: &std::path::Path, seconds: u32) -> Result<f64> {
    stdout_of(
        Command::new(binary).arg(seconds.to_string()),
        &binary.display().to_string(),
    )?
    .trim()
    .parse()
    .context("server_rate prints one number")
}

/// Runs `command` and returns what it printed; `what` names it in the errors, with its stderr
/// when it fails.
pub(crate) fn stdout_of(command: &mut Command, what: &str) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs one of recovery-service's benchmark programs (`cargo bench -p recovery-service --bench
/// BENCH`) with `env` as its only `NULAB_BENCH_*` settings and returns its `fields:` line,
/// checked to hold every key of `keys`.
pub(crate) fn recovery_bench_fields(
    bench: &str,
    env: &[(&str, String)],
    keys: &[String],
) -> Result<Fields> {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.args([
        "bench",
        "--quiet",
        "--package",
        "recovery-service",
        "--bench",
        bench,
    ]);
    // Exactly the settings given: none inherited from the caller's environment.
    for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("NULAB_BENCH_")) {
        command.env_remove(key);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let what = format!("`cargo bench -p recovery-service --bench {bench}`");
    let stdout = stdout_of(&mut command, &what)?;
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("fields:"))
        .with_context(|| format!("no `fields:` line in {what}'s output"))?;
    let fields = Fields::parse(line);
    if let Some(key) = keys.iter().find(|key| fields.value(key).is_none()) {
        bail!("{what} printed no `{key}`: {line}");
    }
    Ok(fields)
}

/// How long the overload phase offers requests.
const OVERLOAD_SECONDS: u32 = 3;

fn yes_no(yes: bool) -> &'static str {
    if yes { "yes" } else { "**no**" }
}

fn run_wds_rate(binary: &std::path::Path, args: &[String]) -> Result<String> {
    stdout_of(
        Command::new(binary).args(args),
        &format!(
            "{} {} (it needs root for SO_BINDTODEVICE)",
            binary.display(),
            args.join(" ")
        ),
    )
}

fn wds_throughput(binary: &std::path::Path, seconds: u32, workers: usize) -> Result<f64> {
    let text = run_wds_rate(
        binary,
        &[
            "throughput".into(),
            seconds.to_string(),
            workers.to_string(),
        ],
    )?;
    let fields = Fields::parse(&text);
    fields
        .value("rate")
        .context("wds_rate throughput prints rate=")
}

fn wds_overload(
    binary: &std::path::Path,
    seconds: u32,
    workers: usize,
    rate: f64,
) -> Result<Fields> {
    let text = run_wds_rate(
        binary,
        &[
            "overload".into(),
            seconds.to_string(),
            workers.to_string(),
            format!("{rate:.0}"),
        ],
    )?;
    let fields = Fields::parse(&text);
    for key in [
        "offered",
        "answered",
        "replied",
        "overloaded",
        "received",
        "peak_queue",
        "capacity",
        "workers",
    ] {
        fields
            .value(key)
            .with_context(|| format!("wds_rate overload prints {key}="))?;
    }
    Ok(fields)
}

/// `key=value` lines.
/// `key=value` numbers printed by a benchmark program, one or several to a line.
pub(crate) struct Fields(Vec<(String, f64)>);

impl Fields {
    pub(crate) fn parse(text: &str) -> Fields {
        Fields(
            text.split_whitespace()
                .filter_map(|token| {
                    let (k, v) = token.split_once('=')?;
                    Some((k.to_owned(), v.parse().ok()?))
                })
                .collect(),
        )
    }

    pub(crate) fn value(&self, key: &str) -> Option<f64> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// A count (0 when missing; `wds_overload` checked they are all there).
    pub(crate) fn get(&self, key: &str) -> u64 {
        self.value(key).unwrap_or(0.0) as u64
    }
}

fn openssl_rsa2048_multi_per_second(seconds: u32, cores: usize) -> Result<f64> {
    let out = stdout_of(
        Command::new("openssl").args([
            "speed",
            "-elapsed",
            "-multi",
            &cores.to_string(),
            "-seconds",
            &seconds.to_string(),
            "rsa2048",
        ]),
        &format!("`openssl speed -multi {cores} rsa2048` (install openssl)"),
    )?;
    parse_openssl_speed(&out)
}

/// Puts `section` (which starts with `\n## <heading>`) into BENCHMARKS.md in place of the
/// section of the same heading, or at the end when there is none, leaving the others as they are.
pub(crate) fn write_section(root: &std::path::Path, section: &str) -> Result<()> {
    let path = root.join("BENCHMARKS.md");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let text = replace_section(&text, section);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

fn replace_section(text: &str, section: &str) -> String {
    let heading = section
        .trim_start_matches('\n')
        .lines()
        .next()
        .unwrap_or_default();
    let Some(start) = text.find(&format!("\n{heading}\n")) else {
        return format!("{text}{section}");
    };
    let end = text[start + 1..]
        .find("\n## ")
        .map_or(text.len(), |at| start + 1 + at);
    format!("{}{section}{}", &text[..start], &text[end..])
}

pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"))
}

pub(crate) fn openssl_rsa2048_sign_per_second(seconds: u32) -> Result<f64> {
    let out = stdout_of(
        Command::new("openssl").args(["speed", "-seconds", &seconds.to_string(), "rsa2048"]),
        "`openssl speed rsa2048` (install openssl)",
    )?;
    parse_openssl_speed(&out)
}

/// sign/s from `openssl speed rsa2048` output.
fn parse_openssl_speed(text: &str) -> Result<f64> {
    // "rsa 2048 bits 0.000919s 0.000027s   1088.3  37545.7": sign/s is the third number.
    let line = text
        .lines()
        .find(|l| l.starts_with("rsa 2048 bits") || l.starts_with("rsa  2048 bits"))
        .context("no `rsa 2048 bits` line in `openssl speed` output")?;
    let numbers: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches('s').parse().ok())
        .collect();
    // [2048, sign time, verify time, sign/s, verify/s]
    numbers
        .get(3)
        .copied()
        .context("cannot read sign/s from `openssl speed` output")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_openssl_speed_output() {
        let text = "                  sign    verify    sign/s verify/s\nrsa 2048 bits 0.000919s 0.000027s   1088.3  37545.7\n";
        assert_eq!(parse_openssl_speed(text).unwrap(), 1088.3);
        assert!(parse_openssl_speed("nothing here").is_err());
        // `-multi 2` sums its children into the same table.
        let multi = "Got: +F2:2:2048:0.003367:0.000082 from 0\n                  sign    verify    sign/s verify/s\nrsa 2048 bits 0.003367s 0.000082s    297.0  12156.6\n";
        assert_eq!(parse_openssl_speed(multi).unwrap(), 297.0);
    }

    #[test]
    fn a_section_is_replaced_in_place_or_appended() {
        let text = "# Benchmarks\n\n## A\n\nold a\n\n## B\n\nold b\n";
        assert_eq!(
            replace_section(text, "\n## A\n\nnew a\n"),
            "# Benchmarks\n\n## A\n\nnew a\n\n## B\n\nold b\n"
        );
        assert_eq!(
            replace_section(text, "\n## B\n\nnew b\n"),
            "# Benchmarks\n\n## A\n\nold a\n\n## B\n\nnew b\n"
        );
        assert_eq!(
            replace_section(text, "\n## C\n\nc\n"),
            "# Benchmarks\n\n## A\n\nold a\n\n## B\n\nold b\n\n## C\n\nc\n"
        );
    }

    #[test]
    fn reads_fields_several_to_a_line() {
        let fields = Fields::parse("fields: escrows=120 rate=11418.5 p99_ms=12.09 (target >= 2)\n");
        assert_eq!(fields.get("escrows"), 120);
        assert_eq!(fields.value("rate"), Some(11418.5));
        assert_eq!(fields.value("p99_ms"), Some(12.09));
    }

    #[test]
    fn reads_wds_rate_fields() {
        let fields =
            Fields::parse("offered=300\nanswered=120\npeak_queue=32\nnoise\nrate=1234.5\n");
        assert_eq!(fields.get("offered"), 300);
        assert_eq!(fields.get("peak_queue"), 32);
        assert_eq!(fields.value("rate"), Some(1234.5));
        assert_eq!(fields.value("missing"), None);
        assert_eq!(fields.get("missing"), 0);
    }
}
