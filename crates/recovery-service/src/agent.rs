//! The client agent's decisions, sans-IO: which management point to try next, when to retry,
//! when to fail over, when to give up, and what `BitLockerManagementHandler.log` says about it.
//!
//! The order is the real client's: management points that can speak HTTPS first, in their
//! configured order, then the HTTP ones. Each gets a few attempts with exponential backoff
//! when it is unreachable; a certificate the client does not trust is not retried (it will not
//! become trusted) and the agent fails over. On an HTTP management point the agent checks for
//! the recovery service (the log line the seed documents) but never sends recovery material in
//! cleartext, so escrow fails and is reported: the seed's pitfall, "if the HTTPS management
//! point is unavailable, the client could fail over to an HTTP management point, and then fail
//! to escrow its recovery key".
//!
//! [`EscrowRun`] takes `now` (milliseconds since the Unix epoch, or simulated) and the outcome
//! of each contact, and returns [`Step`]s; [`shell`] moves bytes over real TLS. Only the
//! `Checking for Recovery Service at <URL>` line is documented by Microsoft; the wording of
//! the other log lines is nulab's.

pub mod shell;

use std::fmt;

use crate::wire::{EscrowReply, SERVICE_PATH};

/// A management point as the client's site assignment lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementPoint {
    https: bool,
    host: String,
    port: u16,
}

/// Why a management point's URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManagementPointError {
    #[error("{0:?} is not an http:// or https:// URL with a host")]
    BadUrl(String),
}

impl ManagementPoint {
    /// Parses `https://mp1.contoso.com`, `http://10.0.0.5:8080` and the like (path ignored).
    pub fn parse(url: &str) -> Result<Self, ManagementPointError> {
        let bad = || ManagementPointError::BadUrl(url.chars().take(100).collect());
        let uri: http::Uri = url.parse().map_err(|_| bad())?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad()),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(bad)?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Self { https, host, port })
    }
    pub fn is_https(&self) -> bool {
        self.https
    }
    pub fn host(&self) -> &str {
        &self.host
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The recovery service's URL on this management point.
    pub fn service_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        let default = if self.https { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            format!("{scheme}://{host}{SERVICE_PATH}")
        } else {
            format!("{scheme}://{host}:{}{SERVICE_PATH}", self.port)
        }
    }
}

/// The order the real client tries management points in: HTTPS-capable first, each group in
/// its configured order (a stable partition).
pub fn contact_order(mps: &[ManagementPoint]) -> Vec<ManagementPoint> {
    let (https, http): (Vec<_>, Vec<_>) = mps.iter().cloned().partition(|m| m.https);
    https.into_iter().chain(http).collect()
}

/// Retries and backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts on one management point before failing over (at least 1).
    pub attempts_per_mp: u32,
    pub first_backoff_ms: i64,
    pub max_backoff_ms: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts_per_mp: 3,
            first_backoff_ms: 2_000,
            max_backoff_ms: 30_000,
        }
    }
}

/// What happened when the shell contacted a management point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactResult {
    /// The service committed the escrow and said so.
    Escrowed(EscrowReply),
    Failed(ContactFailure),
}

/// Why one contact failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContactFailure {
    /// No TCP connection, a reset or a timeout: retried, then failed over.
    Unreachable(String),
    /// The server's certificate does not chain to a root the client trusts: failed over.
    UntrustedCertificate(String),
    /// The server refused the handshake for want of a client certificate (TLS alert
    /// `certificate_required`: an HTTPS management point asks for a PKI client certificate):
    /// failed over.
    ClientCertificateRequired(String),
    /// Another TLS failure (protocol version, handshake): failed over.
    Tls(String),
    /// The service answered with an error. 5xx is retried; 4xx is final for the run (the
    /// device is not enrolled, or its request is wrong: another management point, sharing the
    /// same site database, would say the same).
    Refused {
        status: u16,
        error: String,
        detail: String,
    },
    /// A plain-HTTP management point: no material was sent. `status` is what the service's
    /// probe answered (IIS says 403.4 SSL required), `None` if it did not answer.
    HttpsRequired { status: Option<u16> },
}

