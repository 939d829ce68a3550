//! Recovery-key escrow in a scenario (issue 7): the recovery service, the site's management
//! points and each client's BitLocker management agent, run in `recovery_service::sim`'s
//! [`RecoveryLab`] (real rustls over in-memory pipes, a real SQLite store, a virtual clock)
//! beside the boots of the network simulation.
//!
//! The agent escrows the client's own volume: the one the scenario's boot unlocks, with the
//! same recovery password and key ID. So one scenario tells the whole story: a PCR change sends
//! the user to the recovery screen, the helpdesk reads the password out of the recovery
//! service by the key ID's first 8 characters, the user types it, Windows starts, and the
//! agent learns of the disclosure at its next check-in, rotates the password and re-escrows.
//!
//! Time. The lab's clock is the scenario's: the boot at `0s` is 2021-04-06 08:00:00 UTC. The
//! agent's first cycle ran when BitLocker was enabled, a day earlier (the transcript's setup
//! tells it); then it runs when Windows has started after the boot (30 s after the unlock,
//! nulab's choice: the time for the agent service to start), and every `check_every` after
//! that until the scenario ends. `[[event]]`s that switch a management point's face or a
//! client's trusted roots, and `[[helpdesk]]` requests, happen at their times; when a cycle's
//! retries ran past one of them, it happens when the lab gets there (its clock never goes
//! back). The helpdesk and the boot do not feed each other: the console types the volume's
//! own recovery password (`recovery_password = "correct"`), and the checks prove that it is
//! the one the helpdesk disclosed, by unlocking the volume with the disclosed text.

use std::collections::BTreeMap;
use std::time::Duration;

use recovery_service::record::{KeyId, MaterialKind};
use recovery_service::sim::{
    CertificateIssuer, DEFAULT_START_MS, DatabaseView, EscrowSummary, LabConfig, MpFace,
    Protection, RecoveryLab, SimError, Trust,
};
use recovery_service::store::{AuditEntry, HelpdeskRole};
use recovery_service::wire::{RecoverBody, RotationReason};

use crate::check::Check;
use crate::model::recovery::{
    CertificateSpec, DatabaseMode, FaceSpec, HelpdeskSpec, LabAction, TrustSpec, is_recovery_event,
    lab_action, present,
};
use crate::model::{EventSpec, Loaded, ScenarioError};
use crate::world::ClientMachine;

/// One day: BitLocker was enabled (and first escrowed) this long before the boot.
const ENABLED_BEFORE_BOOT_MS: i64 = 24 * 60 * 60 * 1000;

/// The agent's first cycle after the boot: once Windows has started and the agent service is
/// up (nulab's figure; the real agent starts with the ConfigMgr client).
const AGENT_START_AFTER_UNLOCK: Duration = Duration::from_secs(30);

/// What [`run`] gives the scenario's run: the lab's result, its checks, and the lines each
/// client machine's setup gains (the escrow when BitLocker was enabled), by machine name.
pub struct LabRun {
    pub result: RecoveryResult,
    pub checks: Vec<Check>,
    pub setup: Vec<(String, Vec<String>)>,
}

/// Everything the recovery lab produced, for the views and the checks.
#[derive(Debug, Clone)]
pub struct RecoveryResult {
    pub encrypted: bool,
    /// Lines about the management points a scenario configured beyond their face (their
    /// certificate's issuer, their protection); empty for the older scenarios, whose
    /// transcripts are unchanged.
    pub management_points: Vec<String>,
    /// The lab's clock at the scenario's `0s`, milliseconds since the Unix epoch.
    pub boot_ms: i64,
    /// Lines of the timeline: scenario time, who, what.
    pub timeline: Vec<(Duration, String, String)>,
    pub agents: Vec<AgentResult>,
    pub helpdesk: Vec<HelpdeskResult>,
    pub database: DatabaseView,
    pub audit: Vec<AuditEntry>,
}

/// One client's agent.
#[derive(Debug, Clone)]
pub struct AgentResult {
    pub client: String,
    /// The recovery service URLs as the admin listed the management points.
    pub urls: Vec<String>,
    pub trust: TrustSpec,
    /// The recovery password's key ID when BitLocker was enabled.
    pub key_id: KeyId,
    /// The recovery password the volume was given (the one its recovery screen accepts).
    pub recovery_password: String,
    pub cycles: Vec<Cycle>,
    /// `BitLockerManagementHandler.log`, CMTrace lines.
    pub handler_log: Vec<String>,
    /// Each rotation the service asked for, as carried out and checked.
    pub rotations: Vec<CheckedRotation>,
}

