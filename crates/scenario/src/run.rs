//! Running a scenario: the world is built, the simulator runs to the end with the scheduled
//! server events applied at their times, and what happened is gathered into a [`RunResult`]
//! (client outcomes, server counters and logs, decoded packets) and checked against the
//! scenario's expectations. The views (transcript, diagrams, logs, JSON) are made from it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use boot_client::boot::{BootEvent, BootOutcome, BootResult, Prompt};
use netsim::SimTime;
use unlock_server::provider::Log;
use volume::ProtectorKind;

pub use crate::check::Check;

use crate::capture::SpilledCapture;
use crate::model::{Loaded, ScenarioError, TranscriptDetail};
use crate::recovery::{self, RecoveryResult};
use crate::wire::{self, Packet};
use crate::world::{self, Action, FaultWindow, World, sim_time};

/// What the process calls to hand memory it has freed back to the system: set once, by the
/// binary that chose the allocator (`nulab`'s jemalloc purges its arenas).
static RELEASE_FREED_MEMORY: OnceLock<fn()> = OnceLock::new();

/// Tells the runner how this process hands freed memory back. The runner calls it once the
/// world is built, and when the simulation is over and dropped, before the captures are
/// decoded for the views: an allocator keeps freed pages for a while (jemalloc ten seconds),
/// and a storm's simulation frees most of a gigabyte just before the views need a third of that
/// again, so without it the run's peak is both at once. The first hook set stays.
pub fn set_release_freed_memory(hook: fn()) {
    let _ = RELEASE_FREED_MEMORY.set(hook);
}

/// One client's boot.
#[derive(Debug, Clone)]
pub struct ClientResult {
    pub name: String,
    pub group: String,
    pub setup: Vec<String>,
    pub events: Vec<BootEvent>,
    pub outcome: Option<BootOutcome>,
    pub label: Option<String>,
    pub boot_at: Duration,
    /// The troubleshooting checks' material (`client_checks`).
    pub checks: Option<Box<world::ClientChecks>>,
}

/// One WDS server after the run.
#[derive(Debug, Clone)]
pub struct ServerResult {
    pub name: String,
    pub counters: Vec<(String, u64)>,
    pub log: Log,
}

/// A server event that happened.
#[derive(Debug, Clone)]
pub struct AppliedEvent {
    pub at: Duration,
    pub host: String,
    pub what: String,
}

/// Everything a run produced.
pub struct RunResult {
    pub name: String,
    pub title: String,
    pub teaches: String,
    pub seed: u64,
    pub duration: Duration,
    pub detail: TranscriptDetail,
    pub setup: Vec<String>,
    pub clients: Vec<ClientResult>,
    pub servers: Vec<ServerResult>,
    pub events: Vec<AppliedEvent>,
    /// Per segment: its name, its decoded packets and its capture file.
    pub segments: Vec<(String, Vec<Packet>, SpilledCapture)>,
    pub checks: Vec<Check>,
    /// The recovery-escrow lab, when the scenario has a recovery service.
    pub recovery: Option<RecoveryResult>,
    /// The scenario's faults and their windows.
    pub faults: Vec<FaultWindow>,
}

impl RunResult {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.met)
    }

    pub fn packets(&self) -> impl Iterator<Item = &Packet> {
        self.segments.iter().flat_map(|(_, packets, _)| packets)
    }
}

/// Runs `loaded` with `seed` (the scenario's own when `None`).
pub fn run(loaded: &Loaded, seed: Option<u64>) -> Result<RunResult, ScenarioError> {
    run_into(loaded, seed, None)
}

