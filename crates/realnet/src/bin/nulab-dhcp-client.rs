//! `nulab-dhcp-client`: one DORA on one real interface with nulab's UEFI-style DHCP client,
//! then the lease as `key=value` lines on stdout (exit 0), or why there is none on stderr
//! (exit 1). It does not configure the interface: it shows what the firmware would get.
//! Output goes through `realnet::output` (a closed pipe: quiet, status 141).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use realnet::output::{self, OutputError};

const PROGRAM: &str = "nulab-dhcp-client";

#[derive(Parser)]
#[command(about = "Get a DHCPv4 lease on an interface as UEFI firmware does, and print it")]
struct Args {
    /// The interface to run DHCP on (the socket is bound to it).
    #[arg(long)]
    interface: String,
    /// Give up after this long whatever the client's timers say (`90s`, `2m`).
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    limit: Duration,
    /// The wait after the first DISCOVER (`4s`, `500ms`), doubled after each attempt.
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
    initial_timeout: Duration,
    /// DISCOVERs (and REQUESTs) before giving up.
    #[arg(long, default_value_t = 4)]
    attempts: u32,
    /// Seed the transaction id and jitter (default: from the OS).
    #[arg(long)]
    seed: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = dhcp::ClientConfig {
        initial_timeout: args.initial_timeout,
        discover_attempts: args.attempts,
        request_attempts: args.attempts,
        ..dhcp::ClientConfig::default()
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            output::write_err(format_args!(
                "{PROGRAM}: error: {}",
                realnet::ShellError::Runtime(err)
            ));
            return ExitCode::FAILURE;
        }
    };
    let limit = args.limit;
    match runtime.block_on(realnet::run_client(
        &args.interface,
        config,
        limit,
        args.seed,
    )) {
        Ok(lease) => match print_lease(&lease) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => err.exit_code(PROGRAM),
        },
        Err(err) => {
            output::write_err(format_args!("{PROGRAM}: error: {err}"));
            ExitCode::FAILURE
        }
    }
}

/// The lease as `key=value` lines.
fn print_lease(lease: &dhcp::Lease) -> Result<(), OutputError> {
    output::write_line(format_args!("address={}", lease.address))?;
    output::write_line(format_args!("prefix={}", lease.network().prefix_len()))?;
    if let Some(router) = lease.router {
        output::write_line(format_args!("router={router}"))?;
    }
    let dns: Vec<String> = lease.dns.iter().map(ToString::to_string).collect();
    output::write_line(format_args!("dns={}", dns.join(",")))?;
    output::write_line(format_args!("server_id={}", lease.server_id))?;
    if let Some(time) = lease.lease_time {
        output::write_line(format_args!("lease_secs={}", time.as_secs()))?;
    }
    let codes: Vec<String> = lease.options.iter().map(|o| o.code.to_string()).collect();
    output::write_line(format_args!("options={}", codes.join(",")))
}
