//! `nulab client`: one boot of a volume image against a real network, over `realnet::boot`
//! (which drives the sans-IO boot core). This module parses arguments, opens the image and the
//! TPM, prints the boot's events as they happen and its outcome, and saves the simulated TPM's
//! state (its failure counter survives the boot, as a real TPM's would).
//!
//! By default each event is a BitLocker-style log line for people
//! (`   1.234s Information: [phase 2] adapter 1 (eth0) is bound to 192.168.78.120/24 …`) and the
//! outcome a sentence. With `--json`, standard output carries JSON lines instead, one object
//! each, stable: `{"type":"event","at_seconds":F,"level":"information"|"warning",
//! "adapter":S|null,"message":S}` per boot event, `{"type":"shell","interface":S,"message":S}`
//! for what the shell did to the OS (an address configured), then
//! `{"type":"outcome","state":S,"unlocked_by":S|null,"at_seconds":F|null,"failures":[…],
//! "volume_label":S|null}` (the `--outcome-json` object plus the label).
//!
//! The lines teach the boot in the simulator transcript's own words
//! (`boot_client::narration`, their one home): phases 1 to 3 and 6 to 9 with the values the
//! boot core computed (fingerprints of the TPM-released intermediate key, the
//! key protector, SK, CK, the combined key, the volume master key and the disk key, as
//! `BootEvent`s carry them) and, for phase 9, the label the boot service read from the
//! decrypted volume; nothing is recomputed here. Phases 4 and 5 happen on the server
//! (`nulab server` logs them).

use std::cell::RefCell;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use anyhow::Context;
use boot_client::boot::{BootConfig, BootEvent, BootResult, ConsoleInput, Keystrokes};
use boot_client::exchange::Transport;
use boot_client::narration::{self, Narrator};
use clap::Args;
use rand_core::RngCore;
use realnet::boot::{SharedTpm, ShellNote};
use tpm::{SimulatedTpm, Tpm};
use volume::Volume;

use crate::output::{self, outln};
use crate::volume::TpmChoice;

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The volume image (made by `nulab volume create`)
    #[arg(long)]
    volume: PathBuf,
    /// `simulated` (the state file IMAGE.tpm.json, or --tpm-state), or a TCTI string for a
    /// real TPM (`swtpm:host=127.0.0.1,port=2321`, `device:/dev/tpmrm0`; needs the
    /// `real-tpm` feature): the TPM `nulab volume create --tpm` sealed to
    #[arg(long, default_value = "simulated", value_name = "simulated|TCTI",
          value_parser = TpmChoice::parse)]
    tpm: TpmChoice,
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
    /// How long after the prompt appears the PIN is typed (`5s`, `500ms`)
    #[arg(long, default_value = "0s", value_parser = crate::args::duration)]
    pin_after: Duration,
    /// A console script: what someone types, one input a line, `AFTER pin PIN` or
    /// `AFTER recovery-password PASSWORD` (`3s pin 111111`; AFTER counts as --pin-after does;
    /// `#` starts a comment). In a file, so that no secret is on the command line; after
    /// --pin's input when both are given
    #[arg(long, value_name = "FILE")]
    console: Option<PathBuf>,
    /// Transport order of the unlock request: `v4`, `v6`, `v6,v4` or `v4,v6`
    #[arg(long, default_value = "v4")]
    order: String,
    /// Give up after this long whatever the boot's own timers say (`120s`, `2m`)
    #[arg(long, default_value = "2m", value_parser = crate::args::duration)]
    limit: Duration,
    /// Seed the boot's random choices (transaction ids, jitter) to replay a boot
    #[arg(long)]
    seed: Option<u64>,
    /// Also write the outcome as JSON, in the form of a scenario's result.json client entry
    /// (state, unlocked_by, at_seconds, failures), for `nulab scenario run --backend netns`
    #[arg(long, value_name = "FILE")]
    outcome_json: Option<PathBuf>,
    /// Append the exchange's session key to this Network Unlock key log (`NKPU_SESSION`
    /// lines, as `SSLKEYLOGFILE` for TLS), for Wireshark's dissector (`wireshark/nkpu.lua`)
    #[arg(long, value_name = "FILE")]
    keylog: Option<PathBuf>,
    /// JSON lines on standard output: the events, what the shell did, the outcome
    #[arg(long)]
    json: bool,
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