/// One rotation of an agent: old key ID, new key ID, the service's reason for it, whether the
/// old password still unlocks after it.
pub type CheckedRotation = (KeyId, KeyId, RotationReason, bool);

/// One escrow cycle of an agent.
#[derive(Debug, Clone)]
pub struct Cycle {
    pub at_ms: i64,
    /// Why it ran ("BitLocker enabled", "Windows started", "status check").
    pub why: &'static str,
    pub summary: EscrowSummary,
}

/// One helpdesk request.
#[derive(Debug, Clone)]
pub struct HelpdeskResult {
    pub at_ms: i64,
    pub operator: String,
    pub role: HelpdeskRole,
    pub client: String,
    pub query: String,
    pub reason: String,
    /// What was disclosed (key ID, the text), or why not.
    pub outcome: Result<(KeyId, String), String>,
    pub audit_seq: Option<i64>,
    pub rotation_requested: bool,
    /// Whether the disclosed text unlocks the client's volume.
    pub unlocks: Option<bool>,
}

impl RecoveryResult {
    /// The scenario time of a lab time (the history before the boot reads as `0s`).
    pub fn scenario_time(&self, at_ms: i64) -> Duration {
        Duration::from_millis(u64::try_from(at_ms - self.boot_ms).unwrap_or(0))
    }

    pub fn agent(&self, client: &str) -> Option<&AgentResult> {
        self.agents.iter().find(|a| a.client == client)
    }
}

