//! `nulab doctor`: reads the captures and the WDS server's files an admin gathered (the seed's
//! troubleshooting list), hands them to the `doctor` crate and prints its report, as text that
//! reads like an admin's report or as one JSON object (`--json`, schema in README.md).
//!
//! Exit status: 0 when every client unlocked, 1 otherwise (or when no client is found), 2 when
//! an input cannot be read (an unreadable capture, a wrong `.pfx` password, a bad key log). A
//! broken `--policy` file is not an input error: it is a finding (`policy-invalid`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use doctor::{Capture, GivenCertificate, Inputs, KeyLog, Report, TextFile};

use crate::output::{self, errln, outln};
use crate::packet_input;

/// Input errors: the status the issue asks for.
const BAD_INPUT: u8 = 2;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Captures (pcap or pcapng; `-` for standard input) from the WDS server, a client or a relay
    #[arg(long = "pcap", value_name = "FILE", required = true, num_args = 1..)]
    pcaps: Vec<PathBuf>,
    /// The WDS server's subnet policy file, bde-network-unlock.ini
    #[arg(long, value_name = "INI")]
    policy: Option<PathBuf>,
    /// A certificate of the server's FVE_NKP store (.pfx, .cer or PEM); repeat for several
    #[arg(long = "cert", value_name = "FILE")]
    certs: Vec<PathBuf>,
    /// The password of the .pfx files given with --cert
    #[arg(long)]
    password: Option<String>,
    /// The certificate in the client's FVE_NKP store (.cer)
    #[arg(long, value_name = "FILE")]
    client_cert: Option<PathBuf>,
    /// The client's `manage-bde -protectors -get C:` output
    #[arg(long, value_name = "FILE")]
    protectors: Option<PathBuf>,
    /// The WDS debug log (Deployment-Services-Diagnostics/Debug, or a scenario's wds-*.log)
    #[arg(long, value_name = "FILE")]
    wds_log: Option<PathBuf>,
    /// Session keys of the exchanges, one `NKPU_SESSION THUMBPRINT KP-PREFIX SK` line each
    #[arg(long, value_name = "FILE")]
    keylog: Option<PathBuf>,
    /// One JSON object instead of text
    #[arg(long)]
    json: bool,
}

pub fn run(args: DoctorArgs) -> Result<ExitCode> {
    let inputs = match read_inputs(&args) {
        Ok(inputs) => inputs,
        Err(err) => return refuse(args.json, &output::error_message(&err)),
    };
    let report = doctor::diagnose(&inputs);
    if args.json {
        output::json(&report)?;
    } else {
        print_report(&report)?;
    }
    Ok(ExitCode::from(if report.all_unlocked() { 0 } else { 1 }))
}

/// Says why the inputs cannot be read (as `{"error", "exit_code"}` with `--json`), status 2.
fn refuse(json: bool, message: &str) -> Result<ExitCode> {
    if json {
        output::json_line(&output::JsonError {
            error: message.to_string(),
            exit_code: BAD_INPUT,
        })?;
    } else {
        errln!("nulab: error: {message}");
    }
    Ok(ExitCode::from(BAD_INPUT))
}

fn text_file(path: &Path) -> Result<TextFile> {
    let (file, bytes) = crate::args::read_input(path)?;
    let text = String::from_utf8(bytes).with_context(|| format!("{file}: not UTF-8 text"))?;
    Ok(TextFile { file, text })
}

fn certificate(path: &Path, password: Option<&str>) -> Result<GivenCertificate> {
    let bundle = certificates::files::load_bundle(path, password)?;
    Ok(GivenCertificate {
        file: path.display().to_string(),
        thumbprint: bundle.thumbprint(),
        subject: bundle.certificate.subject().to_string(),
    })
}

fn read_inputs(args: &DoctorArgs) -> Result<Inputs> {
    let mut captures = Vec::new();
    for path in &args.pcaps {
        let (name, bytes) = crate::args::read_input(path)?;
        let (_, packets) = packet_input::read_packets(&name, &bytes)?;
        captures.push(Capture {
            name,
            frames: packets.into_iter().map(|p| p.bytes).collect(),
        });
    }
    let certificates = if args.certs.is_empty() {
        None
    } else {
        Some(
            args.certs
                .iter()
                .map(|path| certificate(path, args.password.as_deref()))
                .collect::<Result<Vec<_>>>()?,
        )
    };
    let client_certificate = args
        .client_cert
        .as_deref()
        .map(|path| certificate(path, None))
        .transpose()?;
    let keylog = match &args.keylog {
        Some(path) => {
            let file = text_file(path)?;
            Some(KeyLog::parse(&file.file, &file.text)?)
        }
        None => None,
    };
    Ok(Inputs {
        captures,
        policy: args.policy.as_deref().map(text_file).transpose()?,
        certificates,
        client_certificate,
        protectors: args.protectors.as_deref().map(text_file).transpose()?,
        wds_log: args.wds_log.as_deref().map(text_file).transpose()?,
        keylog,
    })
}

fn print_report(report: &Report) -> Result<()> {
    let unlocked = report
        .clients
        .iter()
        .filter(|c| c.cause == doctor::Cause::Unlocked)
        .count();
    outln!(
        "Network Unlock diagnosis: {} client(s), {unlocked} unlocked",
        report.clients.len()
    )?;
    for client in &report.clients {
        outln!()?;
        outln!(
            "Client {}{}: {}",
            client.mac,
            client
                .address
                .as_ref()
                .map(|a| format!(" ({a})"))
                .unwrap_or_default(),
            client.cause
        )?;
        outln!("  {}", client.cause.meaning())?;
        outln!("  Evidence:")?;
        for line in &client.evidence {
            outln!("    {line}")?;
        }
        if !client.also_possible.is_empty() {
            let causes: Vec<&str> = client.also_possible.iter().map(|c| c.as_str()).collect();
            outln!("  Cannot rule out: {}", causes.join(", "))?;
        }
        for what in &client.settle_with {
            outln!("  Would settle it: {what}")?;
        }
    }
    if report.clients.is_empty() {
        outln!("No client: no DHCP traffic in the captures.")?;
    }
    outln!()?;
    outln!("Inputs:")?;
    for note in &report.notes {
        outln!("  {note}")?;
    }
    Ok(())
}
