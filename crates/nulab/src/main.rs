//! `nulab`: the command line of the Network Unlock lab, for admins checking a certificate or a
//! capture before they deploy, and for teachers showing what happens on the wire.
//!
//! Each subcommand lives in its own module and only parses arguments, calls a library crate and
//! prints; `--json` gives machine output. Errors name the file (and line) they are about.

mod cert;
mod client;
mod demo;
mod packet;
mod packet_input;
mod packet_view;
mod policy;
mod recovery;
mod reply;
mod scenario;
mod server;
mod volume;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "nulab",
    version,
    about = "BitLocker Network Unlock lab: certificates, packets, replies, demos",
    long_about = "nulab simulates BitLocker Network Unlock for real: real DHCP packets, real \
                  X.509 certificates, real RSA and AES. These commands check what you are about \
                  to deploy and show what happens on the wire."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate or inspect Network Unlock certificates
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Decode Network Unlock packets from a capture, a hex dump or raw bytes
    #[command(subcommand)]
    Packet(packet::PacketCommand),
    /// Check a subnet policy file (bde-network-unlock.ini) and what it decides
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Seal or open a key protector reply (AES-256-CCM under the session key)
    #[command(subcommand)]
    Reply(reply::ReplyCommand),
    /// Build a BitLocker-style volume image, list its protectors, unlock it
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Make or check a 48-digit recovery password
    #[command(subcommand)]
    RecoveryPassword(volume::RecoveryPasswordCommand),
    /// Decode the real Windows capture, then run one whole unlock exchange with real crypto
    Demo(demo::DemoArgs),
    /// Run, list, bless or sweep scenarios in the deterministic simulator
    #[command(subcommand)]
    Scenario(scenario::ScenarioCommand),
    /// Run the Network Unlock provider (WDS) on real interfaces: UDP 67 and 547
    Server(server::ServerArgs),
    /// Boot once against a real network: DHCP, Network Unlock, fallback to the PIN
    Client(client::ClientArgs),
    /// Recovery-key escrow: the HTTPS recovery service, the client agent, the helpdesk
    #[command(subcommand)]
    Recovery(recovery::RecoveryCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Cert(cmd) => cert::run(cmd),
        Command::Packet(cmd) => packet::run(cmd),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Reply(cmd) => reply::run(cmd),
        Command::Demo(args) => demo::run(args),
        Command::Volume(cmd) => volume::run_volume(cmd),
        Command::RecoveryPassword(cmd) => volume::run_recovery_password(cmd),
        Command::Scenario(cmd) => scenario::run(cmd),
        Command::Server(args) => server::run(args),
        Command::Client(args) => client::run(args),
        Command::Recovery(cmd) => recovery::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("nulab: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Reads FILE, or standard input for `-`.
pub(crate) fn read_input(path: &std::path::Path) -> anyhow::Result<(String, Vec<u8>)> {
    use anyhow::Context;
    use std::io::Read;
    if path.as_os_str() == "-" {
        let mut data = Vec::new();
        std::io::stdin()
            .read_to_end(&mut data)
            .context("reading standard input")?;
        return Ok(("<stdin>".into(), data));
    }
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok((path.display().to_string(), data))
}
