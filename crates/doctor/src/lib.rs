//! `nulab doctor`'s reasoning: from captures (WDS server, client or relay side) and, when the
//! admin has them, the WDS server's files (the subnet policy, the certificates, the WDS debug
//! log), the client's protector list and a key log, say for each client why it did or did not
//! unlock, as the troubleshooting section of the seed document asks an admin to work it out by
//! hand. Pure functions over decoded inputs: the command line reads the files and prints.
//!
//! Each client (a MAC, from `chaddr` or the DHCPv6 DUID; its exchanges by `xid`) gets exactly
//! one [`Cause`] from a fixed vocabulary, evidence lines citing `capture:frame`, files and INI
//! line numbers, and, when the evidence cannot tell causes apart, the other causes it leaves
//! open ([`ClientDiagnosis::also_possible`]) and the files that would settle them
//! ([`ClientDiagnosis::settle_with`]). The checks follow the provider's processing order
//! (`../shared/PROTOCOL.md`, "Server processing"): wire format, thumbprint, subnet policy,
//! decryption, reply.
//!
//! What a capture cannot show, stated once: a client that sent nothing at all (legacy BIOS,
//! CSM, no UEFI DHCP driver, DHCP disabled on its port) is in no capture, so it is in no
//! report; and a reply seen on the server's segment after the client's last attempt may still
//! have been lost on the way (`unlocked`, with `reply-lost` also possible, unless a key log or a
//! capture on the client's segment settles it).

pub mod ini_lines;
pub mod keylog;
pub mod traffic;
mod wds_log;

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use nkpu::Thumbprint;
use serde::Serialize;
use unlock_server::policy::{self, Decision, DenyReason, Lint};

pub use keylog::{KeyLog, KeyLogEntry, KeyLogError};
use traffic::{Event, FrameRef, Seen};

/// The version of the JSON schema of [`Report`]; it changes only when a field changes meaning
/// or goes away (new fields may be added).
pub const SCHEMA_VERSION: u32 = 1;

/// How many unlock requests a client sends on one transport before it gives up (DHCPv4: the
/// request and one retransmission; DHCPv6: MRC 2).
pub const ATTEMPTS_PER_TRANSPORT: usize = 2;

/// One capture file: its name (for evidence) and its frames in order; frame `n` is
/// `frames[n - 1]`, as Wireshark numbers them.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    pub name: String,
    pub frames: Vec<Vec<u8>>,
}

/// A text file the admin gave: its name and its contents.
#[derive(Debug, Clone)]
pub struct TextFile {
    pub file: String,
    pub text: String,
}

/// A certificate the admin gave: its file, thumbprint and subject.
#[derive(Debug, Clone)]
pub struct GivenCertificate {
    pub file: String,
    pub thumbprint: Thumbprint,
    pub subject: String,
}

/// Everything doctor reasons over. `None` (or an empty list of certificates) means the admin
/// did not give that file; the report then says which causes it leaves open.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub captures: Vec<Capture>,
    /// `bde-network-unlock.ini`.
    pub policy: Option<TextFile>,
    /// The server's Network Unlock certificates (`.pfx` or `.cer`); `None` when not given.
    pub certificates: Option<Vec<GivenCertificate>>,
    /// The certificate in the client's FVE_NKP store (`.cer`).
    pub client_certificate: Option<GivenCertificate>,
    /// `manage-bde -protectors -get C:` output.
    pub protectors: Option<TextFile>,
    /// The WDS debug log (Deployment-Services-Diagnostics/Debug, or nulab's `wds-*.log`).
    pub wds_log: Option<TextFile>,
    pub keylog: Option<KeyLog>,
}

/// Why a client did or did not unlock: the fixed vocabulary (`README.md`, `nulab doctor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    Unlocked,
    NoDhcp,
    NoUnlockRequest,
    UnknownCertificate,
    CertificateDisabled,
    SubnetDenied,
    PolicyInvalid,
    RequestNotReachingWds,
    NoReply,
    ReplyLost,
    ReplyRejected,
    Malformed,
}

impl Cause {
    /// Every cause, in the documented order.
    pub const ALL: [Cause; 12] = [
        Cause::Unlocked,
        Cause::NoDhcp,
        Cause::NoUnlockRequest,
        Cause::UnknownCertificate,
        Cause::CertificateDisabled,
        Cause::SubnetDenied,
        Cause::PolicyInvalid,
        Cause::RequestNotReachingWds,
        Cause::NoReply,
        Cause::ReplyLost,
        Cause::ReplyRejected,
        Cause::Malformed,
    ];

