//! `nulab server`: the WDS Network Unlock provider on real interfaces (UDP 67 and 547), over
//! `realnet::wds`. This module only parses arguments, starts the shell and prints: the log
//! lines as they come (WDS debug-log style on stderr, and `--log FILE`), the counters per drop
//! reason at the end (on stdout, and appended to `--log`).
//!
//! With `--json`, standard output carries JSON lines instead, one object each, stable:
//! `{"type":"log","at_seconds":F,"level":"debug"|"info"|"error","message":S}` per log line,
//! then `{"type":"summary","received":N,"counters":{LABEL:N},"peak_queue":N,
//! "queue_capacity":N,"workers":N}` when the server stops.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use realnet::wds::{self, CertificateSource, Control, WdsConfig};
use unlock_server::provider::Level;

use crate::output::{self, errln, outln};

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// An interface to listen on (repeatable)
    #[arg(long = "interface", required = true)]
    interfaces: Vec<String>,
    /// A Network Unlock certificate with its private key, .pfx (repeatable)
    #[arg(long = "cert")]
    certs: Vec<PathBuf>,
    /// A folder of .pfx files, all loaded (repeatable)
    #[arg(long = "cert-dir")]
    cert_dirs: Vec<PathBuf>,
    /// The .pfx password
    #[arg(long)]
    password: Option<String>,
    /// The subnet policy file (bde-network-unlock.ini); re-read on SIGHUP
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Also append the log to FILE
    #[arg(long)]
    log: Option<PathBuf>,
    /// Leave out debug lines (one per dropped datagram)
    #[arg(long)]
    quiet: bool,
    /// Stop after this long (`90s`, `500ms`, `2m`, `1h`); default: until SIGINT or SIGTERM
    #[arg(long = "for", value_parser = crate::args::duration)]
    run_for: Option<Duration>,
    /// Threads for the RSA private-key operation (default: one per core)
    #[arg(long)]
    workers: Option<usize>,
    /// Requests that may wait for a worker before new ones are shed (default: 16 per worker)
    #[arg(long)]
    queue: Option<usize>,
    /// Do not listen on IPv6 (UDP 547)
    #[arg(long)]
    no_ipv6: bool,
    /// JSON lines on standard output: one per log line, then the summary
    #[arg(long)]
    json: bool,
}

pub fn run(args: ServerArgs) -> anyhow::Result<ExitCode> {
    let mut config = WdsConfig::new(
        args.interfaces,
        CertificateSource {
            files: args.certs,
            dirs: args.cert_dirs,
            password: args.password,
        },
    );
    config.policy = args.policy;
    config.ipv6 = !args.no_ipv6;
    if let Some(workers) = args.workers {
        config.workers = workers.max(1);
        config.queue_capacity = 16 * config.workers;
    }
    if let Some(queue) = args.queue {
        config.queue_capacity = queue.max(1);
    }
    let mut log_file = match &args.log {
        Some(path) => Some(
            File::options()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open the log file {}", path.display()))?,
        ),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let quiet = args.quiet;
    let json = args.json;
    let run_for = args.run_for;
    let started = std::time::Instant::now();
    // The first failed write to standard output (a closed pipe, a full disk) stops the server.
    let mut output_failed: Option<output::OutputError> = None;
    let report = runtime.block_on(async {
        let (tx, control) = tokio::sync::mpsc::channel(8);
        wds::forward_signals(tx.clone())?;
        if let Some(limit) = run_for {
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                let _ = tx.send(Control::Stop).await;
            });
        }
        wds::run_wds(config, control, |line| {
            let text = wds::format_log_line(line);
            if let Some(file) = log_file.as_mut() {
                // A log file that fills up must not stop the server: stderr still has it.
                let _ = writeln!(file, "{text}");
            }
            if quiet && line.level == Level::Debug {
                return;
            }
            if json {
                if output_failed.is_none()
                    && let Err(err) = log_json(line)
                {
                    output_failed = Some(err);
                    let _ = tx.try_send(Control::Stop);
                }
            } else {
                errln!("{text}");
            }
        })
        .await
    })?;
    if let Some(err) = output_failed {
        return Err(err.into());
    }
    let summary = report.summary_lines();
    if let Some(file) = log_file.as_mut() {
        let at = started.elapsed();
        for text in &summary {
            let line = unlock_server::provider::LogLine {
                at,
                level: Level::Info,
                message: format!("counter summary: {text}").into(),
            };
            let _ = writeln!(file, "{}", wds::format_log_line(&line));
        }
    }
    if json {
        output::json_line(&serde_json::json!({
            "type": "summary",
            "received": report.received,
            "counters": report.counters,
            "peak_queue": report.peak_queue,
            "queue_capacity": report.queue_capacity,
            "workers": report.workers,
        }))?;
    } else {
        outln!(
            "The WDS provider stopped after {:.1} s. What it counted:",
            started.elapsed().as_secs_f64()
        )?;
        for text in &summary {
            outln!("{text}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One log line as a JSON line (the `--json` schema in the module's documentation).
fn log_json(line: &unlock_server::provider::LogLine) -> Result<(), output::OutputError> {
    let level = match line.level {
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Error => "error",
    };
    let value = serde_json::json!({
        "type": "log",
        "at_seconds": line.at.as_secs_f64(),
        "level": level,
        "message": line.message.to_string(),
    });
    outln!("{value}")
}