/// [`run`] for a run whose outputs go into `dir`: the segments' captures are written there
/// as the run goes, and [`crate::write_outputs`] into the same directory renames them into
/// place instead of copying them.
pub fn run_into(
    loaded: &Loaded,
    seed: Option<u64>,
    dir: Option<&Path>,
) -> Result<RunResult, ScenarioError> {
    let seed = seed.unwrap_or(loaded.scenario.seed);
    let World {
        mut sim,
        segments,
        dhcp_servers,
        wds,
        mut clients,
        events,
        setup,
        names,
        faults,
        ..
    } = world::build_capturing_into(loaded, seed, dir)?;
    // The threads that made the machines' histories freed their lists into arenas the
    // simulation does not allocate from (ten megabytes at 10,000 machines, kept ten seconds).
    if let Some(release) = RELEASE_FREED_MEMORY.get() {
        release();
    }
    let end = sim_time(loaded.scenario.duration);

    let mut applied = Vec::new();
    for event in &events {
        let at = sim_time(event.at);
        if at > sim.now() {
            sim.run_until(at);
        }
        let Some(server) = wds.iter().find(|w| w.name == event.host) else {
            // A DHCP server: only crash and restart apply (checked at build time).
            if let Some(dhcp) = dhcp_servers.iter().find(|d| d.name == event.host) {
                apply_host_event(&mut sim, dhcp.host, event.action, at);
            }
            applied.push(AppliedEvent {
                at: event.at,
                host: event.host.clone(),
                what: event.action.describe().to_string(),
            });
            continue;
        };
        let mut provider = server.provider.borrow_mut();
        match event.action {
            Action::StopWds => {
                provider.set_service_running(event.at, false);
                let _ = sim.stop_service_at(at, server.host, "WDSServer");
            }
            Action::StartWds => {
                provider.set_service_running(event.at, true);
                let _ = sim.start_service_at(at, server.host, "WDSServer");
            }
            Action::EnableDebugLog => provider.set_debug_log(event.at, true),
            Action::DisableDebugLog => provider.set_debug_log(event.at, false),
            Action::InstallFeature => provider.set_feature_installed(event.at, true),
            Action::UninstallFeature => provider.set_feature_installed(event.at, false),
            Action::UnregisterProvider => provider.set_registered(event.at, false),
            Action::RegisterProvider => provider.set_registered(event.at, true),
            Action::RemoveCertificateStore => {
                provider.remove_certificate_store();
                provider.note_error(
                    event.at,
                    "the FVE_NKP certificate store was removed: Network Unlock requests for its \
                     certificates can no longer be answered"
                        .into(),
                );
            }
            Action::Crash | Action::Restart => {
                apply_host_event(&mut sim, server.host, event.action, at)
            }
        }
        applied.push(AppliedEvent {
            at: event.at,
            host: event.host.clone(),
            what: event.action.describe().to_string(),
        });
    }
    sim.run_until(end);
    // Each fault's begin and end inside the run, on the timeline beside the server events.
    for fault in &faults {
        if fault.from > Duration::ZERO {
            applied.push(AppliedEvent {
                at: fault.from,
                host: fault.scope.clone(),
                what: format!("fault begins: {}", fault.description),
            });
        }
        if fault.to < loaded.scenario.duration {
            applied.push(AppliedEvent {
                at: fault.to,
                host: fault.scope.clone(),
                what: format!("fault ends: {}", fault.description),
            });
        }
    }
    applied.sort_by_key(|e| e.at);

    // The run is over: what the records hold moves into the result (a storm's boot events are
    // not copied).
    let client_results: Vec<ClientResult> = clients
        .iter_mut()
        .map(|c| {
            let mut record = c.record.borrow_mut();
            ClientResult {
                name: c.name.clone(),
                group: c.group.clone(),
                // Moved, not copied (the recovery lab below reads neither).
                setup: std::mem::take(&mut c.setup),
                events: std::mem::take(&mut record.events),
                outcome: record.outcome.take().map(|outcome| *outcome),
                label: record.label.take(),
                boot_at: c.boot_at,
                checks: c.checks.take(),
            }
        })
        .collect();
    let servers: Vec<ServerResult> = wds
        .iter()
        .map(|w| {
            let mut provider = w.provider.borrow_mut();
            ServerResult {
                name: w.name.clone(),
                counters: provider
                    .counters()
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect(),
                // Moved, not copied: the run is over and nothing reads the provider's log
                // again.
                log: provider.take_log(),
            }
        })
        .collect();
    let mut frame_counts = Vec::with_capacity(segments.len());
    for segment in &segments {
        frame_counts.push(sim.finish_capture(segment.id).map_err(|err| {
            loaded.error_at(0..0, format!("capturing segment {}: {err}", segment.name))
        })?);
    }
    // The simulation is over: its hosts (a storm's 10,000 machines with their disks and boot
    // state) go before the captures are read back for the views.
    drop(sim);
    if let Some(release) = RELEASE_FREED_MEMORY.get() {
        release();
    }
    let mut decoded: Vec<(String, Vec<Packet>, SpilledCapture)> = Vec::new();
    for (segment, count) in segments.into_iter().zip(frame_counts) {
        let unreadable = |err: netsim::CaptureError| {
            loaded.error_at(
                0..0,
                format!("reading the capture of segment {}: {err}", segment.name),
            )
        };
        let frames = segment.capture.frames().map_err(unreadable)?;
        // Allocated at the capture's size: the result keeps every segment's packets to the end
        // (0.3 GB at 100,000 clients).
        let packets = wire::decode(&segment.name, frames, count, &names).map_err(unreadable)?;
        decoded.push((segment.name, packets, segment.capture));
    }

    let mut result = RunResult {
        name: loaded.name.clone(),
        title: loaded.scenario.title.clone(),
        teaches: loaded.scenario.teaches.trim().to_string(),
        seed,
        duration: loaded.scenario.duration,
        detail: loaded.scenario.transcript,
        setup,
        clients: client_results,
        servers,
        events: applied,
        segments: decoded,
        checks: Vec::new(),
        recovery: None,
        faults,
    };
    result.checks = check(loaded, &result)?;
    // Each `[[client]]`'s unlock time (its first machine's), which starts its agent's cycles.
    let mut unlocked_at = BTreeMap::new();
    let mut groups_seen = std::collections::BTreeSet::new();
    for client in &result.clients {
        if !groups_seen.insert(client.group.as_str()) {
            continue;
        }
        if let Some(BootResult::Unlocked { at, .. }) = client.outcome.as_ref().map(|o| &o.result) {
            unlocked_at.insert(client.group.clone(), *at);
        }
    }
    if let Some(lab) = recovery::run(loaded, seed, &clients, &unlocked_at)? {
        for (machine, lines) in lab.setup {
            if let Some(client) = result.clients.iter_mut().find(|c| c.name == machine) {
                client.setup.extend(lines);
            }
        }
        result.checks.extend(lab.checks);
        result.recovery = Some(lab.result);
    }
    Ok(result)
}