/// Something the lab does at a scenario time.
enum Op<'a> {
    Event(&'a EventSpec, LabAction),
    /// "Encrypt recovery data in the database" is turned on (`[recovery] encrypt_at`).
    EncryptDatabase,
    Helpdesk(&'a HelpdeskSpec),
    Cycle(usize, &'static str),
}

impl Op<'_> {
    /// Events before requests before cycles at the same instant.
    fn rank(&self) -> u8 {
        match self {
            Op::Event(..) | Op::EncryptDatabase => 0,
            Op::Helpdesk(_) => 1,
            Op::Cycle(..) => 2,
        }
    }
}

/// Runs the recovery lab of `loaded` after its boots: `machines` as the world built them, and
/// when each `[[client]]` (by name) was unlocked, which starts its agent's cycles. `None` for a
/// scenario without a recovery service.
pub fn run(
    loaded: &Loaded,
    seed: u64,
    machines: &[ClientMachine],
    unlocked_at: &BTreeMap<String, Duration>,
) -> Result<Option<LabRun>, ScenarioError> {
    let s = &loaded.scenario;
    if !present(s) {
        return Ok(None);
    }
    let mut machine_setup = Vec::new();
    let lab_error = lab_failure::<SimError>(loaded);
    let boxed_error = lab_failure::<Box<SimError>>(loaded);
    let recovery = s.recovery.clone().unwrap_or_default();
    let encrypted = recovery.database == DatabaseMode::Encrypted;
    let mut lab = RecoveryLab::new(LabConfig {
        seed,
        start_ms: DEFAULT_START_MS,
        encrypted,
        ..LabConfig::default()
    })
    .map_err(&lab_error)?;
    let boot_ms = DEFAULT_START_MS + ENABLED_BEFORE_BOOT_MS;
    let mut timeline = Vec::new();
    let mut urls_by_mp = Vec::new();
    let mut management_points = Vec::new();
    for mp in &s.management_points {
        let protection = mp.protection.as_ref().map(|p| p.get_ref().protection());
        let url = lab
            .add_management_point_protected(
                mp.name.get_ref(),
                face(mp.face),
                issuer(mp.certificate),
                protection,
            )
            .map_err(&lab_error)?;
        if let Some(p) = protection {
            management_points.push(format!(
                "{}: {} (Configuration Manager {} and later); requires {}; protects {}",
                mp.name.get_ref(),
                p.name(),
                p.since_version(),
                p.requires(),
                p.protects()
            ));
        }
        if mp.certificate.is_some() || protection.is_some() {
            let issuer = if protection == Some(Protection::EnhancedHttp) {
                CertificateIssuer::Site
            } else {
                issuer(mp.certificate)
            };
            management_points.push(format!(
                "{}: server authentication certificate {}",
                mp.name.get_ref(),
                issuer.describe()
            ));
        }
        urls_by_mp.push((mp.name.get_ref().clone(), url));
    }
    let mut operators: Vec<String> = Vec::new();
    for request in &s.helpdesk {
        if !operators.contains(&request.operator) {
            let role = role_of(request);
            lab.add_operator(&request.operator, role)
                .map_err(&lab_error)?;
            operators.push(request.operator.clone());
        }
    }

    // BitLocker enabled a day before the boot: each agent's first cycle.
    let mut agents = Vec::new();
    for spec in s.clients.iter().filter(|c| !c.management_points.is_empty()) {
        let name = spec.name.get_ref();
        let machine = machines
            .iter()
            .find(|m| &m.group == name)
            .and_then(|m| m.escrow.as_ref().map(|e| (m, e)));
        let Some((machine, source)) = machine else {
            continue;
        };
        let urls: Vec<String> = spec
            .management_points
            .iter()
            .filter_map(|r| {
                urls_by_mp
                    .iter()
                    .find(|(n, _)| n == r.get_ref())
                    .map(|(_, u)| u.clone())
            })
            .collect();
        lab.add_device(name, &urls, trust(spec.trust))
            .map_err(&lab_error)?;
        let certified = recovery
            .client_certificates
            .iter()
            .any(|c| c.get_ref() == name);
        if certified {
            lab.issue_client_certificate(name).map_err(&lab_error)?;
        }
        let policy = recovery.policy_of(name);
        if !recovery.policies.is_empty() {
            lab.set_policy(name, policy).map_err(&lab_error)?;
        }
        let (vol, keys) = unlocked_volume(source).ok_or_else(|| {
            loaded.error_at(spec.name.span(), "the volume's keys were already escrowed")
        })?;
        let enabled = lab
            .adopt_bitlocker(name, vol, keys, Some(source.owner_auth.clone()))
            .map_err(&lab_error)?;
        let mut agent = AgentResult {
            client: name.clone(),
            urls,
            trust: spec.trust,
            key_id: enabled.key_id,
            recovery_password: enabled.recovery_password,
            cycles: Vec::new(),
            handler_log: Vec::new(),
            rotations: Vec::new(),
        };
        let first_line = lab.handler_log_lines(name).map_err(&lab_error)?.len();
        let cycle = run_cycle(&mut lab, &mut agent, "BitLocker enabled").map_err(&boxed_error)?;
        let lines = lab.handler_log_lines(name).map_err(&lab_error)?[first_line..].to_vec();
        {
            let mut setup = Vec::new();
            setup.push(format!(
                "BitLocker management agent: management points {}; trusts {}",
                agent.urls.join(", "),
                trust_words(agent.trust)
            ));
            if !recovery.policies.is_empty() {
                setup.push(format!(
                    "BitLocker management policy: {}",
                    policy.describe()
                ));
            }
            if certified {
                setup.push(
                    "holds a PKI client authentication certificate from the organisation's CA"
                        .to_string(),
                );
            }
            setup.push(format!(
                "the agent {} when BitLocker is enabled, a day before this boot (recovery key ID {}):",
                if policy.contacts_recovery_service() {
                    "escrows"
                } else {
                    "runs"
                },
                short(&agent.key_id)
            ));
            for line in &lines {
                setup.push(format!(
                    "  {} {}",
                    clock(line.at_ms),
                    shorten_keys(&line.text, &[&agent.key_id])
                ));
            }
            setup.push(format!("  → {}", cycle_result(&cycle.summary)));
            machine_setup.push((machine.name.clone(), setup));
        }
        agent.cycles.push(cycle);
        agents.push(agent);
    }

    // The day of the boot: events, helpdesk requests and the agents' cycles, in time order.
    let mut ops: Vec<(Duration, Op<'_>)> = Vec::new();
    for event in &s.events {
        if let Some(action) = is_recovery_event(s, event)
            .then(|| lab_action(s, event))
            .flatten()
        {
            ops.push((event.at, Op::Event(event, action)));
        }
    }
    for request in &s.helpdesk {
        ops.push((request.at, Op::Helpdesk(request)));
    }
    if let Some(at) = &recovery.encrypt_at {
        ops.push((*at.get_ref(), Op::EncryptDatabase));
    }
    for (index, agent) in agents.iter().enumerate() {
        if let Some(&at) = unlocked_at.get(&agent.client) {
            let mut next = at + AGENT_START_AFTER_UNLOCK;
            let mut why = "Windows started";
            while next <= s.duration {
                ops.push((next, Op::Cycle(index, why)));
                why = "status check";
                if recovery.check_every.is_zero() {
                    break;
                }
                next += recovery.check_every;
            }
        }
    }
    ops.sort_by_key(|(at, op)| (*at, op.rank()));

    lab.advance(boot_ms - lab.now_ms());
    let mut helpdesk = Vec::new();
    for (at, op) in ops {
        let target = boot_ms + i64::try_from(at.as_millis()).unwrap_or(i64::MAX);
        if target > lab.now_ms() {
            lab.advance(target - lab.now_ms());
        }
        let now = at_of(boot_ms, lab.now_ms());
        match op {
            Op::Event(event, LabAction::Face(f)) => {
                lab.set_management_point(event.host.get_ref(), face(f))
                    .map_err(&lab_error)?;
                timeline.push((
                    now,
                    event.host.get_ref().clone(),
                    format!(
                        "[event] the recovery service's website {}",
                        match f {
                            FaceSpec::Https => "answers over HTTPS again",
                            FaceSpec::Http => "is switched to HTTP only",
                            FaceSpec::Down => "goes down: connections time out",
                        }
                    ),
                ));
            }
            Op::Event(event, LabAction::Trust(t)) => {
                lab.set_trust(event.host.get_ref(), trust(t))
                    .map_err(&lab_error)?;
                if let Some(agent) = agents
                    .iter_mut()
                    .find(|a| &a.client == event.host.get_ref())
                {
                    agent.trust = t;
                }
                timeline.push((
                    now,
                    event.host.get_ref().clone(),
                    format!(
                        "[event] Group Policy updates the trusted roots: the agent now trusts {}",
                        trust_words(t)
                    ),
                ));
            }
            Op::EncryptDatabase => {
                let turned_on = lab.turn_on_database_encryption().map_err(&lab_error)?;
                timeline.push((
                    now,
                    "recovery-service".into(),
                    encryption_turned_on_line(turned_on),
                ));
            }
            Op::Helpdesk(request) => {
                let answer = ask_helpdesk(&mut lab, request, &agents).map_err(&boxed_error)?;
                let keys: Vec<&KeyId> = agents.iter().map(|a| &a.key_id).collect();
                timeline.push((now, "helpdesk".into(), narrate_helpdesk(&answer, &keys)));
                if let (Some(unlocks), Some(agent)) = (
                    answer.unlocks,
                    agents.iter().find(|a| a.client == answer.client),
                ) {
                    let same = answer
                        .outcome
                        .as_ref()
                        .is_ok_and(|(_, text)| text == &agent.recovery_password);
                    timeline.push((
                        now,
                        "helpdesk".into(),
                        format!(
                            "[helpdesk] the disclosed password {} {}'s volume{}",
                            if unlocks { "unlocks" } else { "does NOT unlock" },
                            agent.client,
                            if same {
                                ": it is the recovery password the volume was given, the one to type at its recovery screen"
                            } else {
                                ""
                            }
                        ),
                    ));
                }
                helpdesk.push(answer);
            }
            Op::Cycle(index, why) => {
                let Some(agent) = agents.get_mut(index) else {
                    continue;
                };
                let first_line = lab
                    .handler_log_lines(&agent.client)
                    .map_err(&lab_error)?
                    .len();
                let cycle = run_cycle(&mut lab, agent, why).map_err(&boxed_error)?;
                let lines = lab.handler_log_lines(&agent.client).map_err(&lab_error)?[first_line..]
                    .to_vec();
                let mut keys: Vec<KeyId> = vec![agent.key_id.clone()];
                for rotation in &cycle.summary.rotations {
                    keys.push(rotation.old.clone());
                    keys.push(rotation.new.clone());
                }
                let key_refs: Vec<&KeyId> = keys.iter().collect();
                timeline.push((
                    now,
                    agent.client.clone(),
                    format!("[escrow] the BitLocker management agent runs ({why})"),
                ));
                for line in &lines {
                    timeline.push((
                        at_of(boot_ms, line.at_ms),
                        agent.client.clone(),
                        format!("[escrow] {}", shorten_keys(&line.text, &key_refs)),
                    ));
                }
                let end = at_of(boot_ms, lab.now_ms());
                timeline.push((
                    end,
                    agent.client.clone(),
                    format!("[escrow] {}", cycle_result(&cycle.summary)),
                ));
                for (old, new, reason, still_unlocks) in
                    rotations_checked(&mut lab, agent, &cycle, &helpdesk).map_err(&boxed_error)?
                {
                    timeline.push((
                        end,
                        agent.client.clone(),
                        format!(
                            "[escrow] the {} recovery password {} is rotated: new key ID {}, re-escrowed {}; the old password {}",
                            rotated_password(reason),
                            short(&old),
                            short(&new),
                            match cycle.summary.re_escrowed {
                                Some(true) => "and acknowledged",
                                Some(false) => "but NOT acknowledged",
                                None => "(not attempted)",
                            },
                            if still_unlocks {
                                "STILL unlocks the volume"
                            } else {
                                "no longer unlocks the volume"
                            }
                        ),
                    ));
                    agent.rotations.push((old, new, reason, still_unlocks));
                }
                agent.cycles.push(cycle);
            }
        }
    }
    for agent in &mut agents {
        agent.handler_log = lab.handler_log(&agent.client).map_err(&lab_error)?;
    }
    let recovery = RecoveryResult {
        encrypted: lab.encrypted(),
        management_points,
        boot_ms,
        timeline,
        agents,
        helpdesk,
        database: lab.database_view().map_err(&lab_error)?,
        audit: lab.audit_log().map_err(&lab_error)?,
    };
    let checks = checks(loaded, &recovery)?;
    Ok(Some(LabRun {
        result: recovery,
        checks,
        setup: machine_setup,
    }))
}

/// A failure of the lab itself (not a mistake in the file): reported at the file's start.
fn lab_failure<E: std::fmt::Display>(loaded: &Loaded) -> impl Fn(E) -> ScenarioError + '_ {
    move |err| loaded.error_at(0..0, format!("the recovery lab: {err}"))
}

/// The client's volume as its running Windows has it: the machine's volume (as the boot left
/// it) with the keys BitLocker made when it was enabled (taken: one lab per run).
fn unlocked_volume(
    source: &crate::world::EscrowSource,
) -> Option<(volume::Volume, volume::VolumeKeys)> {
    let keys = source.keys.borrow_mut().take()?;
    let volume = source
        .machine
        .borrow()
        .volume
        .clone()
        .unwrap_or_else(|| source.enabled_volume.clone());
    Some((volume, keys))
}

fn run_cycle(
    lab: &mut RecoveryLab,
    agent: &mut AgentResult,
    why: &'static str,
) -> Result<Cycle, Box<SimError>> {
    let at_ms = lab.now_ms();
    let summary = lab.escrow(&agent.client)?;
    Ok(Cycle {
        at_ms,
        why,
        summary,
    })
}

/// The transcript's line for "Encrypt recovery data in the database" turned on: that the file
/// no longer holds the plaintext only when the service's checkpoint emptied the WAL.
fn encryption_turned_on_line(
    turned_on: Option<recovery_service::store::EncryptionTurnedOn>,
) -> String {
    let (resealed, rotations, wal_truncated) = turned_on.map_or((0, 0, true), |on| {
        (on.resealed, on.rotations, on.wal_truncated)
    });
    let file = if wal_truncated {
        "the database file no longer holds them"
    } else {
        "a reader kept the checkpoint from finishing: the database file may still hold them until SQLite overwrites those pages"
    };
    format!(
        "[event] \"Encrypt recovery data in the database\" is turned on: the service re-encrypts the {resealed} record(s) stored in plaintext before ({file}) and marks {rotations} recovery password(s) for rotation, because every copy of the file made before still reads them"
    )
}

/// What a rotated recovery password was, in the service's words: why it asked for the
/// rotation (the transcript, the summary view and the checks all say it this way).
pub fn rotated_password(reason: RotationReason) -> &'static str {
    match reason {
        RotationReason::Disclosed => "disclosed",
        RotationReason::StoredInPlaintext => "once plaintext",
    }
}