impl fmt::Display for ContactFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContactFailure::Unreachable(w) => write!(f, "not reachable: {w}"),
            ContactFailure::UntrustedCertificate(w) => {
                write!(f, "the server certificate is not trusted: {w}")
            }
            ContactFailure::Tls(w) | ContactFailure::ClientCertificateRequired(w) => {
                write!(f, "TLS failed: {w}")
            }
            ContactFailure::Refused {
                status,
                error,
                detail,
            } => write!(
                f,
                "the service refused the escrow ({status} {error}): {detail}"
            ),
            ContactFailure::HttpsRequired { status } => match status {
                Some(s) => write!(
                    f,
                    "the management point offers HTTP only (the service answered {s}); \
                     recovery information is sent over HTTPS only"
                ),
                None => write!(
                    f,
                    "the management point offers HTTP only; recovery information is sent over \
                     HTTPS only"
                ),
            },
        }
    }
}

/// What the shell must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Contact this management point. With `send_material` false (an HTTP management point)
    /// the shell may only probe the service URL.
    Contact {
        mp: ManagementPoint,
        url: String,
        send_material: bool,
    },
    /// Nothing to do before this time.
    WaitUntil(i64),
    /// The run is over; see [`EscrowRun::outcome`].
    Finished,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    Escrowed { url: String, reply: EscrowReply },
    Failed(EscrowFailure),
}

/// A failed escrow, as reported to the site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscrowFailure {
    /// Every failed contact, in order.
    pub attempts: Vec<(String, ContactFailure)>,
    /// The client ended on an HTTP management point after the HTTPS ones failed: the seed's
    /// pitfall.
    pub failed_over_to_http: bool,
}

impl fmt::Display for EscrowFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.failed_over_to_http {
            f.write_str(
                "no HTTPS management point was available and the client failed over to an HTTP \
                 management point; recovery information was not escrowed",
            )?;
        } else {
            f.write_str("recovery information was not escrowed")?;
        }
        if let Some((url, why)) = self.attempts.last() {
            write!(f, " (last: {url}: {why})")?;
        }
        Ok(())
    }
}

/// The BitLocker management policy a device is targeted with. The seed's tip: "the only
/// clients that need to communicate with the recovery service are those clients that you plan
/// to target with a BitLocker management policy and includes a Client Management rule". So
/// the agent contacts the recovery service only under such a policy. The seed is silent on
/// what the handler log says otherwise; nulab's choice: nothing at all without a policy (the
/// handler has nothing to do), and one line under a policy without Client Management, so
/// that an admin reading the log learns why nothing was escrowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BitLockerPolicy {
    /// Not targeted by any BitLocker management policy.
    NotTargeted,
    /// Targeted by a policy whose Client Management page does not configure BitLocker
    /// Management Services: encryption settings only.
    WithoutClientManagement,
    /// Targeted by a policy with a Client Management rule.
    #[default]
    WithClientManagement,
}

impl BitLockerPolicy {
    /// Whether the agent backs recovery information up to the recovery service.
    pub fn contacts_recovery_service(self) -> bool {
        self == BitLockerPolicy::WithClientManagement
    }

    /// The handler log's line when the agent does not contact the service, if any.
    pub fn idle_log_line(self, at_ms: i64) -> Option<LogLine> {
        (self == BitLockerPolicy::WithoutClientManagement).then(|| LogLine {
            at_ms,
            severity: Severity::Info,
            text: "BitLocker management policy has no Client Management rule: recovery \
                   information is not escrowed and the Recovery Service is not contacted"
                .to_owned(),
        })
    }

    /// The policy in words, for transcripts.
    pub fn describe(self) -> &'static str {
        match self {
            BitLockerPolicy::NotTargeted => "no BitLocker management policy targets it",
            BitLockerPolicy::WithoutClientManagement => {
                "targeted by a BitLocker management policy without a Client Management rule"
            }
            BitLockerPolicy::WithClientManagement => {
                "targeted by a BitLocker management policy with a Client Management rule"
            }
        }
    }
}

/// Severity of a log line, as CMTrace's `type` attribute numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info = 1,
    Warning = 2,
    Error = 3,
}

/// One line of `BitLockerManagementHandler.log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub at_ms: i64,
    pub severity: Severity,
    pub text: String,
}

