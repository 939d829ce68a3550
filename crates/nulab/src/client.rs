//! `nulab client`: one boot of a volume image against a real network, over `realnet::boot`
//! (which drives the sans-IO boot core). This module parses arguments, opens the image and the
//! TPM, prints the boot's events as they happen and its outcome, and saves the simulated TPM's
//! state (its failure counter survives the boot, as a real TPM's would).

use std::cell::RefCell;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use anyhow::Context;
use boot_client::boot::{BootConfig, BootEvent, BootResult, ConsoleInput, Keystrokes};
use boot_client::exchange::Transport;
use clap::Args;
use rand_core::RngCore;
use realnet::boot::{SharedTpm, ShellNote};
use tpm::{SimulatedTpm, Tpm};
use volume::Volume;

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The volume image (made by `nulab volume create`)
    #[arg(long)]
    volume: PathBuf,
    /// `simulated` (the state file IMAGE.tpm.json, or --tpm-state), or a TCTI string for a
    /// real TPM (`swtpm:host=127.0.0.1,port=2321`, `device:/dev/tpmrm0`; needs the
    /// `real-tpm` feature)
    #[arg(long, default_value = "simulated")]
    tpm: String,
    /// The simulated TPM's state file
    #[arg(long)]
    tpm_state: Option<PathBuf>,
    /// A network adapter, in the firmware's boot order (repeatable)
    #[arg(long = "interface", required = true)]
    interfaces: Vec<String>,
    /// An adapter whose DHCP the firmware has disabled (a management port with a static
    /// address): Network Unlock fails on it (repeatable)
    #[arg(long = "no-dhcp", value_name = "INTERFACE")]
    no_dhcp: Vec<String>,
    /// An adapter the firmware has no UEFI network driver for (repeatable)
    #[arg(long = "no-uefi-driver", value_name = "INTERFACE")]
    no_uefi_driver: Vec<String>,
    /// The PIN someone types at the TPM+PIN prompt (default: nobody is at the console)
    #[arg(long)]
    pin: Option<String>,
    /// Seconds after the prompt appears before the PIN is typed
    #[arg(long, default_value_t = 0.0)]
    pin_after: f64,
    /// Transport order of the unlock request: `v4`, `v6`, `v6,v4` or `v4,v6`
    #[arg(long, default_value = "v4")]
    order: String,
    /// Give up after this many seconds whatever the boot's own timers say
    #[arg(long, default_value_t = 120)]
    limit_secs: u64,
    /// Seed the boot's random choices (transaction ids, jitter) to replay a boot
    #[arg(long)]
    seed: Option<u64>,
    /// Also write the outcome as JSON, in the form of a scenario's result.json client entry
    /// (state, unlocked_by, at_seconds, failures), for `nulab scenario run --backend netns`
    #[arg(long, value_name = "FILE")]
    outcome_json: Option<PathBuf>,
}

fn parse_order(text: &str) -> Result<Vec<Transport>, String> {
    let mut order = Vec::new();
    for part in text.split(',') {
        let transport = match part.trim() {
            "v4" | "dhcpv4" => Transport::DhcpV4,
            "v6" | "dhcpv6" => Transport::DhcpV6,
            other => return Err(format!("`{other}`: expected v4 or v6")),
        };
        if order.contains(&transport) {
            return Err(format!("`{text}`: a transport appears twice"));
        }
        order.push(transport);
    }
    Ok(order)
}

fn tpm_state_path(args: &ClientArgs) -> PathBuf {
    args.tpm_state.clone().unwrap_or_else(|| {
        let mut name = args.volume.as_os_str().to_owned();
        name.push(".tpm.json");
        PathBuf::from(name)
    })
}