/// What a recovery password was rotated after, from the service's reason.
pub fn rotated_after(reason: RotationReason) -> &'static str {
    match reason {
        RotationReason::Disclosed => "disclosure",
        RotationReason::StoredInPlaintext => "being stored in plaintext",
    }
}

/// The rotations of a cycle, each with the service's reason and whether the disclosed (old)
/// password still unlocks.
fn rotations_checked(
    lab: &mut RecoveryLab,
    agent: &AgentResult,
    cycle: &Cycle,
    helpdesk: &[HelpdeskResult],
) -> Result<Vec<CheckedRotation>, Box<SimError>> {
    let mut out = Vec::new();
    for rotation in &cycle.summary.rotations {
        let (old, new) = (&rotation.old, &rotation.new);
        let disclosed = helpdesk.iter().find_map(|h| match &h.outcome {
            Ok((key, text)) if key == old && h.client == agent.client => Some(text.clone()),
            _ => None,
        });
        // A password rotated at the service's request without a disclosure (it was stored in
        // plaintext) is the one the volume was given, if it is that key ID.
        let known =
            disclosed.or_else(|| (old == &agent.key_id).then(|| agent.recovery_password.clone()));
        let still = match known {
            Some(text) => lab.unlock_with_recovery_password(&agent.client, &text)?,
            None => false,
        };
        out.push((old.clone(), new.clone(), rotation.reason, still));
    }
    Ok(out)
}

