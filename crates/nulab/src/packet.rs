//! `nulab packet decode FILE|-`: every DHCP field and option of every packet, and the Network
//! Unlock parts decoded; `--json` prints one JSON object per packet (JSON lines).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use crate::output::{self, errln, outln};
use crate::{packet_input, packet_view};

#[derive(Debug, Subcommand)]
pub enum PacketCommand {
    /// Decode a pcap/pcapng file, a hex dump (plain or Wireshark style) or raw bytes; each
    /// packet may be a whole Ethernet frame, an IP packet or a bare DHCP payload
    Decode {
        /// The input file, or `-` for standard input
        file: PathBuf,
        /// One JSON object per packet (JSON lines)
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: PacketCommand) -> Result<ExitCode> {
    let PacketCommand::Decode { file, json } = cmd;
    let (name, data) = crate::read_input(&file)?;
    let (_, packets) = packet_input::read_packets(&name, &data)?;
    let mut failures = 0;
    for (i, packet) in packets.iter().enumerate() {
        match packet_view::view(i + 1, &packet.origin, &packet.bytes) {
            Ok(view) if json => output::json_line(&view)?,
            Ok(view) => outln!("{}", view.to_text())?,
            Err(err) => {
                failures += 1;
                errln!("nulab: {name}: {}: no DHCP message: {err}", packet.origin);
            }
        }
    }
    Ok(if failures == packets.len() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