/// A console script (see `--console`): its inputs in order, or why a line is wrong, as
/// `NAME:LINE: ...`.
fn parse_console(name: &str, text: &str) -> Result<Vec<ConsoleInput>, String> {
    let mut inputs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let at = |why: String| format!("{name}:{}: {why}", n + 1);
        let mut words = line.splitn(3, char::is_whitespace);
        let (Some(after), Some(kind), Some(typed)) = (words.next(), words.next(), words.next())
        else {
            return Err(at(
                "expected `AFTER pin PIN` or `AFTER recovery-password PASSWORD`".into(),
            ));
        };
        let after = crate::args::duration(after).map_err(at)?;
        let typed = typed.trim().to_owned();
        let keys = match kind {
            "pin" => Keystrokes::Pin(typed),
            "recovery-password" => Keystrokes::RecoveryPassword(typed),
            other => {
                return Err(at(format!(
                    "`{other}`: an input is `pin` or `recovery-password`"
                )));
            }
        };
        inputs.push(ConsoleInput { after, keys });
    }
    Ok(inputs)
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
    let simulated = if args.tpm == TpmChoice::Simulated {
        let text = std::fs::read_to_string(&state_path)
            .with_context(|| format!("cannot read the TPM state {}", state_path.display()))?;
        let tpm = SimulatedTpm::from_json(&text)
            .with_context(|| format!("{}: not a simulated TPM state", state_path.display()))?;
        Some(Rc::new(RefCell::new(tpm)))
    } else {
        None
    };
    let tpm: Box<dyn Tpm> = match (&simulated, &args.tpm) {
        (Some(shared), _) => Box::new(SharedTpm(Rc::clone(shared))),
        (None, TpmChoice::Real(tcti)) => crate::volume::real_tpm(tcti)?,
        (None, TpmChoice::Simulated) => anyhow::bail!("the simulated TPM was not opened"),
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
            after: args.pin_after,
            keys: Keystrokes::Pin(pin.clone()),
        });
    }
    if let Some(path) = &args.console {
        let (name, bytes) = crate::args::read_input(path)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("{name}: the console script is not UTF-8"))?;
        config
            .console
            .extend(parse_console(&name, &text).map_err(anyhow::Error::msg)?);
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
    let names = args.interfaces.clone();
    let json = args.json;
    // The first failed write to standard output is returned once the boot ends (the boot
    // itself, and the TPM state it leaves, must not be cut short by a closed pipe).
    let mut output_failed: Option<output::OutputError> = None;
    let mut report = |result: Result<(), output::OutputError>| {
        if let (Err(err), None) = (result, &output_failed) {
            output_failed = Some(err);
        }
    };
    let report = std::cell::RefCell::new(&mut report);
    let mut key_log_written: Option<anyhow::Result<()>> = None;
    let end = runtime.block_on(realnet::boot::run_boot(
        config,
        volume,
        tpm,
        seed,
        args.limit,
        |event| {
            if let (BootEvent::NetworkUnlockReady { released, .. }, Some(path)) =
                (event, &args.keylog)
            {
                key_log_written = Some(append_key_log(path, &released.key_log));
            }
            // The boot's one wording (the simulator's transcript tells it alike), with the
            // interfaces' names and the whole thumbprint (no setup section shows it here).
            let narrator = Narrator {
                adapter_names: &names,
                full_thumbprint: true,
            };
            let Some(told) = narrator.narrate(event) else {
                return;
            };
            let adapter = told
                .adapter
                .map(|i| names.get(i).cloned().unwrap_or_else(|| format!("#{i}")));
            (report.borrow_mut())(print_event(
                json,
                event.at(),
                told.level.as_str(),
                adapter,
                &told.text,
            ));
        },
        |note| {
            let (interface, message) = match note {
                ShellNote::AddressConfigured { interface, address } => {
                    (interface, format!("{address} configured on {interface}"))
                }
                ShellNote::AddressNotConfigured { interface, why } => (
                    interface,
                    format!("could not configure the lease on {interface}: {why}"),
                ),
                ShellNote::SocketFailed { interface, why } => {
                    (interface, format!("no socket on {interface}: {why}"))
                }
            };
            (report.borrow_mut())(if json {
                let value = serde_json::json!({
                    "type": "shell",
                    "interface": interface,
                    "message": message,
                });
                outln!("{value}")
            } else {
                outln!("          shell: {message}")
            });
        },
    ))?;
    let outcome = end.outcome;
    // Phase 9: what the boot service read from the decrypted volume, once it unlocked.
    if let (BootResult::Unlocked { at, .. }, Some(label)) = (&outcome.result, &end.label) {
        (report.borrow_mut())(print_event(
            json,
            *at,
            "Information",
            None,
            &narration::phase_9(label),
        ));
    }
    drop(end.tpm);
    let tpm_state = simulated.map(|shared| shared.borrow().to_json());
    save_boot_records(
        tpm_state
            .as_deref()
            .map(|json| (state_path.as_path(), json)),
        args.outcome_json
            .as_deref()
            .map(|path| (path, outcome_json(&outcome))),
        key_log_written,
    )?;
    // The TPM's state is saved first: a closed pipe must not lose its failure counter.
    if let Some(err) = output_failed {
        return Err(err.into());
    }
    let unlocked = matches!(outcome.result, BootResult::Unlocked { .. });
    if json {
        let mut value = outcome_value(&outcome);
        value["type"] = "outcome".into();
        value["volume_label"] = end.label.clone().into();
        output::json_line(&value)?;
    } else {
        for failure in &outcome.failures {
            outln!(
                "The {} protector did not unlock the volume ({:.3} s): {}",
                failure.protector.manage_bde_name(),
                failure.at.as_secs_f64(),
                failure.reason
            )?;
        }
        match &outcome.result {
            BootResult::Unlocked { protector, at } => {
                outln!(
                    "BitLocker unlocked the operating system volume with the {} protector \
                     ({}) at {:.3} s.",
                    protector.manage_bde_name(),
                    protector.cli_name(),
                    at.as_secs_f64()
                )?;
                if let Some(label) = &end.label {
                    outln!("The data decrypts: the volume label reads {label}.")?;
                }
            }
            BootResult::Waiting { prompt, since } => {
                outln!(
                    "The volume is still locked: {prompt} has been waiting since {:.3} s \
                     and nobody typed.",
                    since.as_secs_f64()
                )?;
            }
            BootResult::Stuck { at } => {
                outln!(
                    "The volume is still locked: no protector was left to try at {:.3} s.",
                    at.as_secs_f64()
                )?;
            }
        }
    }
    Ok(if unlocked {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One boot event line: `   1.234s Information: message`, or its JSON object.
fn print_event(
    json: bool,
    at: Duration,
    level: &str,
    adapter: Option<String>,
    message: &str,
) -> Result<(), output::OutputError> {
    let at = at.as_secs_f64();
    if json {
        let value = serde_json::json!({
            "type": "event",
            "at_seconds": at,
            "level": level.to_lowercase(),
            "adapter": adapter,
            "message": message,
        });
        outln!("{value}")
    } else {
        outln!("{at:>8.3}s {level}: {message}")
    }
}

/// Writes what the boot leaves behind — the simulated TPM's state (`tpm_state`: path and
/// JSON), then the `--outcome-json` file — and only then reports a key log that could not be
/// written (`key_log`): a failed key log must not lose the TPM's failure counter, so a wrong
/// PIN still counts toward lockout.
fn save_boot_records(
    tpm_state: Option<(&std::path::Path, &str)>,
    outcome: Option<(&std::path::Path, String)>,
    key_log: Option<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    if let Some((path, json)) = tpm_state {
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some((path, json)) = outcome {
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    key_log.unwrap_or(Ok(()))
}

/// Appends the exchange's `NKPU_SESSION` line (the boot core wrote it) to the key log at
/// `path`, made if missing and then readable by its owner only (it holds the session key
/// SK): Wireshark's Network Unlock dissector reads it to show each exchange's session key.
fn append_key_log(path: &std::path::Path, line: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open the key log {}", path.display()))?;
    writeln!(file, "{line}").with_context(|| format!("cannot write {}", path.display()))
}

/// The outcome as a scenario's `result.json` names a client's (without its name), pretty.
fn outcome_json(outcome: &boot_client::boot::BootOutcome) -> String {
    let mut text = serde_json::to_string_pretty(&outcome_value(outcome)).unwrap_or_default();
    text.push('\n');
    text
}

/// The outcome as a JSON object: `state`, `unlocked_by`, `at_seconds`, `failures`.
fn outcome_value(outcome: &boot_client::boot::BootOutcome) -> serde_json::Value {
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
    serde_json::json!({
        "state": state,
        "unlocked_by": protector,
        "at_seconds": at,
        "failures": failures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_log_that_cannot_be_written_still_saves_the_tpm_state_and_the_outcome() {
        let dir = tempfile::tempdir().unwrap();
        // A directory cannot be opened for appending, even by root.
        let key_log = append_key_log(dir.path(), "NKPU_SESSION 00 11 22");
        assert!(key_log.is_err());
        let state = dir.path().join("disk.img.tpm.json");
        let outcome = dir.path().join("outcome.json");
        let err = save_boot_records(
            Some((&state, "{\"failures\":1}")),
            Some((&outcome, "{\"state\":\"locked\"}\n".to_owned())),
            Some(key_log),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("key log"), "{err:#}");
        assert_eq!(
            std::fs::read_to_string(&state).unwrap(),
            "{\"failures\":1}",
            "the TPM's failure counter is saved"
        );
        assert_eq!(
            std::fs::read_to_string(&outcome).unwrap(),
            "{\"state\":\"locked\"}\n"
        );
    }

    #[test]
    fn a_new_key_log_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.log");
        append_key_log(&path, "NKPU_SESSION 00 11 22").unwrap();
        append_key_log(&path, "NKPU_SESSION 33 44 55").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
    }

    #[test]
    fn a_console_script_is_read_in_order_and_a_bad_line_is_named() {
        let script = "# the user\n3s pin 111111\n\n4s pin 246810  # the right one\n\
                      30s recovery-password 111111-222222-333333-444444-555555-666666-777777-888888\n";
        let inputs = parse_console("console.txt", script).unwrap();
        let got: Vec<(Duration, String)> = inputs
            .iter()
            .map(|i| {
                let typed = match &i.keys {
                    Keystrokes::Pin(pin) => format!("pin {pin}"),
                    Keystrokes::RecoveryPassword(p) => format!("recovery {p}"),
                };
                (i.after, typed)
            })
            .collect();
        assert_eq!(
            got,
            [
                (Duration::from_secs(3), "pin 111111".to_owned()),
                (Duration::from_secs(4), "pin 246810".to_owned()),
                (
                    Duration::from_secs(30),
                    "recovery 111111-222222-333333-444444-555555-666666-777777-888888".to_owned()
                ),
            ]
        );
        let bad = parse_console("console.txt", "3s pin 1\n4s password 2\n").unwrap_err();
        assert!(bad.starts_with("console.txt:2: "), "{bad}");
        let short = parse_console("c", "3s pin\n").unwrap_err();
        assert!(short.starts_with("c:1: "), "{short}");
        let unitless = parse_console("c", "3 pin 1\n").unwrap_err();
        assert!(unitless.contains("no unit"), "{unitless}");
    }

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