pub fn run(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let volume = Volume::open(&args.volume)
        .with_context(|| format!("cannot open the volume {}", args.volume.display()))?;
    let state_path = tpm_state_path(&args);
    let simulated = if args.tpm == "simulated" {
        let text = std::fs::read_to_string(&state_path)
            .with_context(|| format!("cannot read the TPM state {}", state_path.display()))?;
        let tpm = SimulatedTpm::from_json(&text)
            .with_context(|| format!("{}: not a simulated TPM state", state_path.display()))?;
        Some(Rc::new(RefCell::new(tpm)))
    } else {
        None
    };
    let tpm: Box<dyn Tpm> = match &simulated {
        Some(shared) => Box::new(SharedTpm(Rc::clone(shared))),
        None => real_tpm(&args.tpm)?,
    };
    let mut config = BootConfig {
        adapters: realnet::boot::boot_adapters(&args.interfaces)?,
        order: parse_order(&args.order).map_err(anyhow::Error::msg)?,
        ..BootConfig::default()
    };
    for adapter in &mut config.adapters {
        if args.no_dhcp.contains(&adapter.name) {
            adapter.facts.dhcp_enabled = false;
        }
        if args.no_uefi_driver.contains(&adapter.name) {
            adapter.facts.uefi_driver = false;
        }
    }
    if let Some(pin) = &args.pin {
        config.console.push(ConsoleInput {
            after: Duration::try_from_secs_f64(args.pin_after)
                .context("--pin-after takes a number of seconds")?,
            keys: Keystrokes::Pin(pin.clone()),
        });
    }
    let mut seed = [0u8; 32];
    match args.seed {
        Some(n) => seed[..8].copy_from_slice(&n.to_le_bytes()),
        None => rand_core::OsRng.fill_bytes(&mut seed),
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let end = runtime.block_on(realnet::boot::run_boot(
        config,
        volume,
        tpm,
        seed,
        Duration::from_secs(args.limit_secs),
        |event| println!("{:>8.3}s {}", event.at().as_secs_f64(), describe(event)),
        |note| match note {
            ShellNote::AddressConfigured { interface, address } => {
                println!("         shell: {address} configured on {interface}");
            }
            ShellNote::AddressNotConfigured { interface, why } => {
                println!("         shell: could not configure the lease on {interface}: {why}");
            }
            ShellNote::SocketFailed { interface, why } => {
                println!("         shell: no socket on {interface}: {why}");
            }
        },
    ))?;
    let outcome = end.outcome;
    drop(end.tpm);
    if let Some(shared) = simulated {
        std::fs::write(&state_path, shared.borrow().to_json())
            .with_context(|| format!("cannot write {}", state_path.display()))?;
    }
    if let Some(path) = &args.outcome_json {
        std::fs::write(path, outcome_json(&outcome))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    for failure in &outcome.failures {
        println!(
            "failed: {:?} at {:.3}s: {}",
            failure.protector,
            failure.at.as_secs_f64(),
            failure.reason
        );
    }
    match &outcome.result {
        BootResult::Unlocked { protector, at } => {
            println!(
                "unlocked-by: {} at {:.3}s",
                protector_name(*protector),
                at.as_secs_f64()
            );
            if let Some(label) = &end.label {
                println!("volume-label: {label}");
            }
            Ok(ExitCode::SUCCESS)
        }
        BootResult::Waiting { prompt, since } => {
            println!(
                "waiting: at {prompt} since {:.3}s (nobody typed)",
                since.as_secs_f64()
            );
            Ok(ExitCode::FAILURE)
        }
        BootResult::Stuck { at } => {
            println!("stuck: no protector left at {:.3}s", at.as_secs_f64());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The outcome as a scenario's `result.json` names a client's (without its name).
fn outcome_json(outcome: &boot_client::boot::BootOutcome) -> String {
    let (state, protector, at) = match &outcome.result {
        BootResult::Unlocked { protector, at } => (
            "unlocked",
            Some(protector.cli_name()),
            Some(at.as_secs_f64()),
        ),
        BootResult::Waiting { prompt, since } => (
            match prompt {
                boot_client::boot::Prompt::Pin => "waiting-for-pin",
                boot_client::boot::Prompt::RecoveryPassword => "waiting-for-recovery-password",
            },
            None,
            Some(since.as_secs_f64()),
        ),
        BootResult::Stuck { at } => ("stuck", None, Some(at.as_secs_f64())),
    };
    let failures: Vec<serde_json::Value> = outcome
        .failures
        .iter()
        .map(|f| {
            serde_json::json!({
                "protector": f.protector.cli_name(),
                "reason": f.reason,
                "at_seconds": f.at.as_secs_f64(),
            })
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&serde_json::json!({
        "state": state,
        "unlocked_by": protector,
        "at_seconds": at,
        "failures": failures,
    }))
    .unwrap_or_default();
    text.push('\n');
    text
}

/// The protector's manage-bde-like name, as `nulab volume` prints it (kebab case).
fn protector_name(kind: volume::ProtectorKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{kind:?}"))
}

fn describe(event: &BootEvent) -> String {
    match event {
        BootEvent::Dhcp { adapter, event, .. } => format!("adapter {adapter}: DHCP {event:?}"),
        BootEvent::Exchange { adapter, event, .. } => {
            format!("adapter {adapter}: unlock exchange {event:?}")
        }
        other => format!("{other:?}"),
    }
}

#[cfg(feature = "real-tpm")]
fn real_tpm(tcti: &str) -> anyhow::Result<Box<dyn Tpm>> {
    let tpm = tpm::RealTpm::connect(tcti, None)
        .with_context(|| format!("cannot open the TPM at {tcti}"))?;
    Ok(Box::new(tpm))
}

#[cfg(not(feature = "real-tpm"))]
fn real_tpm(tcti: &str) -> anyhow::Result<Box<dyn Tpm>> {
    anyhow::bail!(
        "--tpm {tcti}: this nulab was built without the `real-tpm` feature; use \
         --tpm simulated, or build with `--features real-tpm`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_orders() {
        assert_eq!(parse_order("v4"), Ok(vec![Transport::DhcpV4]));
        assert_eq!(
            parse_order("v6,v4"),
            Ok(vec![Transport::DhcpV6, Transport::DhcpV4])
        );
        assert!(parse_order("v4,v4").is_err());
        assert!(parse_order("ipx").is_err());
    }
}
