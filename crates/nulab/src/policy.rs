//! `nulab policy check FILE [--thumbprint T] [--ip ADDR] [--json]`: lint a
//! `bde-network-unlock.ini` and, given a certificate and an address, say what the provider does.
//!
//! Exit codes: 0 the file is valid (and, with `--thumbprint` and `--ip`, the client is allowed);
//! 1 the file is invalid (the provider stops answering everyone); 3 the client is denied.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use nkpu::Thumbprint;
use serde::Serialize;
use unlock_server::policy::{self, Decision, Problem};

use crate::output::{self, outln};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Report every problem of a subnet policy file with its line number, and the decision for
    /// a certificate and a client address
    Check {
        /// The `bde-network-unlock.ini` file, or `-` for standard input
        file: PathBuf,
        /// The certificate's SHA-1 thumbprint (40 hex digits, no spaces)
        #[arg(long, requires = "ip")]
        thumbprint: Option<String>,
        /// The client's address (IPv4 or IPv6)
        #[arg(long, requires = "thumbprint")]
        ip: Option<IpAddr>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Serialize)]
struct Report<'a> {
    file: String,
    valid: bool,
    errors: &'a [Problem],
    warnings: &'a [Problem],
    /// `allow`, `deny` or `provider-stops`; absent without `--thumbprint` and `--ip`.
    decision: Option<&'static str>,
    reason: Option<String>,
}

pub fn run(cmd: PolicyCommand) -> Result<ExitCode> {
    let PolicyCommand::Check {
        file,
        thumbprint,
        ip,
        json,
    } = cmd;
    let (name, data) = crate::read_input(&file)?;
    let text = String::from_utf8_lossy(&data);
    let lint = policy::lint(&text);
    let thumbprint = thumbprint
        .map(|t| {
            t.parse::<Thumbprint>()
                .with_context(|| format!("--thumbprint {t:?}"))
        })
        .transpose()?;
    let (decision, reason) = match (thumbprint, ip) {
        (Some(thumbprint), Some(ip)) => match policy::decide(Some(&lint), &thumbprint, ip) {
            Some(Decision::Allow(why)) => (Some("allow"), Some(why.to_string())),
            Some(Decision::Deny(why)) => (Some("deny"), Some(why.to_string())),
            None => (
                Some("provider-stops"),
                Some(format!(
                    "the policy file is invalid ({} error{}): the provider fails and answers no request",
                    lint.errors.len(),
                    if lint.errors.len() == 1 { "" } else { "s" }
                )),
            ),
        },
        _ => (None, None),
    };
    let report = Report {
        file: name.clone(),
        valid: lint.policy.is_some(),
        errors: &lint.errors,
        warnings: &lint.warnings,
        decision,
        reason,
    };
    if json {
        output::json(&report)?;
    } else {
        for problem in &lint.errors {
            outln!("{name}:{}: error: {}", problem.line, problem.message)?;
        }
        for problem in &lint.warnings {
            outln!("{name}:{}: warning: {}", problem.line, problem.message)?;
        }
        if report.valid {
            outln!("{name}: valid")?;
        } else {
            outln!(
                "{name}: invalid: Windows' provider would fail and stop answering every request"
            )?;
        }
        if let (Some(decision), Some(reason)) = (report.decision, &report.reason) {
            outln!("decision: {decision} ({reason})")?;
        }
    }
    Ok(match (report.valid, report.decision) {
        (false, _) => ExitCode::FAILURE,
        (true, Some("deny")) => ExitCode::from(3),
        _ => ExitCode::SUCCESS,
    })
}
