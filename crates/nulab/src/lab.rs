//! `nulab lab compose FILE --out DIR`: the docker lab, a Docker Compose project generated from
//! a scenario file (`kernel_lab::compose`), so that a lab is described in one place. The image
//! carries this very `nulab` and the `nulab-dhcp-server` beside it. Each lab gets a run id
//! (`--lab-id`, random by default) that names its bridges and image.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::output::outln;

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Write a Docker Compose lab (compose file, Dockerfile, scripts, certificates, volumes)
    /// generated from a scenario file or catalogue name
    Compose {
        /// A scenario file or catalogue name
        scenario: String,
        /// The project folder to write
        #[arg(long, default_value = "nulab-lab")]
        out: PathBuf,
        /// Seed (default: the scenario's own)
        #[arg(long)]
        seed: Option<u64>,
        /// The lab's run id, 1 to 6 lowercase letters and digits: its host bridges are
        /// `nlID-SEGMENT` and its image `nulab-lab:ID` (default: a random one)
        #[arg(long, value_parser = lab_id)]
        lab_id: Option<String>,
    },
}

fn lab_id(text: &str) -> Result<String, String> {
    if kernel_lab::compose::valid_lab_id(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}`: 1 to {} lowercase letters and digits",
            kernel_lab::compose::MAX_LAB_ID
        ))
    }
}

/// A random run id of five hexadecimal digits.
fn random_lab_id() -> String {
    use rand_core::RngCore;
    format!("{:05x}", rand_core::OsRng.next_u32() & 0xf_ffff)
}

pub fn run(command: LabCommand) -> Result<ExitCode> {
    let LabCommand::Compose {
        scenario,
        out,
        seed,
        lab_id,
    } = command;
    let lab_id = lab_id.unwrap_or_else(random_lab_id);
    let loaded = scenario::resolve(&scenario).map_err(|err| anyhow::anyhow!("{err}"))?;
    let nulab = std::env::current_exe().context("cannot find the nulab executable")?;
    let dhcp_server = nulab.with_file_name("nulab-dhcp-server");
    let options = kernel_lab::compose::ComposeOptions {
        out: out.clone(),
        nulab,
        dhcp_server,
        seed,
        lab_id: lab_id.clone(),
    };
    let written = kernel_lab::compose::compose(&loaded, &options)
        .map_err(|err| anyhow::anyhow!("{}: {err}", loaded.name))?;
    for file in &written {
        outln!("wrote {}", file.display())?;
    }
    outln!("lab id {lab_id}: bridges nl{lab_id}-*, image nulab-lab:{lab_id}")?;
    outln!(
        "start it: cd {} && docker compose -p nulab-{lab_id} up --build \
         (compose v1: docker-compose -p nulab-{lab_id} up --build); \
         stop it: docker compose -p nulab-{lab_id} down -v --rmi all",
        out.display()
    )?;
    Ok(ExitCode::SUCCESS)
}