fn ask_helpdesk(
    lab: &mut RecoveryLab,
    request: &HelpdeskSpec,
    agents: &[AgentResult],
) -> Result<HelpdeskResult, Box<SimError>> {
    let client = request.client.get_ref().clone();
    let query = match &request.key_id {
        Some(text) => text.clone(),
        None => lab
            .recovery_key_ids(&client)?
            .first()
            .map(|k| k.short().to_owned())
            .unwrap_or_default(),
    };
    let at_ms = lab.now_ms();
    let answer = lab.helpdesk_recover(
        &request.operator,
        RecoverBody {
            key_id: query.clone(),
            kind: MaterialKind::RecoveryPassword,
            role: None,
            reason: request.reason.clone(),
            device: None,
            volume: None,
        },
    )?;
    let (outcome, audit_seq, rotation_requested) = match answer {
        Ok(reply) => (
            Ok((reply.key_id.clone(), reply.text.clone().unwrap_or_default())),
            Some(reply.audit_seq),
            reply.rotation_requested,
        ),
        Err(refusal) => (Err(refusal.to_string()), None, false),
    };
    let unlocks = match &outcome {
        Ok((_, text)) if agents.iter().any(|a| a.client == client) => {
            Some(lab.unlock_with_recovery_password(&client, text)?)
        }
        _ => None,
    };
    Ok(HelpdeskResult {
        at_ms,
        operator: request.operator.clone(),
        role: role_of(request),
        client,
        query,
        reason: request.reason.clone(),
        outcome,
        audit_seq,
        rotation_requested,
        unlocks,
    })
}

