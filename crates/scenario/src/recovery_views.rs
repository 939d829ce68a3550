//! The teaching views of recovery-key escrow, made from [`RecoveryResult`](crate::recovery::RecoveryResult) only (so the same
//! seed gives the same bytes): the timeline lines the transcript interleaves with the boots,
//! the transcript's "Recovery service" section (each agent's cycles, what the database stores,
//! ciphertext or plaintext, and the audit), the HTML section, the `recovery` object of
//! `result.json`, and the files in the real products' style: each client's
//! `BitLockerManagementHandler.log` (CMTrace lines), the service's audit log and a dump of the
//! database rows. A scenario without a recovery service gets none of them: every function
//! returns nothing, so its outputs are exactly what they were before recovery existed.

use std::fmt::Write as _;
use std::time::Duration;

use recovery_service::record::KeyId;
use recovery_service::store::RawRow;
use serde_json::{Value, json};

use crate::model::TrustSpec;
use crate::recovery::{RecoveryResult, cycle_result, rotated_after, short, trust_words};
use crate::text::esc;

/// Timeline lines (scenario time, who, text) for the transcript.
pub fn timeline(recovery: Option<&RecoveryResult>) -> Vec<(Duration, String, String)> {
    recovery.map(|r| r.timeline.clone()).unwrap_or_default()
}

/// `YYYY-MM-DD HH:MM:SS.mmm` UTC of a lab time (milliseconds since the Unix epoch).
pub fn lab_time(at_ms: i64) -> String {
    let t = recovery_service::agent::UtcTime::from_unix_ms(at_ms);
    format!("{:04}-{:02}-{:02} {}", t.year, t.month, t.day, t.clock())
}

/// A stored row's material as the transcript shows it: readable text for a plaintext row
/// (shortened), or the ciphertext's first bytes and length.
fn material(row: &RawRow, long: bool) -> String {
    if row.sealing == 0 {
        let text = String::from_utf8_lossy(&row.material);
        if long {
            format!("plaintext: {}", text.replace('\n', "\n    "))
        } else {
            // One line in the transcript: a key package is multi-line JSON.
            let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
            format!(
                "plaintext, readable as is: {}…",
                flat.chars().take(13).collect::<String>()
            )
        }
    } else {
        let hex = hex::encode(&row.material);
        format!(
            "AES-256-GCM ciphertext ({} bytes, nonce {}): {}",
            row.material.len(),
            if long {
                hex::encode(&row.nonce)
            } else {
                format!(
                    "{}…",
                    &hex::encode(&row.nonce)[..8.min(row.nonce.len() * 2)]
                )
            },
            if long {
                hex
            } else {
                format!("{}…", &hex[..16.min(hex.len())])
            }
        )
    }
}

fn row_key(row: &RawRow) -> String {
    KeyId::new(row.key_id.clone())
        .map(|k| short(&k))
        .unwrap_or_else(|_| row.key_id.clone())
}

/// The transcript's section, or nothing.
pub fn transcript_section(recovery: Option<&RecoveryResult>) -> String {
    let Some(r) = recovery else {
        return String::new();
    };
    let mut out = String::from("\n== Recovery service ==\n");
    let _ = writeln!(
        out,
        "  database: {}",
        if r.encrypted {
            "\"Encrypt recovery data in the database\" on: AES-256-GCM under a key kept outside the database file"
        } else {
            "unencrypted (the comparison mode): recovery material is stored as it arrives"
        }
    );
    for line in &r.management_points {
        let _ = writeln!(out, "  {line}");
    }
    for agent in &r.agents {
        let last = agent.cycles.last();
        let _ = writeln!(
            out,
            "  {}: {} (recovery key ID {} when BitLocker was enabled; trusts {})",
            agent.client,
            match last {
                Some(c) if c.summary.escrowed => "escrowed",
                _ => "NOT escrowed",
            },
            short(&agent.key_id),
            trust_words(agent.trust)
        );
        for cycle in &agent.cycles {
            let _ = writeln!(
                out,
                "    {} ({}): {}",
                lab_time(cycle.at_ms),
                cycle.why,
                cycle_result(&cycle.summary)
            );
        }
        for (old, new, reason, _) in &agent.rotations {
            let _ = writeln!(
                out,
                "    rotated after {}: {} → {}",
                rotated_after(*reason),
                short(old),
                short(new)
            );
        }
    }
    let _ = writeln!(out, "  records stored ({}):", r.database.rows.len());
    if r.database.rows.is_empty() {
        let _ = writeln!(out, "    (none)");
    }
    for row in &r.database.rows {
        let _ = writeln!(
            out,
            "    {}/{} {} {} v{}, escrowed {}{}: {}",
            row.device,
            row.volume,
            row.kind,
            row_key(row),
            row.version,
            lab_time(row.escrowed_at),
            row.retired_at
                .map(|at| format!(", retired {}", lab_time(at)))
                .unwrap_or_default(),
            material(row, false)
        );
    }
    let _ = writeln!(out, "  audit log ({}):", r.audit.len());
    if r.audit.is_empty() {
        let _ = writeln!(out, "    (none)");
    }
    for entry in &r.audit {
        let _ = writeln!(out, "    {}", audit_line(entry, false));
    }
    out
}

