//! The recovery-escrow benchmark (issue 7's target): durable escrows per second over real TLS
//! on loopback, and their latency, from `recovery-service`'s `escrow_throughput` bench (one
//! process, two tokio worker threads shared by the server and its clients, the SQLite store on
//! the build's own disk with `synchronous=FULL` and group commit). Target: at least 2,000 per
//! second sustained with p99 under 50 ms. Measured with encryption at rest on (the default) and
//! off, for comparison, and written to BENCHMARKS.md.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::bench::Fields;

const MIN_RATE: f64 = 2000.0;
const MAX_P99_MS: f64 = 50.0;
const SECONDS: u32 = 10;
const CLIENTS: u32 = 64;

/// Runs the benchmark twice (at rest: AES-256-GCM, then plaintext) and writes its section.
pub fn run(root: &Path) -> Result<()> {
    let encrypted = measure(true)?;
    let plaintext = measure(false)?;
    let rate = |f: &Fields| f.value("rate").unwrap_or(0.0);
    let ms = |f: &Fields, key: &str| f.value(key).unwrap_or(f64::INFINITY);
    let row = |what: &str, f: &Fields| {
        format!(
            "| {what} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms |\n",
            f.get("escrows"),
            rate(f),
            ms(f, "p50_ms"),
            ms(f, "p99_ms"),
            ms(f, "max_ms"),
        )
    };
    let met = rate(&encrypted) >= MIN_RATE && ms(&encrypted, "p99_ms") < MAX_P99_MS;
    let mut section = String::new();
    let _ = write!(
        section,
        "\n## Recovery escrow over TLS (`cargo xtask escrow`)\n\n\
         `cargo bench -p recovery-service --bench escrow_throughput`: the recovery service \
         (axum over rustls, the SQLite store in WAL mode with `synchronous=FULL` and group \
         commit, on the build's own disk) and {CLIENTS} enrolled devices, each on its own \
         keep-alive HTTPS connection over loopback, escrowing one new recovery password per \
         request and waiting for the acknowledgement, which is sent only once the record is \
         committed. One process with two tokio worker threads: the clients' TLS shares the two \
         cores with the server's. {SECONDS} s measured after 1 s of warm-up.\n\n\
         | at rest | escrows | per second | p50 | p99 | max |\n|---|---:|---:|---:|---:|---:|\n\
         {}{}\n\
         Target: at least {MIN_RATE:.0} durable escrows per second with p99 under \
         {MAX_P99_MS:.0} ms (with encryption at rest, the default); this run **{}** it.\n",
        row("AES-256-GCM (default)", &encrypted),
        row("plaintext (`database = \"unencrypted\"`)", &plaintext),
        if met { "meets" } else { "MISSES" },
    );
    print!("{section}");
    crate::bench::write_section(root, &section)?;
    if !met {
        bail!(
            "escrow ran at {:.0}/s with p99 {:.2} ms; the target is {MIN_RATE:.0}/s with p99 under \
             {MAX_P99_MS:.0} ms",
            rate(&encrypted),
            ms(&encrypted, "p99_ms")
        );
    }
    Ok(())
}

fn measure(encrypted: bool) -> Result<Fields> {
    eprintln!(
        "escrow benchmark, {} at rest, {SECONDS} s",
        if encrypted { "encrypted" } else { "plaintext" }
    );
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .args([
            "bench",
            "--quiet",
            "--package",
            "recovery-service",
            "--bench",
            "escrow_throughput",
        ])
        .env("NULAB_BENCH_SECS", SECONDS.to_string())
        .env("NULAB_BENCH_CLIENTS", CLIENTS.to_string())
        .env_remove("NULAB_BENCH_UNENCRYPTED");
    if !encrypted {
        command.env("NULAB_BENCH_UNENCRYPTED", "1");
    }
    let stdout = crate::bench::stdout_of(
        &mut command,
        "`cargo bench -p recovery-service --bench escrow_throughput`",
    )?;
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("fields:"))
        .context("no `fields:` line in the escrow benchmark's output")?;
    let fields = Fields::parse(line);
    for key in ["escrows", "rate", "p50_ms", "p99_ms", "max_ms"] {
        if fields.value(key).is_none() {
            bail!("the escrow benchmark printed no `{key}`: {line}");
        }
    }
    Ok(fields)
}
