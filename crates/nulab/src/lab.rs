//! `nulab lab compose FILE --out DIR`: the docker lab, a Docker Compose project generated from
//! a scenario file (`kernel_lab::compose`), so that a lab is described in one place. The image
//! carries this very `nulab` and the `nulab-dhcp-server` beside it.

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
    },
}

pub fn run(command: LabCommand) -> Result<ExitCode> {
    let LabCommand::Compose {
        scenario,
        out,
        seed,
    } = command;
    let loaded = scenario::resolve(&scenario).map_err(|err| anyhow::anyhow!("{err}"))?;
    let nulab = std::env::current_exe().context("cannot find the nulab executable")?;
    let dhcp_server = nulab.with_file_name("nulab-dhcp-server");
    let options = kernel_lab::compose::ComposeOptions {
        out: out.clone(),
        nulab,
        dhcp_server,
        seed,
    };
    let written = kernel_lab::compose::compose(&loaded, &options)
        .map_err(|err| anyhow::anyhow!("{}: {err}", loaded.name))?;
    for file in &written {
        outln!("wrote {}", file.display())?;
    }
    outln!(
        "start it: cd {} && docker compose up --build (or docker-compose -p nulab up --build)",
        out.display()
    )?;
    Ok(ExitCode::SUCCESS)
}