fn audit_line(entry: &recovery_service::store::AuditEntry, long: bool) -> String {
    let key = entry.key_id.as_ref().map(|k| {
        if long {
            k.clone()
        } else {
            KeyId::new(k.clone())
                .map(|k| short(&k))
                .unwrap_or_else(|_| k.clone())
        }
    });
    format!(
        "#{} {} {} ({}) asked for {} {:?}{}: {} (reason: {:?})",
        entry.seq,
        lab_time(entry.at),
        entry.operator,
        entry.role,
        entry.kind,
        entry.query,
        match (&key, &entry.device, &entry.volume) {
            (Some(k), Some(d), Some(v)) => format!(" → {d}/{v} key ID {k}"),
            _ => String::new(),
        },
        entry.outcome,
        entry.reason
    )
}

/// The report's section, or nothing.
pub fn html(recovery: Option<&RecoveryResult>) -> String {
    let Some(r) = recovery else {
        return String::new();
    };
    let mut out = String::from("<h2 id=\"recovery\">Recovery escrow</h2>\n");
    if !r.management_points.is_empty() {
        out.push_str("<ul>\n");
        for line in &r.management_points {
            let _ = writeln!(out, "<li>{}</li>", esc(line));
        }
        out.push_str("</ul>\n");
    }
    for agent in &r.agents {
        let _ = writeln!(
            out,
            "<h3>{}: escrow timeline</h3>\n<table><tr><th>time</th><th>why</th><th>management point</th><th>protocol</th><th>result</th></tr>",
            esc(&agent.client)
        );
        // Every contact of every cycle: the failures in order, then where it escrowed.
        let mut attempts: Vec<(i64, String, bool)> = Vec::new();
        for cycle in &agent.cycles {
            let s = &cycle.summary;
            for (url, why) in &s.failures {
                attempts.push((cycle.at_ms, url.clone(), false));
                let _ = writeln!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"failed\">&#10007; {}</td></tr>",
                    esc(&lab_time(cycle.at_ms)),
                    esc(cycle.why),
                    esc(url),
                    protocol(url),
                    esc(why)
                );
            }
            if let (true, Some(url)) = (s.escrowed, &s.url) {
                attempts.push((cycle.at_ms, url.clone(), true));
            }
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{} {}</td></tr>",
                esc(&lab_time(cycle.at_ms)),
                esc(cycle.why),
                esc(s.url.as_deref().unwrap_or("-")),
                s.url.as_deref().map_or("-", protocol),
                if s.escrowed { "ok" } else { "failed" },
                if s.escrowed { "&#10003;" } else { "&#10007;" },
                esc(&cycle_result(s))
            );
        }
        out.push_str("</table>\n");
        out.push_str(&attempts_svg(&agent.client, &attempts));
        if !agent.handler_log.is_empty() {
            let _ = writeln!(
                out,
                "<details><summary>BitLockerManagementHandler.log ({} lines)</summary><pre>{}</pre></details>",
                agent.handler_log.len(),
                esc(&agent.handler_log.join("\n"))
            );
        }
    }
    let _ = writeln!(
        out,
        "<h3>Database: {} record(s)</h3>\n<p>{}</p>\n<table><tr><th>device</th><th>volume</th><th>kind</th><th>key ID</th><th>version</th><th>escrowed</th><th>retired</th><th>stored</th></tr>",
        r.database.rows.len(),
        esc(&r.database.label)
    );
    for row in &r.database.rows {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            esc(&row.device),
            esc(&row.volume),
            esc(&row.kind),
            esc(&row_key(row)),
            row.version,
            esc(&lab_time(row.escrowed_at)),
            esc(&row.retired_at.map(lab_time).unwrap_or_else(|| "-".into())),
            esc(&material(row, false))
        );
    }
    let _ = writeln!(
        out,
        "</table>\n<h3>Audit log: {} entr{}</h3>\n<table><tr><th>no.</th><th>time</th><th>operator</th><th>role</th><th>asked for</th><th>reason</th><th>outcome</th></tr>",
        r.audit.len(),
        if r.audit.len() == 1 { "y" } else { "ies" }
    );
    for entry in &r.audit {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} &quot;{}&quot;{}</td><td>{}</td><td>{}</td></tr>",
            entry.seq,
            esc(&lab_time(entry.at)),
            esc(&entry.operator),
            esc(&entry.role),
            esc(&entry.kind),
            esc(&entry.query),
            entry
                .device
                .as_ref()
                .map(|d| format!(" → {}", esc(d)))
                .unwrap_or_default(),
            esc(&entry.reason),
            esc(&entry.outcome)
        );
    }
    out.push_str("</table>\n");
    out
}