impl LogLine {
    /// The line in the CMTrace format every ConfigMgr client log uses.
    pub fn to_cmtrace(&self, thread: u32) -> String {
        let (date, time) = civil_time(self.at_ms);
        format!(
            "<![LOG[{}]LOG]!><time=\"{time}+000\" date=\"{date}\" \
             component=\"BitLockerManagementHandler\" context=\"\" type=\"{}\" \
             thread=\"{thread}\" file=\"\">",
            self.text, self.severity as u8
        )
    }
}

/// A Unix time in milliseconds as UTC calendar parts, by the proleptic Gregorian calendar
/// (Howard Hinnant's days-from-civil inverse; no date crate needed for a log's timestamps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
    pub millisecond: i64,
}

impl UtcTime {
    pub fn from_unix_ms(ms: i64) -> UtcTime {
        let days = ms.div_euclid(86_400_000);
        let rem = ms.rem_euclid(86_400_000);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        UtcTime {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: rem / 3_600_000,
            minute: rem / 60_000 % 60,
            second: rem / 1000 % 60,
            millisecond: rem % 1000,
        }
    }

    /// ISO 8601 in UTC: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub fn iso8601(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{}Z",
            self.year,
            self.month,
            self.day,
            self.clock()
        )
    }

    /// `HH:MM:SS.mmm`.
    pub fn clock(&self) -> String {
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            self.hour, self.minute, self.second, self.millisecond
        )
    }
}

/// `MM-DD-YYYY` and `HH:MM:SS.mmm` (UTC), as the handler log writes them.
fn civil_time(ms: i64) -> (String, String) {
    let t = UtcTime::from_unix_ms(ms);
    (
        format!("{:02}-{:02}-{:04}", t.month, t.day, t.year),
        t.clock(),
    )
}

enum RunState {
    Ready,
    InFlight,
    Waiting(i64),
    Done(RunOutcome),
}

/// One escrow run across the management points.
pub struct EscrowRun {
    order: Vec<ManagementPoint>,
    policy: RetryPolicy,
    cursor: usize,
    tries: u32,
    state: RunState,
    failures: Vec<(String, ContactFailure)>,
    log: Vec<LogLine>,
}

impl EscrowRun {
    pub fn new(mps: &[ManagementPoint], policy: RetryPolicy) -> Self {
        let policy = RetryPolicy {
            attempts_per_mp: policy.attempts_per_mp.max(1),
            first_backoff_ms: policy.first_backoff_ms.max(0),
            max_backoff_ms: policy.max_backoff_ms.max(policy.first_backoff_ms.max(0)),
        };
        Self {
            order: contact_order(mps),
            policy,
            cursor: 0,
            tries: 0,
            state: RunState::Ready,
            failures: Vec::new(),
            log: Vec::new(),
        }
    }

    fn say(&mut self, at_ms: i64, severity: Severity, text: String) {
        self.log.push(LogLine {
            at_ms,
            severity,
            text,
        });
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: i64) -> Step {
        match self.state {
            RunState::Done(_) => return Step::Finished,
            RunState::InFlight => return Step::WaitUntil(i64::MAX),
            RunState::Waiting(until) if now < until => return Step::WaitUntil(until),
            RunState::Waiting(_) | RunState::Ready => {}
        }
        let Some(mp) = self.order.get(self.cursor).cloned() else {
            self.finish_failed(now);
            return Step::Finished;
        };
        let url = mp.service_url();
        self.say(
            now,
            Severity::Info,
            format!("Checking for Recovery Service at {url}"),
        );
        self.tries += 1;
        self.state = RunState::InFlight;
        Step::Contact {
            send_material: mp.https,
            mp,
            url,
        }
    }