fn narrate_helpdesk(answer: &HelpdeskResult, keys: &[&KeyId]) -> String {
    let asked = format!(
        "[helpdesk] {} ({}) asks the recovery service over HTTPS for the recovery password of key ID {} (\"{}\")",
        answer.operator, answer.role, answer.query, answer.reason
    );
    match &answer.outcome {
        Ok((key, text)) => format!(
            "{asked}: disclosed {}'s password {}… for key ID {}, audit record #{}{}",
            answer.client,
            text.get(..6).unwrap_or(text),
            short(key),
            answer.audit_seq.unwrap_or_default(),
            if answer.rotation_requested {
                "; the service marks it for rotation"
            } else {
                ""
            }
        ),
        Err(why) => format!("{asked}: refused: {}", shorten_keys(why, keys)),
    }
}

/// One cycle's result in a sentence, key IDs shortened.
pub fn cycle_result(summary: &EscrowSummary) -> String {
    let listed = |records: &[(String, KeyId, String)]| {
        records
            .iter()
            .map(|(kind, key, outcome)| format!("{kind} {} {outcome}", short(key)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !summary.contacted {
        return "the recovery service is NOT contacted: no BitLocker management policy with a \
                Client Management rule targets this client"
            .to_string();
    }
    if summary.escrowed {
        let mut text = format!(
            "escrowed to {}: the service acknowledged {}",
            summary.url.as_deref().unwrap_or("?"),
            listed(&summary.acknowledged)
        );
        // The re-escrow after a rotation is a second reply with its own records: name them
        // apart, so each "N record(s) acknowledged" log line matches the records listed.
        if !summary.re_acknowledged.is_empty() {
            text.push_str(&format!(
                "; after the rotation it acknowledged {}",
                listed(&summary.re_acknowledged)
            ));
        }
        text
    } else {
        let why = if summary.failed_over_to_http {
            "the HTTPS management point did not answer and the agent failed over to an HTTP one, \
             which never receives recovery information"
        } else if summary.untrusted_certificate {
            "the management point's server certificate is not trusted"
        } else if summary.client_certificate_required {
            "the HTTPS management point requires a PKI client authentication certificate, which \
             this client does not have"
        } else {
            "no management point took it"
        };
        format!("NOT escrowed ({why}); reported as a failure in the handler log")
    }
}

/// A failed cycle's reasons, for `reason_contains`.
fn failure_reasons(summary: &EscrowSummary) -> String {
    summary
        .failures
        .iter()
        .map(|(url, why)| format!("{url}: {why}"))
        .chain(
            summary
                .failed_over_to_http
                .then(|| "failed over to an HTTP management point".to_string()),
        )
        .collect::<Vec<_>>()
        .join("; ")
}

fn checks(loaded: &Loaded, recovery: &RecoveryResult) -> Result<Vec<Check>, ScenarioError> {
    let s = &loaded.scenario;
    let mut checks = Vec::new();
    for expect in &s.escrow_expectations {
        let name = expect.client.get_ref();
        let agent = recovery.agent(name).ok_or_else(|| {
            loaded.error_at(expect.client.span(), format!("no agent on {name:?}"))
        })?;
        let last = agent.cycles.last().map(|c| &c.summary);
        if let Some(want) = expect.escrowed {
            let got = last.is_some_and(|c| c.escrowed);
            checks.push(Check {
                expectation: format!(
                    "{name}'s recovery information is {}escrowed at the end",
                    if want { "" } else { "NOT " }
                ),
                met: got == want,
                actual: (got != want)
                    .then(|| last.map_or_else(|| "no cycle ran".to_string(), cycle_result)),
            });
        }
        if let Some(words) = &expect.reason_contains {
            let reasons: Vec<String> = agent
                .cycles
                .iter()
                .filter(|c| !c.summary.escrowed)
                .map(|c| failure_reasons(&c.summary))
                .collect();
            let met = reasons.iter().any(|r| r.contains(words.as_str()));
            checks.push(Check {
                expectation: format!("{name}'s escrow failed because {words:?}"),
                met,
                actual: (!met).then(|| {
                    if reasons.is_empty() {
                        "no cycle failed".to_string()
                    } else {
                        reasons.join(" | ")
                    }
                }),
            });
        }
        for words in &expect.handler_log_contains {
            let met = agent.handler_log.iter().any(|l| l.contains(words.as_str()));
            checks.push(Check {
                expectation: format!("{name}'s BitLockerManagementHandler.log says {words:?}"),
                met,
                actual: (!met).then(|| "not in the log".to_string()),
            });
        }
        if let Some(want) = expect.rotated {
            let stored_current = |key: &KeyId| {
                recovery.database.rows.iter().any(|r| {
                    r.key_id == key.as_str()
                        && r.kind == MaterialKind::RecoveryPassword.label()
                        && r.retired_at.is_none()
                })
            };
            let old_retired = |key: &KeyId| {
                recovery
                    .database
                    .rows
                    .iter()
                    .filter(|r| r.key_id == key.as_str())
                    .all(|r| r.retired_at.is_some())
            };
            let re_escrowed = agent
                .cycles
                .iter()
                .any(|c| !c.summary.rotations.is_empty() && c.summary.re_escrowed == Some(true));
            let got = !agent.rotations.is_empty()
                && re_escrowed
                && agent
                    .rotations
                    .iter()
                    .all(|(old, new, _, still)| !still && stored_current(new) && old_retired(old));
            checks.push(Check {
                expectation: format!(
                    "{name}'s {}recovery password is {}rotated and re-escrowed (the old one no longer unlocks, its records retired)",
                    if agent
                        .rotations
                        .iter()
                        .any(|(_, _, reason, _)| *reason == RotationReason::Disclosed)
                    {
                        "disclosed "
                    } else {
                        ""
                    },
                    if want { "" } else { "NOT " }
                ),
                met: got == want,
                actual: (got != want).then(|| {
                    if agent.rotations.is_empty() {
                        "no rotation".to_string()
                    } else {
                        agent
                            .rotations
                            .iter()
                            .map(|(old, new, _, still)| {
                                format!(
                                    "{} → {}: old still unlocks {still}, new stored {}, re-escrowed {re_escrowed}",
                                    short(old),
                                    short(new),
                                    stored_current(new)
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("; ")
                    }
                }),
            });
        }
        if let Some(want) = expect.disclosed_unlocks {
            let answers: Vec<&HelpdeskResult> = recovery
                .helpdesk
                .iter()
                .filter(|h| &h.client == name && h.unlocks.is_some())
                .collect();
            let got = !answers.is_empty() && answers.iter().all(|h| h.unlocks == Some(true));
            checks.push(Check {
                expectation: format!(
                    "what the helpdesk disclosed for {name} {} its volume",
                    if want { "unlocks" } else { "does not unlock" }
                ),
                met: got == want,
                actual: (got != want).then(|| {
                    if answers.is_empty() {
                        "nothing was disclosed".to_string()
                    } else {
                        "it does not unlock".to_string()
                    }
                }),
            });
        }
    }
    if let Some(expect) = &s.expect_database {
        let rows = &recovery.database.rows;
        if let Some(want) = expect.plaintext {
            let passwords: Vec<&recovery_service::store::RawRow> = rows
                .iter()
                .filter(|r| r.kind == MaterialKind::RecoveryPassword.label())
                .collect();
            let readable = |r: &recovery_service::store::RawRow| {
                std::str::from_utf8(&r.material)
                    .is_ok_and(|t| t.parse::<volume::RecoveryPassword>().is_ok())
            };
            let known_inside = |r: &recovery_service::store::RawRow| {
                recovery
                    .agents
                    .iter()
                    .any(|a| contains(&r.material, a.recovery_password.as_bytes()))
            };
            let got_plain = !passwords.is_empty() && passwords.iter().all(|r| readable(r));
            let got_sealed = !passwords.is_empty()
                && passwords
                    .iter()
                    .all(|r| !readable(r) && !known_inside(r) && r.sealing == 1);
            let met = if want { got_plain } else { got_sealed };
            checks.push(Check {
                expectation: if want {
                    "the database holds the recovery passwords in plaintext".to_string()
                } else {
                    "the database holds the recovery passwords only as AES-256-GCM ciphertext"
                        .to_string()
                },
                met,
                actual: (!met).then(|| {
                    format!(
                        "{} recovery-password row(s), {} readable as a recovery password",
                        passwords.len(),
                        passwords.iter().filter(|r| readable(r)).count()
                    )
                }),
            });
        }
        if let Some(want) = expect.records {
            let got = rows.len() as u64;
            checks.push(Check {
                expectation: format!("the database holds {want} record(s)"),
                met: got == want,
                actual: (got != want).then(|| got.to_string()),
            });
        }
        if let Some(want) = &expect.audit {
            let got: Vec<String> = recovery.audit.iter().map(|a| a.outcome.clone()).collect();
            checks.push(Check {
                expectation: format!(
                    "the audit log records: {}",
                    if want.is_empty() {
                        "(nothing)".to_string()
                    } else {
                        want.join(", ")
                    }
                ),
                met: &got == want,
                actual: (&got != want).then(|| got.join(", ")),
            });
        }
    }
    Ok(checks)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn role_of(request: &HelpdeskSpec) -> HelpdeskRole {
    request
        .role
        .as_ref()
        .and_then(|r| r.get_ref().parse().ok())
        .unwrap_or(HelpdeskRole::Helpdesk)
}

fn face(face: FaceSpec) -> MpFace {
    match face {
        FaceSpec::Https => MpFace::Https,
        FaceSpec::Http => MpFace::Http,
        FaceSpec::Down => MpFace::Down,
    }
}

fn issuer(certificate: Option<CertificateSpec>) -> CertificateIssuer {
    match certificate {
        None | Some(CertificateSpec::OrganisationCa) => CertificateIssuer::Organisation,
        Some(CertificateSpec::PublicCa) => CertificateIssuer::Public,
    }
}

fn trust(trust: TrustSpec) -> Trust {
    match trust {
        TrustSpec::PublicRoots => Trust::PublicRootsOnly,
        TrustSpec::OrganisationRoot => Trust::OrganisationRoot,
    }
}

pub fn trust_words(trust: TrustSpec) -> &'static str {
    match trust {
        TrustSpec::PublicRoots => "only the public roots Windows ships",
        TrustSpec::OrganisationRoot => "the public roots and the organisation's root CA",
    }
}

fn at_of(boot_ms: i64, at_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(at_ms - boot_ms).unwrap_or(0))
}

/// A key ID as the transcript shows keys: its first 8 characters (what the recovery screen
/// and the helpdesk use) and an ellipsis.
pub fn short(key: &KeyId) -> String {
    format!("{}…", key.short())
}

/// `text` with every whole key ID of `keys` shortened.
pub fn shorten_keys(text: &str, keys: &[&KeyId]) -> String {
    let mut out = text.to_string();
    for key in keys {
        out = out.replace(key.as_str(), &short(key));
    }
    out
}

/// `HH:MM:SS.mmm` UTC of a lab time, for the escrow before the boot.
pub fn clock(at_ms: i64) -> String {
    let ms = at_ms.rem_euclid(24 * 60 * 60 * 1000);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use recovery_service::store::EncryptionTurnedOn;

    /// Review finding: the transcript says the file no longer holds the plaintext only when
    /// the checkpoint said so.
    #[test]
    fn the_encryption_line_claims_what_the_checkpoint_found() {
        let on = |wal_truncated| {
            Some(EncryptionTurnedOn {
                at: 0,
                resealed: 2,
                rotations: 1,
                wal_truncated,
            })
        };
        let done = encryption_turned_on_line(on(true));
        assert!(
            done.contains("(the database file no longer holds them)"),
            "{done}"
        );
        let partial = encryption_turned_on_line(on(false));
        assert!(!partial.contains("no longer holds"), "{partial}");
        assert!(partial.contains("may still hold them"), "{partial}");
    }
}