    /// The label, exactly as the JSON says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Unlocked => "unlocked",
            Cause::NoDhcp => "no-dhcp",
            Cause::NoUnlockRequest => "no-unlock-request",
            Cause::UnknownCertificate => "unknown-certificate",
            Cause::CertificateDisabled => "certificate-disabled",
            Cause::SubnetDenied => "subnet-denied",
            Cause::PolicyInvalid => "policy-invalid",
            Cause::RequestNotReachingWds => "request-not-reaching-wds",
            Cause::NoReply => "no-reply",
            Cause::ReplyLost => "reply-lost",
            Cause::ReplyRejected => "reply-rejected",
            Cause::Malformed => "malformed",
        }
    }

    /// One line for an admin.
    pub fn meaning(self) -> &'static str {
        match self {
            Cause::Unlocked => "a reply the client accepted (or that verifies under the key log)",
            Cause::NoDhcp => "no lease: no offer, no ACK, or a NAK",
            Cause::NoUnlockRequest => "a lease but no unlock request",
            Cause::UnknownCertificate => {
                "the request's thumbprint is not among the server's certificates"
            }
            Cause::CertificateDisabled => "a DISABLED line for the certificate in the policy",
            Cause::SubnetDenied => "the subnet policy does not permit the client's address",
            Cause::PolicyInvalid => {
                "bde-network-unlock.ini does not parse, so the provider answers nothing"
            }
            Cause::RequestNotReachingWds => {
                "seen on the client's or relay's side but never at the server"
            }
            Cause::NoReply => "the request reached the server and policy allows it, yet no reply",
            Cause::ReplyLost => "a reply was sent but the client retransmitted anyway",
            Cause::ReplyRejected => "a reply whose tag does not verify under the key log's key",
            Cause::Malformed => "the request breaks the wire format",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One client's diagnosis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientDiagnosis {
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// The address it leased or used, if any frame shows one.
    pub address: Option<String>,
    pub cause: Cause,
    /// What the evidence shows, each line citing `capture:frame`, a file or `file:line`.
    pub evidence: Vec<String>,
    /// Other causes the evidence cannot rule out (empty when the cause is certain).
    pub also_possible: Vec<Cause>,
    /// The files or captures that would settle what is left open.
    pub settle_with: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub schema: u32,
    /// Clients by MAC.
    pub clients: Vec<ClientDiagnosis>,
    /// About the inputs as a whole (the policy's state, files not given).
    pub notes: Vec<String>,
}

impl Report {
    /// Whether every client in the report unlocked (and there was at least one).
    pub fn all_unlocked(&self) -> bool {
        !self.clients.is_empty() && self.clients.iter().all(|c| c.cause == Cause::Unlocked)
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The server-side facts every client is judged against.
struct Server<'a> {
    inputs: &'a Inputs,
    lint: Option<Lint>,
    /// Whether any capture holds a reply to anybody (it then shows the server answering).
    any_reply: bool,
}

/// Diagnoses every client seen in the captures.
pub fn diagnose(inputs: &Inputs) -> Report {
    let lint = inputs.policy.as_ref().map(|p| policy::lint(&p.text));
    let clients = traffic::follow(&inputs.captures);
    let any_reply = clients
        .values()
        .flatten()
        .any(|e| matches!(e.seen, Seen::Reply { .. }));
    let server = Server {
        inputs,
        lint,
        any_reply,
    };
    let mut notes = Vec::new();
    for capture in &inputs.captures {
        notes.push(format!(
            "{}: {} frame(s)",
            capture.name,
            capture.frames.len()
        ));
    }
    match (&inputs.policy, &server.lint) {
        (Some(file), Some(lint)) if lint.policy.is_none() => notes.push(format!(
            "{}: INVALID ({} error(s)): the provider answers nobody while it is in place",
            file.file,
            lint.errors.len()
        )),
        (Some(file), Some(lint)) => notes.push(format!(
            "{}: valid ({} warning(s))",
            file.file,
            lint.warnings.len()
        )),
        _ => notes.push("no --policy: the subnet policy is not checked".into()),
    }
    match &inputs.certificates {
        Some(certs) => {
            for cert in certs {
                notes.push(format!(
                    "{}: server certificate {} ({})",
                    cert.file, cert.thumbprint, cert.subject
                ));
            }
        }
        None => notes.push("no --cert: thumbprints are not checked against the server".into()),
    }
    let clients = clients
        .into_iter()
        .map(|(mac, events)| server.diagnose_client(&mac, &events))
        .collect();
    Report {
        schema: SCHEMA_VERSION,
        clients,
        notes,
    }
}

/// A request as the diagnosis needs it.
struct RequestSeen<'a> {
    at: FrameRef,
    destination: Option<IpAddr>,
    xid: u32,
    giaddr: Ipv4Addr,
    address: Option<IpAddr>,
    thumbprint: &'a Thumbprint,
    key_protector: &'a [u8],
}