/// `HTTPS` or `HTTP`, from a URL.
fn protocol(url: &str) -> &'static str {
    if url.starts_with("https:") {
        "HTTPS"
    } else if url.starts_with("http:") {
        "HTTP"
    } else {
        "?"
    }
}

/// An agent's contacts drawn: the client's lifeline and one per management point, an arrow
/// per contact, red with ✗ when it failed (a failover is the next arrow to another point).
fn attempts_svg(client: &str, attempts: &[(i64, String, bool)]) -> String {
    let mut points: Vec<&str> = Vec::new();
    for (_, url, _) in attempts {
        if !points.contains(&url.as_str()) {
            points.push(url);
        }
    }
    if attempts.is_empty() {
        return String::new();
    }
    let column = 300;
    let row = 24;
    let width = 40 + column * (points.len() + 1).min(4);
    let height = 50 + row * attempts.len();
    let x = |i: usize| 20 + column / 2 + column * i;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" font-size=\"12\" font-family=\"sans-serif\" role=\"img\" aria-label=\"escrow attempts\">\n<defs><marker id=\"esc-arrow\" markerWidth=\"8\" markerHeight=\"8\" refX=\"8\" refY=\"4\" orient=\"auto\"><path d=\"M0,0 L8,4 L0,8 z\"/></marker></defs>\n"
    );
    let lane = |out: &mut String, i: usize, name: &str| {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"16\" text-anchor=\"middle\" font-weight=\"bold\">{}</text><line x1=\"{}\" y1=\"24\" x2=\"{}\" y2=\"{}\" stroke=\"#999\" stroke-dasharray=\"4\"/>",
            x(i),
            esc(name),
            x(i),
            x(i),
            height - 4
        );
    };
    lane(&mut out, 0, client);
    for (i, point) in points.iter().enumerate() {
        let host = point
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or(point);
        lane(&mut out, i + 1, &format!("{} ({})", host, protocol(point)));
    }
    for (n, (at, url, ok)) in attempts.iter().enumerate() {
        let y = 44 + row * n;
        let to = x(1 + points.iter().position(|p| p == url).unwrap_or(0));
        let colour = if *ok { "#070" } else { "#b00" };
        let _ = writeln!(
            out,
            "<line x1=\"{}\" y1=\"{y}\" x2=\"{to}\" y2=\"{y}\" stroke=\"{colour}\" marker-end=\"url(#esc-arrow)\"/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{colour}\">{} {}</text>",
            x(0),
            (x(0) + to) / 2,
            y - 4,
            esc(&lab_time(*at)),
            if *ok { "✓ escrowed" } else { "✗ failed" }
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The `recovery` object of `result.json`, or nothing.
pub fn json(recovery: Option<&RecoveryResult>) -> Option<Value> {
    let r = recovery?;
    let agents: Vec<Value> = r
        .agents
        .iter()
        .map(|a| {
            json!({
                "client": a.client,
                "management_points": a.urls,
                "trust": match a.trust {
                    TrustSpec::PublicRoots => "public-roots",
                    TrustSpec::OrganisationRoot => "organisation-root",
                },
                "key_id": a.key_id.as_str(),
                "escrowed": a.cycles.last().is_some_and(|c| c.summary.escrowed),
                "cycles": a.cycles.iter().map(|c| json!({
                    "at": lab_time(c.at_ms),
                    "why": c.why,
                    "escrowed": c.summary.escrowed,
                    "url": c.summary.url,
                    "failed_over_to_http": c.summary.failed_over_to_http,
                    "untrusted_certificate": c.summary.untrusted_certificate,
                    "failures": c.summary.failures.iter().map(|(url, why)| json!({"url": url, "why": why})).collect::<Vec<_>>(),
                    "acknowledged": c.summary.acknowledged.iter().map(|(kind, key, outcome)| json!({"kind": kind, "key_id": key.as_str(), "outcome": outcome})).collect::<Vec<_>>(),
                    "rotations": c.summary.rotations.iter().map(|r| json!({"old": r.old.as_str(), "new": r.new.as_str()})).collect::<Vec<_>>(),
                    "re_escrowed": c.summary.re_escrowed,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let helpdesk: Vec<Value> = r
        .helpdesk
        .iter()
        .map(|h| {
            json!({
                "at": lab_time(h.at_ms),
                "operator": h.operator,
                "role": h.role.label(),
                "client": h.client,
                "query": h.query,
                "disclosed_key_id": h.outcome.as_ref().ok().map(|(k, _)| k.as_str()),
                "refused": h.outcome.as_ref().err(),
                "audit_seq": h.audit_seq,
                "rotation_requested": h.rotation_requested,
                "unlocks": h.unlocks,
            })
        })
        .collect();
    let records: Vec<Value> = r
        .database
        .rows
        .iter()
        .map(|row| {
            json!({
                "device": row.device,
                "volume": row.volume,
                "key_id": row.key_id,
                "kind": row.kind,
                "version": row.version,
                "encrypted": row.sealing == 1,
                "stored_bytes": row.material.len(),
                "escrowed_at": lab_time(row.escrowed_at),
                "retired_at": row.retired_at.map(lab_time),
            })
        })
        .collect();
    Some(json!({
        "database_encrypted": r.encrypted,
        "agents": agents,
        "helpdesk": helpdesk,
        "records": records,
        "audit": r.audit,
    }))
}

/// The files of the recovery lab, by name, in a fixed order.
pub fn outputs(recovery: Option<&RecoveryResult>) -> Vec<(String, Vec<u8>)> {
    let Some(r) = recovery else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for agent in &r.agents {
        let mut log = agent.handler_log.join("\n");
        if !log.is_empty() {
            log.push('\n');
        }
        files.push((
            format!("BitLockerManagementHandler-{}.log", agent.client),
            log.into_bytes(),
        ));
    }
    let mut audit = String::new();
    for entry in &r.audit {
        let _ = writeln!(audit, "{}", audit_line(entry, true));
    }
    files.push(("recovery-audit.log".into(), audit.into_bytes()));
    let mut db = format!("# {}\n", r.database.label);
    for row in &r.database.rows {
        let _ = writeln!(
            db,
            "{}/{} {} {} v{} escrowed {}{}{}\n  {}",
            row.device,
            row.volume,
            row.kind,
            row.key_id,
            row.version,
            lab_time(row.escrowed_at),
            row.rotation_requested_at
                .map(|at| format!(" rotation-requested {}", lab_time(at)))
                .unwrap_or_default(),
            row.retired_at
                .map(|at| format!(" retired {}", lab_time(at)))
                .unwrap_or_default(),
            material(row, true)
        );
    }
    files.push(("recovery-database.txt".into(), db.into_bytes()));
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_times_are_civil_utc() {
        assert_eq!(
            lab_time(recovery_service::sim::DEFAULT_START_MS),
            "2021-04-05 08:00:00.000"
        );
        assert_eq!(lab_time(0), "1970-01-01 00:00:00.000");
        assert_eq!(lab_time(951_825_600_123), "2000-02-29 12:00:00.123");
        assert_eq!(lab_time(-1), "1969-12-31 23:59:59.999");
    }

    fn row(sealing: i64, material: &[u8]) -> RawRow {
        RawRow {
            device: "pc1".into(),
            volume: "C".into(),
            key_id: "1A2B3C4D-0000-0000-0000-000000000000".into(),
            kind: "recovery-password".into(),
            version: 1,
            sealing,
            nonce: if sealing == 1 {
                vec![7; 12]
            } else {
                Vec::new()
            },
            material: material.to_vec(),
            escrowed_at: 0,
            rotation_requested_at: None,
            retired_at: None,
        }
    }

    #[test]
    fn stored_material_reads_as_plaintext_or_ciphertext() {
        let plain = row(0, b"123456-234567-345678");
        assert_eq!(
            material(&plain, false),
            "plaintext, readable as is: 123456-234567…"
        );
        assert_eq!(material(&plain, true), "plaintext: 123456-234567-345678");
        let sealed = row(1, &[0xab; 20]);
        assert_eq!(
            material(&sealed, false),
            "AES-256-GCM ciphertext (20 bytes, nonce 07070707…): abababababababab…"
        );
        assert!(material(&sealed, true).ends_with(&"ab".repeat(20)));
        let package = row(0, b"{\n  \"format\": 1\n}");
        assert_eq!(
            material(&package, false),
            "plaintext, readable as is: { \"format\": 1…"
        );
        assert_eq!(
            material(&package, true),
            "plaintext: {\n      \"format\": 1\n    }"
        );
        assert_eq!(row_key(&plain), "1A2B3C4D…");
    }
}