    /// The outcome of the contact [`poll`](Self::poll) asked for.
    pub fn on_contact(&mut self, now: i64, result: ContactResult) {
        if !matches!(self.state, RunState::InFlight) {
            return; // a late answer after the run moved on
        }
        let Some(mp) = self.order.get(self.cursor).cloned() else {
            return;
        };
        let url = mp.service_url();
        let failure = match result {
            ContactResult::Escrowed(reply) => {
                self.say(
                    now,
                    Severity::Info,
                    format!(
                        "Recovery information escrowed to {url}: {} record(s) acknowledged",
                        reply.outcomes.len()
                    ),
                );
                for r in &reply.rotate {
                    self.say(
                        now,
                        Severity::Warning,
                        format!(
                            "Recovery Service requests rotation of recovery password {} on \
                             volume {}: {}",
                            r.key_id,
                            r.volume,
                            r.reason.describe()
                        ),
                    );
                }
                self.state = RunState::Done(RunOutcome::Escrowed { url, reply });
                return;
            }
            ContactResult::Failed(f) => f,
        };
        let retryable = match &failure {
            ContactFailure::Unreachable(_) => true,
            ContactFailure::Refused { status, .. } => *status >= 500,
            _ => false,
        };
        let final_for_run =
            matches!(&failure, ContactFailure::Refused { status, .. } if *status < 500);
        let severity = if matches!(failure, ContactFailure::Unreachable(_)) {
            Severity::Warning
        } else {
            Severity::Error
        };
        self.say(
            now,
            severity,
            format!("Recovery Service at {url}: {failure}"),
        );
        self.failures.push((url, failure));
        if final_for_run {
            self.finish_failed(now);
        } else if retryable && self.tries < self.policy.attempts_per_mp {
            let shift = (self.tries - 1).min(30);
            let backoff = self
                .policy
                .first_backoff_ms
                .saturating_mul(1i64 << shift)
                .min(self.policy.max_backoff_ms);
            self.say(
                now,
                Severity::Info,
                format!(
                    "Retrying in {} ms (attempt {} of {})",
                    backoff,
                    self.tries + 1,
                    self.policy.attempts_per_mp
                ),
            );
            self.state = RunState::Waiting(now.saturating_add(backoff));
        } else {
            self.cursor += 1;
            self.tries = 0;
            if let Some(next) = self.order.get(self.cursor) {
                let text = format!("Failing over to management point {}", next.service_url());
                self.say(now, Severity::Warning, text);
                self.state = RunState::Ready;
            } else {
                self.finish_failed(now);
            }
        }
    }

    fn finish_failed(&mut self, now: i64) {
        let any_https = self.order.iter().any(|m| m.https);
        let ended_on_http = self
            .failures
            .last()
            .is_some_and(|(_, f)| matches!(f, ContactFailure::HttpsRequired { .. }));
        let failure = EscrowFailure {
            attempts: std::mem::take(&mut self.failures),
            failed_over_to_http: any_https && ended_on_http,
        };
        if self.order.is_empty() {
            self.say(
                now,
                Severity::Error,
                "No management point is configured".into(),
            );
        }
        self.say(
            now,
            Severity::Error,
            format!("Failed to escrow recovery information: {failure}"),
        );
        self.state = RunState::Done(RunOutcome::Failed(failure));
    }

    /// The outcome, once [`poll`](Self::poll) returned [`Step::Finished`].
    pub fn outcome(&self) -> Option<&RunOutcome> {
        match &self.state {
            RunState::Done(o) => Some(o),
            _ => None,
        }
    }