/// What is being decided for one client.
struct Finding {
    cause: Cause,
    evidence: Vec<String>,
    also_possible: BTreeSet<Cause>,
    settle_with: Vec<String>,
}

impl Finding {
    fn new(cause: Cause) -> Self {
        Finding {
            cause,
            evidence: Vec::new(),
            also_possible: BTreeSet::new(),
            settle_with: Vec::new(),
        }
    }

    fn settle(&mut self, what: &str) {
        if !self.settle_with.iter().any(|s| s == what) {
            self.settle_with.push(what.to_string());
        }
    }
}

impl Server<'_> {
    fn at(&self, at: FrameRef) -> String {
        let name = self
            .inputs
            .captures
            .get(at.capture)
            .map_or("capture", |c| c.name.as_str());
        format!("{name}:{}", at.number)
    }

    fn diagnose_client(&self, mac: &[u8; 6], events: &[Event]) -> ClientDiagnosis {
        let mut evidence = Vec::new();
        let mut requests = Vec::new();
        let mut replies = Vec::new();
        let mut malformed = Vec::new();
        let mut address: Option<IpAddr> = None;
        let (mut discovers, mut offers, mut acks, mut naks) = (0, 0, 0, 0);
        let mut relayed_dhcp = BTreeSet::new();
        let mut dhcp_servers = BTreeSet::new();
        // The last DHCPACK, and the first DHCPREQUEST sent again after an ACK (it was lost).
        let mut last_ack: Option<FrameRef> = None;
        let mut ack_repeated: Option<(FrameRef, FrameRef)> = None;
        for event in events {
            let at = self.at(event.at);
            match &event.seen {
                Seen::Dhcp {
                    message_type,
                    yiaddr,
                    giaddr,
                    source,
                } => {
                    if matches!(message_type, 2 | 5)
                        && let Some(source) = source
                    {
                        dhcp_servers.insert(*source);
                    }
                    if *message_type == 3
                        && let Some(ack) =
                            last_ack.filter(|a: &FrameRef| a.capture == event.at.capture)
                    {
                        ack_repeated.get_or_insert((ack, event.at));
                    }
                    if *message_type == 5 {
                        last_ack = Some(event.at);
                    }
                    match message_type {
                        1 => discovers += 1,
                        2 => offers += 1,
                        5 => {
                            acks += 1;
                            if !yiaddr.is_unspecified() {
                                address = Some(IpAddr::V4(*yiaddr));
                            }
                        }
                        6 => naks += 1,
                        _ => {}
                    }
                    let mut line = format!("{at}: {}", traffic::message_name(*message_type));
                    if !yiaddr.is_unspecified() {
                        line.push_str(&format!(" {yiaddr}"));
                    }
                    if !giaddr.is_unspecified() {
                        relayed_dhcp.insert(event.at.capture);
                        line.push_str(&format!(" (relayed by {giaddr})"));
                    }
                    evidence.push(line);
                }
                Seen::Request {
                    family,
                    xid,
                    giaddr,
                    address: from,
                    destination,
                    thumbprint,
                    key_protector,
                } => {
                    if address.is_none() {
                        address = *from;
                    }
                    let attempt = requests
                        .iter()
                        .filter(|r: &&RequestSeen<'_>| {
                            r.at.capture == event.at.capture && r.xid == *xid
                        })
                        .count()
                        + 1;
                    let mut line = format!(
                        "{at}: unlock request {} ({}, xid {xid:#x}, certificate {thumbprint}",
                        if attempt == 1 {
                            "sent".to_string()
                        } else {
                            format!("retransmission {}", attempt - 1)
                        },
                        family.as_str(),
                    );
                    if let Some(from) = from {
                        line.push_str(&format!(", client {from}"));
                    }
                    if !giaddr.is_unspecified() {
                        line.push_str(&format!(", relayed by {giaddr}"));
                        if let Some(to) = destination {
                            line.push_str(&format!(" to {to}"));
                        }
                    }
                    line.push(')');
                    evidence.push(line);
                    requests.push(RequestSeen {
                        at: event.at,
                        destination: *destination,
                        xid: *xid,
                        giaddr: *giaddr,
                        address: *from,
                        thumbprint,
                        key_protector: key_protector.as_bytes(),
                    });
                }
                Seen::Reply { family, xid, reply } => {
                    evidence.push(format!(
                        "{at}: unlock reply ({}, xid {xid:#x})",
                        family.as_str()
                    ));
                    replies.push((event.at, *xid, reply.as_ref()));
                }
                Seen::Malformed {
                    request,
                    rule,
                    error,
                } => {
                    evidence.push(format!(
                        "{at}: malformed Network Unlock {} (rule {rule}: {error})",
                        if *request { "request" } else { "reply" }
                    ));
                    malformed.push((event.at, *request, *rule));
                }
            }
        }

        let mut finding = if !replies.is_empty() {
            self.judge_replies(&requests, &replies)
        } else if !requests.is_empty() {
            self.judge_unanswered(&requests, &relayed_dhcp, &dhcp_servers, address)
        } else if let Some((at, _, rule)) = malformed.iter().find(|(_, request, _)| *request) {
            let mut f = Finding::new(Cause::Malformed);
            f.evidence.push(format!(
                "{}: the request breaks the wire format (rule {rule}); the provider drops it silently",
                self.at(*at)
            ));
            f
        } else if let (Some((ack, again)), true) = (ack_repeated, acks > 0) {
            let mut f = Finding::new(Cause::NoDhcp);
            f.evidence.push(format!(
                "{}: the client asked again after the DHCPACK at {}: the ACKs did not reach \
                 it, and no unlock request followed; its lease most likely never completed",
                self.at(again),
                self.at(ack)
            ));
            f.also_possible
                .extend([Cause::NoUnlockRequest, Cause::RequestNotReachingWds]);
            f.settle("a capture on the client's segment");
            f
        } else if acks > 0 {
            self.judge_no_request(&relayed_dhcp)
        } else {
            let mut f = Finding::new(Cause::NoDhcp);
            f.evidence.push(if naks > 0 {
                format!("the DHCP server refused the lease: {naks} DHCPNAK")
            } else if offers > 0 {
                format!("{offers} DHCPOFFER but no DHCPACK: the lease was never confirmed")
            } else {
                format!("{discovers} DHCPDISCOVER, no DHCPOFFER: no DHCP server answered")
            });
            f.evidence.push(
                "the firmware stops enumerating adapters at the first whose DHCP fails".into(),
            );
            f
        };
        if let (Some(protectors), true) =
            (&self.inputs.protectors, finding.cause != Cause::Unlocked)
        {
            finding.evidence.push(protector_line(protectors));
        }
        if let Some(client) = &self.inputs.client_certificate
            && let Some(request) = requests.first()
        {
            finding
                .evidence
                .push(if client.thumbprint == *request.thumbprint {
                    format!(
                        "{}: the client's FVE_NKP certificate {} is the one its requests name",
                        client.file, client.thumbprint
                    )
                } else {
                    format!(
                        "{}: the client's FVE_NKP certificate is {}, but its requests name {}",
                        client.file, client.thumbprint, request.thumbprint
                    )
                });
        }
        evidence.extend(finding.evidence);
        ClientDiagnosis {
            mac: format_mac(mac),
            address: address.map(|a| a.to_string()),
            cause: finding.cause,
            evidence,
            also_possible: finding
                .also_possible
                .into_iter()
                .filter(|c| *c != finding.cause)
                .collect(),
            settle_with: finding.settle_with,
        }
    }

    /// At least one reply was seen.
    fn judge_replies(
        &self,
        requests: &[RequestSeen<'_>],
        replies: &[(FrameRef, u32, &nkpu::KeyProtectorReply)],
    ) -> Finding {
        // With the key log: does any reply's tag verify? (It says the reply is good, not that
        // it arrived: that, only the client's behaviour after it shows.)
        let mut verified: Option<String> = None;
        if let Some(keylog) = &self.inputs.keylog {
            let keys: Vec<(&RequestSeen<'_>, &KeyLogEntry)> = requests
                .iter()
                .filter_map(|r| keylog.find(r.thumbprint, r.key_protector).map(|k| (r, k)))
                .collect();
            if !keys.is_empty() {
                verified = replies.iter().find_map(|(at, xid, reply)| {
                    keys.iter()
                        .find(|(request, key)| {
                            request.xid == *xid && reply.open(&key.session_key).is_ok()
                        })
                        .map(|(_, key)| {
                            format!(
                                "{}: the reply's tag verifies under the session key of {}:{}",
                                self.at(*at),
                                keylog.file,
                                key.line
                            )
                        })
                });
                if verified.is_none() {
                    let mut f = Finding::new(Cause::ReplyRejected);
                    for (at, _, _) in replies {
                        f.evidence.push(format!(
                            "{}: the reply's tag does not verify under the session key of {}:{}: \
                             the client ignores it (a server with another key, or a damaged reply)",
                            self.at(*at),
                            keylog.file,
                            keys[0].1.line
                        ));
                    }
                    return f;
                }
            }
        }
        // The client's behaviour after the last reply tells whether it arrived.
        let Some((last_reply, last_xid, _)) = replies.iter().max_by_key(|(at, _, _)| *at) else {
            return Finding::new(Cause::NoReply);
        };
        let after: Vec<&RequestSeen<'_>> = requests
            .iter()
            .filter(|r| r.at.capture == last_reply.capture && r.at > *last_reply)
            .collect();
        if let Some(retransmission) = after.first() {
            let mut f = Finding::new(Cause::ReplyLost);
            f.evidence.push(format!(
                "{}: the client sent again after the reply at {}: the reply did not reach it, \
                 or did not verify",
                self.at(retransmission.at),
                self.at(*last_reply)
            ));
            if let Some(line) = verified {
                f.evidence.push(line);
            } else {
                f.also_possible.insert(Cause::ReplyRejected);
                f.settle("--keylog (whether the reply's tag verifies)");
            }
            return f;
        }
        let mut f = Finding::new(Cause::Unlocked);
        f.evidence.extend(verified);
        let answered = requests
            .iter()
            .filter(|r| {
                r.at.capture == last_reply.capture && r.xid == *last_xid && r.at < *last_reply
            })
            .count();
        // Even on the client's own segment, a capture point is not the client's port.
        if answered >= ATTEMPTS_PER_TRANSPORT {
            f.evidence.push(format!(
                "{}: the reply answers the client's last attempt; no later request, but this \
                 capture cannot show whether it arrived",
                self.at(*last_reply)
            ));
            f.also_possible.insert(Cause::ReplyLost);
            f.settle("a capture on the client's segment, or its BitLocker event log");
        } else {
            f.evidence.push(format!(
                "{}: the client sent nothing more after this reply: it accepted it",
                self.at(*last_reply)
            ));
        }
        f
    }

    /// Requests, no reply.
    fn judge_unanswered(
        &self,
        requests: &[RequestSeen<'_>],
        relayed_dhcp: &BTreeSet<usize>,
        dhcp_servers: &BTreeSet<IpAddr>,
        address: Option<IpAddr>,
    ) -> Finding {
        let first = &requests[0];
        let with_requests: BTreeSet<usize> = requests.iter().map(|r| r.at.capture).collect();
        let missing: Vec<usize> = relayed_dhcp.difference(&with_requests).copied().collect();
        if !missing.is_empty() && requests.iter().all(|r| r.giaddr.is_unspecified()) {
            let mut f = Finding::new(Cause::RequestNotReachingWds);
            for capture in missing {
                let name = self
                    .inputs
                    .captures
                    .get(capture)
                    .map_or("a capture", |c| c.name.as_str());
                f.evidence.push(format!(
                    "{name} shows this client's DHCP relayed, but none of its unlock requests: \
                     the relay forwards DHCP to the DHCP server only; add the WDS server to its \
                     helper list (ip helper-address)"
                ));
            }
            return f;
        }
        // Relayed, but only to the DHCP server: the relay's helper list lacks the WDS server.
        let relayed: Vec<&RequestSeen<'_>> = requests
            .iter()
            .filter(|r| !r.giaddr.is_unspecified())
            .collect();
        if !relayed.is_empty()
            && relayed
                .iter()
                .all(|r| r.destination.is_some_and(|d| dhcp_servers.contains(&d)))
        {
            let mut f = Finding::new(Cause::RequestNotReachingWds);
            let to: BTreeSet<String> = relayed
                .iter()
                .filter_map(|r| r.destination.map(|d| d.to_string()))
                .collect();
            f.evidence.push(format!(
                "{}: relay {} forwards the unlock request to {} only, the DHCP server that \
                 leased the address, not to a WDS server: add the WDS server to the relay's \
                 helper list (ip helper-address)",
                self.at(relayed[0].at),
                relayed[0].giaddr,
                to.into_iter().collect::<Vec<_>>().join(", ")
            ));
            return f;
        }
        let client = first.address.or(address);
        // The provider's order: malformed (already split off), thumbprint, policy, decrypt.
        if let (Some(file), Some(lint)) = (&self.inputs.policy, &self.lint)
            && lint.policy.is_none()
        {
            let mut f = Finding::new(Cause::PolicyInvalid);
            for problem in &lint.errors {
                f.evidence.push(format!(
                    "{}:{}: {}",
                    file.file, problem.line, problem.message
                ));
            }
            f.evidence.push(
                "an invalid bde-network-unlock.ini stops the provider: it answers nobody".into(),
            );
            return f;
        }
        if let Some(certs) = &self.inputs.certificates
            && !certs.iter().any(|c| c.thumbprint == *first.thumbprint)
        {
            let mut f = Finding::new(Cause::UnknownCertificate);
            let held: Vec<String> = certs
                .iter()
                .map(|c| format!("{} ({})", c.thumbprint, c.file))
                .collect();
            f.evidence.push(format!(
                "{}: the request names certificate {}; the server holds {}",
                self.at(first.at),
                first.thumbprint,
                if held.is_empty() {
                    "none".to_string()
                } else {
                    held.join(", ")
                }
            ));
            f.evidence.push(
                "deploy the client's certificate with its private key on the WDS server, or \
                 give the clients the server's certificate by Group Policy"
                    .into(),
            );
            return f;
        }
        if let (Some(file), Some(lint), Some(client)) = (&self.inputs.policy, &self.lint, client)
            && let Some(Decision::Deny(reason)) =
                policy::decide(Some(lint), first.thumbprint, client)
        {
            let lines = ini_lines::section_lines(&file.text, first.thumbprint);
            let mut f = match reason {
                DenyReason::CertificateDisabled => {
                    let mut f = Finding::new(Cause::CertificateDisabled);
                    f.evidence.push(format!(
                        "{}:{}: DISABLED in the section of certificate {}",
                        file.file,
                        lines.disabled.unwrap_or_default(),
                        first.thumbprint
                    ));
                    f
                }
                DenyReason::NotInPermittedSubnets { permitted } => {
                    let mut f = Finding::new(Cause::SubnetDenied);
                    f.evidence.push(format!(
                        "{}:{}: certificate {}'s section permits only {}; client {client} is in none",
                        file.file,
                        lines.header.unwrap_or_default(),
                        first.thumbprint,
                        permitted.join(", ")
                    ));
                    for (line, text) in &lines.definitions {
                        f.evidence.push(format!("{}:{line}: {text}", file.file));
                    }
                    f
                }
                _ => Finding::new(Cause::NoReply),
            };
            if f.cause != Cause::NoReply {
                f.evidence
                    .push("the provider drops a refused request silently".to_string());
                return f;
            }
        }
        // Everything the files say allows it (or they were not given).
        let mut f = Finding::new(Cause::NoReply);
        let attempts = requests
            .iter()
            .filter(|r| r.at.capture == first.at.capture)
            .count();
        f.evidence.push(format!(
            "{attempts} request(s) in {} and no reply",
            self.inputs
                .captures
                .get(first.at.capture)
                .map_or("the capture", |c| c.name.as_str()),
        ));
        if self.inputs.certificates.is_none() {
            f.also_possible.insert(Cause::UnknownCertificate);
            f.settle("--cert (the server's certificates: is the thumbprint among them?)");
        } else {
            f.evidence.push(format!(
                "certificate {} is among the server's certificates",
                first.thumbprint
            ));
        }
        if self.inputs.policy.is_none() {
            f.also_possible.extend([
                Cause::PolicyInvalid,
                Cause::CertificateDisabled,
                Cause::SubnetDenied,
            ]);
            f.settle("--policy (bde-network-unlock.ini)");
        } else if let Some(client) = client {
            let decision = policy::decide(self.lint.as_ref(), first.thumbprint, client);
            if let Some(decision) = decision {
                f.evidence.push(format!(
                    "the subnet policy allows client {client}: {decision}"
                ));
            }
        }
        if requests.iter().all(|r| r.giaddr.is_unspecified()) && !self.any_reply {
            // No reply from the server to anybody: this capture may not be the server's.
            f.also_possible.insert(Cause::RequestNotReachingWds);
            f.settle("a capture on the WDS server (does the request arrive there?)");
        }
        // A log without one Network Unlock line was exported while WDS's debug channel was
        // off (its default): it is no evidence that the server saw nothing.
        let given_log = self.inputs.wds_log.as_ref();
        let recording_log = given_log.filter(|log| wds_log::has_network_unlock_lines(log));
        let from_log = recording_log
            .map(|log| wds_log::drops_for(log, client, first.giaddr))
            .unwrap_or_default();
        if let Some((line, cause)) = from_log.first() {
            f.evidence.push(line.clone());
            if *cause != Cause::NoReply {
                let mut g = Finding::new(*cause);
                g.evidence = f.evidence;
                return g;
            }
            f.evidence.push(
                "the WDS debug log names the reason: it settles which of the server-side causes"
                    .into(),
            );
            f.also_possible.clear();
            f.settle_with.clear();
        } else if let Some(log) = recording_log {
            // The provider logs every drop: no line for this client means it never processed
            // the requests (the service stopped, or they never arrived), not a refusal.
            f.evidence.push(format!(
                "{}: no line about this client's requests: the provider did not process them",
                log.file
            ));
            f.evidence.extend(wds_log::service_states(log));
            f.also_possible
                .retain(|c| *c == Cause::RequestNotReachingWds);
            f.settle_with
                .retain(|s| s.starts_with("a capture on the WDS server"));
        } else {
            if let Some(log) = given_log {
                f.evidence.push(format!(
                    "{}: not one Network Unlock line: the WDS debug log is off by default, so \
                     this log says nothing of what the server saw (not that it saw nothing); \
                     `{}` on the WDS server turns it on",
                    log.file,
                    wds_log::ENABLE_DEBUG_LOG
                ));
            }
            f.evidence.push(
                "the server did not answer: the WDS service stopped, the Network Unlock provider \
                 unregistered, the FVE_NKP certificate store removed, or a key protector that \
                 does not decrypt under the certificate's key; the capture cannot tell these apart"
                    .into(),
            );
            if given_log.is_some() {
                f.settle(&format!(
                    "--wds-log exported after `{}` and the boot retried (the WDS debug log is \
                     off by default)",
                    wds_log::ENABLE_DEBUG_LOG
                ));
            } else {
                f.settle("--wds-log (the WDS debug log says which)");
            }
        }
        f
    }

    /// A lease, no request.
    fn judge_no_request(&self, relayed_dhcp: &BTreeSet<usize>) -> Finding {
        let mut f = Finding::new(Cause::NoUnlockRequest);
        f.evidence.push(
            "a lease (DHCPACK) but no Network Unlock request in any capture: the Network \
             (Certificate Based) protector is missing (Group Policy not applied, or no reboot \
             since), or the firmware does not run Network Unlock"
                .into(),
        );
        let protector_missing = self
            .inputs
            .protectors
            .as_ref()
            .is_some_and(|p| !has_network_protector(&p.text));
        if !protector_missing {
            f.also_possible.insert(Cause::RequestNotReachingWds);
            if relayed_dhcp.is_empty() {
                f.settle("a capture on the client's segment (were requests sent and lost?)");
            } else {
                f.settle(
                    "a capture on the client's segment (the relay may not forward requests to \
                     the WDS server)",
                );
            }
        }
        if self.inputs.protectors.is_none() {
            f.settle("--protectors (manage-bde -protectors -get C: on the client)");
        }
        f
    }
}

fn has_network_protector(text: &str) -> bool {
    text.to_ascii_lowercase()
        .contains("network (certificate based)")
}

fn protector_line(protectors: &TextFile) -> String {
    if has_network_protector(&protectors.text) {
        format!(
            "{}: the Network (Certificate Based) protector is present",
            protectors.file
        )
    } else {
        format!(
            "{}: no Network (Certificate Based) protector: the client cannot send a request",
            protectors.file
        )
    }
}
