//! `nulab server`: the WDS Network Unlock provider on real interfaces (UDP 67 and 547), over
//! `realnet::wds`. This module only parses arguments, starts the shell and prints: the log
//! lines as they come (stderr, and `--log FILE`), the counters per drop reason at the end.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use realnet::wds::{self, CertificateSource, Control, WdsConfig};

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
    /// Stop after this long (`90`, `90s`, `500ms`, `2m`, `1h`); default: until SIGINT or SIGTERM
    #[arg(long = "for", value_parser = parse_duration)]
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
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a number with s, ms, m or h"))?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (s, ms, m, h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|err| format!("`{text}`: {err}"))
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
    let run_for = args.run_for;
    let report = runtime.block_on(async move {
        let (tx, control) = tokio::sync::mpsc::channel(8);
        wds::forward_signals(tx.clone())?;
        if let Some(limit) = run_for {
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
            if !(quiet && line.level == unlock_server::provider::Level::Debug) {
                eprintln!("{text}");
            }
        })
        .await
    })?;
    println!("received {}", report.received);
    for (label, count) in &report.counters {
        println!("{label} {count}");
    }
    println!(
        "peak-queue {} of {} ({} workers)",
        report.peak_queue, report.queue_capacity, report.workers
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("2d").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("").is_err());
    }
}