    pub fn log(&self) -> &[LogLine] {
        &self.log
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;

    #[test]
    fn only_a_policy_with_client_management_contacts_the_recovery_service() {
        assert!(BitLockerPolicy::WithClientManagement.contacts_recovery_service());
        assert!(!BitLockerPolicy::WithoutClientManagement.contacts_recovery_service());
        assert!(!BitLockerPolicy::NotTargeted.contacts_recovery_service());
        assert_eq!(
            BitLockerPolicy::default(),
            BitLockerPolicy::WithClientManagement
        );
        assert!(BitLockerPolicy::NotTargeted.idle_log_line(1).is_none());
        let line = BitLockerPolicy::WithoutClientManagement
            .idle_log_line(5)
            .expect("a line");
        assert!(line.text.contains("no Client Management rule") && line.at_ms == 5);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mps(urls: &[&str]) -> Vec<ManagementPoint> {
        urls.iter()
            .map(|u| ManagementPoint::parse(u).expect("valid"))
            .collect()
    }

    fn reply() -> EscrowReply {
        EscrowReply {
            outcomes: vec![],
            rotate: vec![],
        }
    }

    const FAST: RetryPolicy = RetryPolicy {
        attempts_per_mp: 2,
        first_backoff_ms: 1000,
        max_backoff_ms: 1500,
    };

    #[test]
    fn urls_parse_and_print_like_the_client_log() {
        let m = ManagementPoint::parse("https://cm1.contoso.com").expect("valid");
        assert_eq!(
            m.service_url(),
            "https://cm1.contoso.com/SMS_MP_MBAM/CoreService.svc"
        );
        let m = ManagementPoint::parse("http://10.0.0.5:8080/whatever").expect("valid");
        assert_eq!(
            (m.is_https(), m.host(), m.port()),
            (false, "10.0.0.5", 8080)
        );
        assert_eq!(
            m.service_url(),
            "http://10.0.0.5:8080/SMS_MP_MBAM/CoreService.svc"
        );
        assert!(ManagementPoint::parse("ftp://x").is_err());
        assert!(ManagementPoint::parse("cm1").is_err());
    }

    #[test]
    fn https_capable_points_come_first_in_configured_order() {
        let order = contact_order(&mps(&["http://a", "https://b", "http://c", "https://d"]));
        let hosts: Vec<&str> = order.iter().map(ManagementPoint::host).collect();
        assert_eq!(hosts, ["b", "d", "a", "c"]);
    }

    #[test]
    fn first_https_point_escrows() {
        let mut run = EscrowRun::new(&mps(&["http://mp2", "https://mp1"]), FAST);
        match run.poll(0) {
            Step::Contact {
                mp, send_material, ..
            } => {
                assert_eq!(mp.host(), "mp1");
                assert!(send_material);
            }
            other => panic!("{other:?}"),
        }
        run.on_contact(5, ContactResult::Escrowed(reply()));
        assert_eq!(run.poll(5), Step::Finished);
        assert!(matches!(run.outcome(), Some(RunOutcome::Escrowed { .. })));
        assert_eq!(
            run.log()[0].text,
            "Checking for Recovery Service at https://mp1/SMS_MP_MBAM/CoreService.svc"
        );
    }

    #[test]
    fn unreachable_is_retried_with_backoff_then_fails_over_to_http_and_fails() {
        let mut run = EscrowRun::new(&mps(&["https://mp1", "http://mp2"]), FAST);
        assert!(matches!(run.poll(0), Step::Contact { .. }));
        run.on_contact(
            10,
            ContactResult::Failed(ContactFailure::Unreachable("refused".into())),
        );
        assert_eq!(run.poll(10), Step::WaitUntil(1010));
        assert_eq!(run.poll(500), Step::WaitUntil(1010));
        assert!(matches!(run.poll(1010), Step::Contact { ref mp, .. } if mp.host() == "mp1"));
        run.on_contact(
            1020,
            ContactResult::Failed(ContactFailure::Unreachable("refused".into())),
        );
        // Two attempts used: fail over to the HTTP point, which may only be probed.
        match run.poll(1020) {
            Step::Contact {
                mp, send_material, ..
            } => {
                assert_eq!(mp.host(), "mp2");
                assert!(!send_material);
            }
            other => panic!("{other:?}"),
        }
        run.on_contact(
            1030,
            ContactResult::Failed(ContactFailure::HttpsRequired { status: Some(403) }),
        );
        assert_eq!(run.poll(1030), Step::Finished);
        let Some(RunOutcome::Failed(f)) = run.outcome() else {
            panic!("expected failure");
        };
        assert!(f.failed_over_to_http);
        assert_eq!(f.attempts.len(), 3);
        let texts: Vec<&str> = run.log().iter().map(|l| l.text.as_str()).collect();
        assert!(
            texts.contains(
                &"Checking for Recovery Service at http://mp2/SMS_MP_MBAM/CoreService.svc"
            )
        );
        let last = run.log().last().expect("log");
        assert_eq!(last.severity, Severity::Error);
        assert!(
            last.text
                .contains("failed over to an HTTP management point")
        );
    }

    #[test]
    fn an_untrusted_certificate_is_not_retried() {
        let mut run = EscrowRun::new(&mps(&["https://mp1", "https://mp3"]), FAST);
        assert!(matches!(run.poll(0), Step::Contact { .. }));
        run.on_contact(
            1,
            ContactResult::Failed(ContactFailure::UntrustedCertificate("UnknownIssuer".into())),
        );
        assert!(matches!(run.poll(1), Step::Contact { ref mp, .. } if mp.host() == "mp3"));
        run.on_contact(
            2,
            ContactResult::Failed(ContactFailure::UntrustedCertificate("UnknownIssuer".into())),
        );
        assert_eq!(run.poll(2), Step::Finished);
        let Some(RunOutcome::Failed(f)) = run.outcome() else {
            panic!("expected failure");
        };
        assert!(!f.failed_over_to_http);
        assert!(f.to_string().contains("not trusted"));
    }

    #[test]
    fn a_4xx_refusal_ends_the_run_and_5xx_is_retried() {
        let refused = |status| {
            ContactResult::Failed(ContactFailure::Refused {
                status,
                error: "x".into(),
                detail: "y".into(),
            })
        };
        let mut run = EscrowRun::new(&mps(&["https://mp1", "https://mp3"]), FAST);
        run.poll(0);
        run.on_contact(1, refused(503));
        assert_eq!(run.poll(1), Step::WaitUntil(1001));
        run.poll(1001);
        run.on_contact(1002, refused(401));
        assert_eq!(run.poll(1002), Step::Finished);
    }

    #[test]
    fn no_management_point_fails_at_once() {
        let mut run = EscrowRun::new(&[], FAST);
        assert_eq!(run.poll(0), Step::Finished);
        assert!(matches!(run.outcome(), Some(RunOutcome::Failed(_))));
    }

    #[test]
    fn cmtrace_lines_carry_utc_date_and_time() {
        let l = LogLine {
            at_ms: 1_617_580_800_123, // 2021-04-05 00:00:00.123 UTC
            severity: Severity::Error,
            text: "Checking for Recovery Service at https://a/SMS_MP_MBAM/CoreService.svc".into(),
        };
        assert_eq!(
            l.to_cmtrace(7),
            "<![LOG[Checking for Recovery Service at https://a/SMS_MP_MBAM/CoreService.svc]LOG]!>\
             <time=\"00:00:00.123+000\" date=\"04-05-2021\" component=\"BitLockerManagementHandler\" \
             context=\"\" type=\"3\" thread=\"7\" file=\"\">"
        );
        assert_eq!(civil_time(0), ("01-01-1970".into(), "00:00:00.000".into()));
        assert_eq!(civil_time(951_782_400_000).0, "02-29-2000");
    }

    proptest! {
        #[test]
        fn arbitrary_urls_never_panic(s in ".{0,60}") {
            let _ = ManagementPoint::parse(&s);
        }

        #[test]
        fn every_run_finishes(fails in proptest::collection::vec(0u8..5, 0..20), n_https in 0usize..3, n_http in 0usize..3) {
            let mut urls: Vec<String> = (0..n_https).map(|i| format!("https://s{i}")).collect();
            urls.extend((0..n_http).map(|i| format!("http://p{i}")));
            let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
            let mut run = EscrowRun::new(&mps(&refs), FAST);
            let mut now = 0i64;
            let mut script = fails.into_iter();
            for _ in 0..100 {
                match run.poll(now) {
                    Step::Finished => break,
                    Step::WaitUntil(t) => now = t,
                    Step::Contact { send_material, .. } => {
                        let r = if !send_material {
                            ContactFailure::HttpsRequired { status: None }
                        } else {
                            match script.next() {
                                Some(0) | None => ContactFailure::Unreachable("x".into()),
                                Some(1) => ContactFailure::UntrustedCertificate("x".into()),
                                Some(2) => ContactFailure::Tls("x".into()),
                                Some(3) => ContactFailure::Refused { status: 503, error: "e".into(), detail: "d".into() },
                                Some(_) => { run.on_contact(now, ContactResult::Escrowed(reply())); continue; }
                            }
                        };
                        run.on_contact(now, ContactResult::Failed(r));
                    }
                }
            }
            prop_assert!(run.outcome().is_some());
        }
    }
}