fn apply_host_event(
    sim: &mut netsim::Simulation,
    host: netsim::HostId,
    action: Action,
    at: SimTime,
) {
    let _ = match action {
        Action::Crash => sim.crash_at(at, host),
        Action::Restart => sim.restart_at(at, host),
        _ => Ok(()),
    };
}

/// How an outcome reads in one line.
pub fn describe_outcome(outcome: Option<&BootOutcome>) -> String {
    match outcome.map(|o| &o.result) {
        Some(BootResult::Unlocked { protector, at }) => format!(
            "unlocked by {} at {}",
            protector.manage_bde_name(),
            world::seconds(*at)
        ),
        Some(BootResult::Waiting { prompt, since }) => {
            format!("waiting at {prompt} since {}", world::seconds(*since))
        }
        Some(BootResult::Stuck { .. }) => "cannot unlock: no protector left".into(),
        None => "still booting when the scenario ended".into(),
    }
}

fn check(loaded: &Loaded, result: &RunResult) -> Result<Vec<Check>, ScenarioError> {
    let s = &loaded.scenario;
    let mut checks = Vec::new();
    for expect in &s.expectations {
        let group = expect.client.get_ref();
        let members: Vec<&ClientResult> = result
            .clients
            .iter()
            .filter(|c| &c.group == group)
            .collect();
        if members.is_empty() {
            return Err(loaded.error_at(expect.client.span(), format!("no client {group:?}")));
        }
        if let Some(want) = &expect.unlocked_by {
            let kind = want.get_ref().parse::<ProtectorKind>().map_err(|_| {
                loaded.error_at(
                    want.span(),
                    format!(
                        "unknown protector {:?} (tpm, tpm-and-pin, network-unlock, recovery-password, startup-key)",
                        want.get_ref()
                    ),
                )
            })?;
            let wrong = offenders(&members, |c| {
                c.outcome.as_ref().and_then(BootOutcome::unlocked_by) == Some(kind)
            });
            checks.push(Check {
                expectation: format!("{group} is unlocked by {}", kind.manage_bde_name()),
                met: wrong.is_empty(),
                actual: summarise(&wrong),
            });
        }
        if let Some(want) = &expect.waiting_at {
            let prompt = match want.get_ref().as_str() {
                "pin" => Prompt::Pin,
                "recovery-password" => Prompt::RecoveryPassword,
                other => {
                    return Err(loaded.error_at(
                        want.span(),
                        format!("unknown prompt {other:?} (pin, recovery-password)"),
                    ));
                }
            };
            let wrong = offenders(&members, |c| {
                matches!(
                    c.outcome.as_ref().map(|o| &o.result),
                    Some(BootResult::Waiting { prompt: p, .. }) if *p == prompt
                )
            });
            checks.push(Check {
                expectation: format!("{group} waits at {prompt}"),
                met: wrong.is_empty(),
                actual: summarise(&wrong),
            });
        }
        if let Some(within) = expect.unlocked_within {
            let wrong = offenders(&members, |c| {
                matches!(
                    c.outcome.as_ref().map(|o| &o.result),
                    Some(BootResult::Unlocked { at, .. }) if at.saturating_sub(c.boot_at) <= within
                )
            });
            checks.push(Check {
                expectation: format!(
                    "{group} is unlocked within {} of power-on",
                    world::seconds(within)
                ),
                met: wrong.is_empty(),
                actual: summarise(&wrong),
            });
        }
        if let Some(failures) = &expect.failures {
            let mut wrong = Vec::new();
            for c in &members {
                let actual: Vec<(ProtectorKind, String)> = c
                    .outcome
                    .as_ref()
                    .map(|o| {
                        o.failures
                            .iter()
                            .map(|f| (f.protector, f.reason.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                let matches = actual.len() == failures.len()
                    && failures.iter().zip(&actual).all(|(want, (kind, reason))| {
                        let (want_kind, want_words) =
                            want.split_once(':').unwrap_or((want.as_str(), ""));
                        want_kind.trim() == kind.cli_name() && reason.contains(want_words.trim())
                    });
                if !matches {
                    wrong.push(format!(
                        "{}: {}",
                        c.name,
                        actual
                            .iter()
                            .map(|(k, r)| format!("{}: {r}", k.cli_name()))
                            .collect::<Vec<_>>()
                            .join(" | ")
                    ));
                }
            }
            checks.push(Check {
                expectation: format!(
                    "{group}'s earlier protectors failed as: {}",
                    if failures.is_empty() {
                        "(none)".to_string()
                    } else {
                        failures.join(" | ")
                    }
                ),
                met: wrong.is_empty(),
                actual: summarise(&wrong),
            });
        }
    }
    for expect in &s.server_expectations {
        let Some(server) = result
            .servers
            .iter()
            .find(|w| &w.name == expect.wds.get_ref())
        else {
            return Err(loaded.error_at(
                expect.wds.span(),
                format!("no WDS server {:?}", expect.wds.get_ref()),
            ));
        };
        for (counter, want) in &expect.counters {
            let got = server
                .counters
                .iter()
                .find(|(k, _)| k == counter.get_ref())
                .map_or(0, |(_, v)| *v);
            checks.push(Check {
                expectation: format!("{} counted {} = {want}", server.name, counter.get_ref()),
                met: got == *want,
                actual: (got != *want).then(|| format!("{got}")),
            });
        }
        // The log's lines in words, once for all of this server's word expectations (a
        // storm's log has half a million lines), and only when there is one.
        let worded: Vec<String> = if expect.log_contains.is_empty() && expect.log_lacks.is_empty() {
            Vec::new()
        } else {
            server.log.iter().map(|l| l.message.to_string()).collect()
        };
        for words in &expect.log_contains {
            let found = worded.iter().any(|text| text.contains(words));
            checks.push(Check {
                expectation: format!("{}'s log says {words:?}", server.name),
                met: found,
                actual: (!found).then(|| "not in the log".to_string()),
            });
        }
        for words in &expect.log_lacks {
            let found = server
                .log
                .iter()
                .zip(&worded)
                .find(|(_, text)| text.contains(words));
            checks.push(Check {
                expectation: format!("{}'s log does not say {words:?}", server.name),
                met: found.is_none(),
                actual: found
                    .map(|(l, text)| format!("logged at {}: {text}", world::seconds(l.at))),
            });
        }
    }
    for expect in &s.packet_expectations {
        let Some((name, packets, _)) = result
            .segments
            .iter()
            .find(|(name, _, _)| name == expect.segment.get_ref())
        else {
            return Err(loaded.error_at(
                expect.segment.span(),
                format!("no segment {:?}", expect.segment.get_ref()),
            ));
        };
        let counts = [
            (
                "Network Unlock requests",
                expect.nkpu_requests,
                packets.iter().filter(|p| p.is_unlock_request()).count(),
            ),
            (
                "Network Unlock replies",
                expect.nkpu_replies,
                packets.iter().filter(|p| p.is_unlock_reply()).count(),
            ),
            (
                "plain DHCP messages",
                expect.dhcp_messages,
                packets.iter().filter(|p| p.is_plain_dhcp()).count(),
            ),
        ];
        for (what, want, got) in counts {
            if let Some(want) = want {
                let got = got as u64;
                checks.push(Check {
                    expectation: format!("{want} {what} on {name}"),
                    met: got == want,
                    actual: (got != want).then(|| format!("{got}")),
                });
            }
        }
    }
    Ok(checks)
}

/// The clients of `members` for which `ok` fails, each with how its boot ended.
fn offenders(members: &[&ClientResult], ok: impl Fn(&ClientResult) -> bool) -> Vec<String> {
    members
        .iter()
        .filter(|c| !ok(c))
        .map(|c| format!("{}: {}", c.name, describe_outcome(c.outcome.as_ref())))
        .collect()
}

/// The first few offenders and how many in all.
fn summarise(wrong: &[String]) -> Option<String> {
    match wrong.len() {
        0 => None,
        1..=3 => Some(wrong.join("; ")),
        n => Some(format!("{}; and {} more", wrong[..3].join("; "), n - 3)),
    }
}
