//! Parity between the simulator and the real kernel: the two `result.json`s of one scenario
//! compared on what must match (the protector that unlocks each client, its failure reasons,
//! each WDS server's counters) and on time within a tolerance, and printed as a table.
//!
//! Tolerance: the simulator's clock is virtual and its RSA decrypt is modelled, the real run
//! pays process start, real RSA (tens of milliseconds in a debug build) and the scheduler. A
//! client's outcome time and each failure's time must agree within [`TOLERANCE`] (half a
//! second) in every kind of catalogue scenario that runs on real kernels: the happy paths unlock
//! in well under it on both sides, and in fallbacks (a PIN typed after the DHCP retransmission
//! timers, 4 s and more) both sides are driven by the same timers of the same boot core.
//!
//! One kind of scenario gets more: a client whose DHCPv4 exchange ran out its retransmissions
//! (`no DHCP offer after N DISCOVERs`, `no answer from S after N REQUESTs`: a silent DHCP server,
//! a cut link). Each of those N waits is moved by a uniform draw of ±1 s (RFC 2131 §4.1, the
//! `dhcp` client's `jitter`), and the two shells draw from different streams of the same
//! seed (the simulator's one ChaCha20 is shared by the whole network, the real client has its
//! own), so their times are [`TOLERANCE`] plus [`JITTERED_WAIT`] per such wait apart at most
//! (see [`tolerance`]). Each side stays deterministic for a seed.

use std::time::Duration;

use serde_json::Value;

/// How far apart the simulator's and the real kernel's times may be.
pub const TOLERANCE: Duration = Duration::from_millis(500);

/// What each randomized DHCPv4 retransmission wait adds to the tolerance: the jitter's bound.
pub const JITTERED_WAIT: Duration = Duration::from_secs(1);

/// The tolerance on the times of the client `sim` (its entry in the simulator's
/// `result.json`): [`TOLERANCE`], plus [`JITTERED_WAIT`] for each DHCPv4 wait its failures say
/// ran out (the N of `after N DISCOVERs` or `after N REQUESTs`).
pub fn tolerance(sim: &Value) -> Duration {
    let waits: u32 = sim["failures"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["reason"].as_str())
        .filter_map(|reason| {
            let (before, _) = reason
                .split_once(" DISCOVERs")
                .or_else(|| reason.split_once(" REQUESTs"))?;
            before.rsplit(' ').next()?.parse::<u32>().ok()
        })
        .sum();
    TOLERANCE + JITTERED_WAIT * waits
}

/// One compared quantity.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub scenario: String,
    /// `pc1 protector`, `pc1 failures`, `pc1 time`, `wds counters`.
    pub what: String,
    pub simulator: String,
    pub real: String,
    pub matches: bool,
}

/// Compares the simulator's `result.json` with the real kernel's for `scenario`.
pub fn compare(scenario: &str, simulator: &Value, real: &Value) -> Vec<Row> {
    let mut rows = Vec::new();
    let empty = Vec::new();
    let sim_clients = simulator["clients"].as_array().unwrap_or(&empty);
    for sim in sim_clients {
        let name = sim["name"].as_str().unwrap_or_default();
        let real = real["clients"]
            .as_array()
            .and_then(|list| list.iter().find(|c| c["name"].as_str() == Some(name)))
            .unwrap_or(&Value::Null);
        let outcome = |c: &Value| {
            format!(
                "{} {}",
                c["state"].as_str().unwrap_or("none"),
                c["unlocked_by"].as_str().unwrap_or("")
            )
            .trim()
            .to_owned()
        };
        let (s, r) = (outcome(sim), outcome(real));
        rows.push(row(
            scenario,
            format!("{name} outcome"),
            s.clone(),
            r.clone(),
            s == r,
        ));
        let failures = |c: &Value| -> Vec<String> {
            c["failures"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .map(|f| {
                            format!(
                                "{}: {}",
                                f["protector"].as_str().unwrap_or_default(),
                                f["reason"].as_str().unwrap_or_default()
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let (s, r) = (failures(sim), failures(real));
        rows.push(row(
            scenario,
            format!("{name} failures"),
            list(&s),
            list(&r),
            s == r,
        ));
        let times = |c: &Value| -> Vec<f64> {
            std::iter::once(c["at_seconds"].as_f64())
                .chain(
                    c["failures"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|f| f["at_seconds"].as_f64()),
                )
                .flatten()
                .collect()
        };
        let tolerance = tolerance(sim);
        let (s, r) = (times(sim), times(real));
        let close = s.len() == r.len()
            && s.iter()
                .zip(&r)
                .all(|(a, b)| (a - b).abs() <= tolerance.as_secs_f64());
        rows.push(row(
            scenario,
            format!("{name} times (±{}s)", tolerance.as_secs_f64()),
            seconds(&s),
            seconds(&r),
            close,
        ));
    }
    for sim in simulator["servers"].as_array().unwrap_or(&empty) {
        let name = sim["name"].as_str().unwrap_or_default();
        let real = real["servers"]
            .as_array()
            .and_then(|list| list.iter().find(|c| c["name"].as_str() == Some(name)))
            .unwrap_or(&Value::Null);
        let counters = |c: &Value| -> Vec<String> {
            c["counters"]
                .as_object()
                .map(|map| map.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default()
        };
        let (s, r) = (counters(sim), counters(real));
        rows.push(row(
            scenario,
            format!("{name} counters"),
            list(&s),
            list(&r),
            s == r,
        ));
    }
    rows
}

fn row(scenario: &str, what: String, simulator: String, real: String, matches: bool) -> Row {
    Row {
        scenario: scenario.to_owned(),
        what,
        simulator,
        real,
        matches,
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join("; ")
    }
}

fn seconds(times: &[f64]) -> String {
    if times.is_empty() {
        return "-".into();
    }
    times
        .iter()
        .map(|t| format!("{t:.3}s"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rows as a plain-text table: scenario, quantity, simulator, real kernel, verdict.
pub fn table(rows: &[Row]) -> String {
    let headers = ["scenario", "compared", "simulator", "real kernel", ""];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.scenario.clone(),
                r.what.clone(),
                r.simulator.clone(),
                r.real.clone(),
                if r.matches { "ok" } else { "DIFFERS" }.to_owned(),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for cell in &cells {
        for (w, c) in widths.iter_mut().zip(cell) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |fields: [&str; 5]| {
        let text: Vec<String> = fields
            .iter()
            .zip(widths)
            .map(|(f, w)| format!("{f:<w$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(headers);
    for cell in &cells {
        line([&cell[0], &cell[1], &cell[2], &cell[3], &cell[4]]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result(at: f64, reason: &str, replied: u64) -> Value {
        json!({
            "clients": [{"name": "pc1", "state": "unlocked", "unlocked_by": "tpm-and-pin",
                "at_seconds": at,
                "failures": [{"protector": "network-unlock", "reason": reason, "at_seconds": 4.0}]}],
            "servers": [{"name": "wds", "counters": {"replied": replied}}],
        })
    }

    #[test]
    fn equal_outcomes_within_the_tolerance_match() {
        let rows = compare(
            "s",
            &result(9.0002, "no reply", 0),
            &result(9.3, "no reply", 0),
        );
        assert_eq!(rows.len(), 4);
        assert!(rows.iter().all(|r| r.matches), "{rows:?}");
        assert!(table(&rows).contains("pc1 outcome"));
    }

    #[test]
    fn a_different_reason_time_or_counter_differs() {
        let rows = compare(
            "s",
            &result(9.0, "no reply", 0),
            &result(10.0, "refused", 1),
        );
        let differing: Vec<&str> = rows
            .iter()
            .filter(|r| !r.matches)
            .map(|r| r.what.as_str())
            .collect();
        assert_eq!(
            differing,
            ["pc1 failures", "pc1 times (±0.5s)", "wds counters"]
        );
        assert!(table(&rows).contains("DIFFERS"));
    }

    #[test]
    fn each_jittered_dhcp_wait_widens_the_tolerance_by_a_second() {
        let discovers = "adapter 1 (eth0): DHCP failed: no DHCP offer after 4 DISCOVERs; \
                         enumeration stops here";
        assert_eq!(
            tolerance(&result(9.0, discovers, 0)["clients"][0]),
            Duration::from_millis(4500)
        );
        let requests = "DHCP failed: no answer from 10.0.4.2 after 2 REQUESTs";
        assert_eq!(
            tolerance(&result(9.0, requests, 0)["clients"][0]),
            Duration::from_millis(2500)
        );
        assert_eq!(
            tolerance(&result(9.0, "no reply to 2 request(s)", 0)["clients"][0]),
            TOLERANCE
        );
        // Within 4.5 s: the same; beyond it: different.
        let rows = compare(
            "s",
            &result(64.9, discovers, 0),
            &result(65.6, discovers, 0),
        );
        assert!(rows.iter().all(|r| r.matches), "{rows:?}");
        assert_eq!(rows[2].what, "pc1 times (±4.5s)");
        let rows = compare(
            "s",
            &result(60.0, discovers, 0),
            &result(65.0, discovers, 0),
        );
        assert!(!rows[2].matches, "{rows:?}");
    }

    #[test]
    fn a_client_missing_on_the_real_side_differs() {
        let rows = compare("s", &result(1.0, "x", 0), &json!({}));
        assert!(!rows[0].matches);
        assert_eq!(rows[0].real, "none");
    }
}
