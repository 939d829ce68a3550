//! The teaching views of a run, all made from the [`RunResult`] and nothing else, so the same
//! seed gives the same bytes: the narrated transcript (the seed's nine phases numbered,
//! simulated time, who did what and why, keys shortened), the Mermaid sequence diagram, the
//! self-contained HTML report with an SVG diagram, the decoded packets and each client's key
//! chain, the logs in the style of the real products, and the JSON result for machines.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use boot_client::boot::{BootEvent, BootResult};
use boot_client::narration::{self, Narrator};
use unlock_server::provider::Level;

use crate::model::TranscriptDetail;
use crate::recovery_views;
use crate::run::{RunResult, describe_outcome};
use crate::text::esc;
use crate::wire::Packet;
use crate::world::seconds;

pub mod client_checks;
mod diagram;
mod key_chain;
mod summary;

use diagram::{Diagram, MarkKind};

/// One line of the timeline, with what orders it among lines of the same instant.
struct Line {
    at: Duration,
    order: (u8, usize),
    who: String,
    text: String,
}

/// The narrated transcript.
pub fn transcript(result: &RunResult) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Scenario {}: {}", result.name, result.title);
    let _ = writeln!(
        out,
        "Seed {}, {} of simulated time.",
        result.seed,
        seconds(result.duration)
    );
    if !result.teaches.is_empty() {
        let _ = writeln!(out);
        for line in wrap(&result.teaches, 96) {
            let _ = writeln!(out, "  {line}");
        }
    }
    let _ = writeln!(out, "\n== Setup ==");
    for line in &result.setup {
        let _ = writeln!(out, "  {line}");
    }
    let full = result.detail == TranscriptDetail::Full;
    if full {
        for client in &result.clients {
            for line in &client.setup {
                let _ = writeln!(out, "  {}: {line}", client.name);
            }
        }
        let _ = writeln!(out, "\n== Timeline ==");
        for line in timeline(result) {
            let _ = writeln!(
                out,
                "{:>10}  {:<10} {}",
                seconds(line.at),
                line.who,
                line.text
            );
        }
    }
    let _ = writeln!(out, "\n== Outcome ==");
    if full {
        for client in &result.clients {
            let _ = writeln!(
                out,
                "  {}: {}",
                client.name,
                describe_outcome(client.outcome.as_ref())
            );
            if let Some(outcome) = &client.outcome {
                for failure in &outcome.failures {
                    let _ = writeln!(
                        out,
                        "    before that, {} failed: {}",
                        failure.protector.manage_bde_name(),
                        failure.reason
                    );
                }
            }
        }
    } else {
        for line in outcome_summary(result) {
            let _ = writeln!(out, "  {line}");
        }
    }
    for server in &result.servers {
        let counters = server
            .counters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "  {}: {}",
            server.name,
            if counters.is_empty() {
                "no requests".to_string()
            } else {
                counters
            }
        );
    }
    for (segment, packets, _) in &result.segments {
        let _ = writeln!(
            out,
            "  segment {segment}: {} frames ({} Network Unlock requests, {} replies)",
            packets.len(),
            packets.iter().filter(|p| p.is_unlock_request()).count(),
            packets.iter().filter(|p| p.is_unlock_reply()).count()
        );
    }
    out.push_str(&recovery_views::transcript_section(
        result.recovery.as_ref(),
    ));
    let _ = writeln!(out, "\n== Expectations ==");
    if result.checks.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for check in &result.checks {
        let _ = writeln!(
            out,
            "  [{}] {check}",
            if check.met { "ok" } else { "FAILED" }
        );
    }
    out
}

/// Counts of outcomes for storms: how many clients ended which way.
fn outcome_summary(result: &RunResult) -> Vec<String> {
    let mut counts: std::collections::BTreeMap<String, (usize, Duration)> = Default::default();
    for client in &result.clients {
        let key = match client.outcome.as_ref().map(|o| &o.result) {
            Some(BootResult::Unlocked { protector, .. }) => {
                format!("unlocked by {}", protector.manage_bde_name())
            }
            Some(BootResult::Waiting { prompt, .. }) => format!("waiting at {prompt}"),
            Some(BootResult::Stuck { .. }) => "cannot unlock".into(),
            None => "still booting".into(),
        };
        let at = match client.outcome.as_ref().map(|o| &o.result) {
            Some(BootResult::Unlocked { at, .. }) => *at,
            _ => Duration::ZERO,
        };
        let entry = counts.entry(key).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(at);
    }
    counts
        .into_iter()
        .map(|(what, (n, last))| {
            if last > Duration::ZERO {
                format!("{n} client(s) {what} (the last at {})", seconds(last))
            } else {
                format!("{n} client(s) {what}")
            }
        })
        .collect()
}

fn timeline(result: &RunResult) -> Vec<Line> {
    let mut lines = Vec::new();
    for (i, event) in result.events.iter().enumerate() {
        lines.push(Line {
            at: event.at,
            order: (0, i),
            who: event.host.clone(),
            text: format!("[event] {}", event.what),
        });
    }
    for (ci, client) in result.clients.iter().enumerate() {
        for (ei, event) in client.events.iter().enumerate() {
            // The one wording of the boot (`nulab client` tells real boots with it too).
            if let Some(told) = Narrator::default().narrate(event) {
                lines.push(Line {
                    at: event.at(),
                    order: (2, ci * 100_000 + ei),
                    who: client.name.clone(),
                    text: told.text,
                });
            }
        }
        if let Some(BootResult::Unlocked { at, .. }) = client.outcome.as_ref().map(|o| &o.result) {
            lines.push(Line {
                at: *at,
                order: (4, ci),
                who: client.name.clone(),
                text: narration::phase_9(client.label.as_deref().unwrap_or_default()),
            });
        }
    }
    // Phases 4 to 6 come from the provider's own log (it writes them as it recognises,
    // decrypts and replies), as do its drops and service events.
    for (si, server) in result.servers.iter().enumerate() {
        for (li, line) in server.log.iter().enumerate() {
            let text = if line.message.phase().is_some() {
                line.message.to_string()
            } else {
                format!("[WDS] {}", line.message)
            };
            lines.push(Line {
                at: line.at,
                order: (1, si * 1_000_000 + li),
                who: server.name.clone(),
                text,
            });
        }
    }
    let mut pi = 0;
    for (segment, packets, _) in &result.segments {
        for packet in packets {
            pi += 1;
            lines.push(Line {
                at: packet.at,
                order: (3, pi),
                who: format!("[{segment}]"),
                text: format!("{} → {}: {}", packet.from, packet.to, packet.summary()),
            });
        }
    }
    for (i, (at, who, text)) in recovery_views::timeline(result.recovery.as_ref())
        .into_iter()
        .enumerate()
    {
        lines.push(Line {
            at,
            order: (5, i),
            who,
            text,
        });
    }
    lines.sort_by_key(|line| (line.at, line.order));
    lines
}

/// Runs with more clients than this draw a few sampled clients and a summary.
const DRAWN_CLIENTS: usize = 12;

/// The clients the diagrams draw: all of a small run; of a large one, the first and the last
/// to unlock, the median, and the first two that did not unlock.
fn drawn_clients(result: &RunResult) -> BTreeSet<String> {
    if result.clients.len() <= DRAWN_CLIENTS {
        return result.clients.iter().map(|c| c.name.clone()).collect();
    }
    let mut unlocked: Vec<(Duration, &str)> = Vec::new();
    let mut others: Vec<&str> = Vec::new();
    for client in &result.clients {
        match client.outcome.as_ref().map(|o| &o.result) {
            Some(BootResult::Unlocked { at, .. }) => unlocked.push((*at, &client.name)),
            _ => others.push(&client.name),
        }
    }
    unlocked.sort();
    let mut drawn = BTreeSet::new();
    if let (Some(first), Some(last)) = (unlocked.first(), unlocked.last()) {
        drawn.insert(first.1.to_string());
        drawn.insert(unlocked[unlocked.len() / 2].1.to_string());
        drawn.insert(last.1.to_string());
    }
    for name in others.into_iter().take(2) {
        drawn.insert(name.to_string());
    }
    drawn
}

/// What the report and `sequence.mmd` both draw, found once for both: the drawn clients, the
/// frames kept for them ([`diagram::kept_positions`]: a storm's hundred thousand frames sifted
/// by name) and the sequence diagram.
pub struct Drawing {
    drawn: BTreeSet<String>,
    /// The kept frames as positions in `RunResult::segments`, in time order.
    kept: Vec<(usize, usize)>,
    diagram: Diagram,
}

impl Drawing {
    pub fn of(result: &RunResult) -> Drawing {
        let drawn = drawn_clients(result);
        let kept = diagram::kept_positions(result, &drawn);
        let diagram = Diagram::build(result, &drawn, &packets_at(result, &kept));
        Drawing {
            drawn,
            kept,
            diagram,
        }
    }
}

/// The packets at `positions` in `result.segments` (a position the result does not have, from
/// a drawing of another run, is skipped).
fn packets_at<'a>(result: &'a RunResult, positions: &[(usize, usize)]) -> Vec<&'a Packet> {
    positions
        .iter()
        .filter_map(|&(segment, index)| result.segments.get(segment)?.1.get(index))
        .collect()
}

/// The Mermaid sequence diagram: one participant per host adapter (boxed per host), a
/// broadcast or multicast as an arrow to each host on its segment, phases as notes, drops
/// (✗) and time-outs (⏱) marked. A large run draws its sampled clients only, so the file
/// stays far under Mermaid's text limit (50,000 characters by default).
pub fn mermaid(result: &RunResult, drawing: &Drawing) -> String {
    let Drawing { drawn, diagram, .. } = drawing;
    let mut out = String::from("sequenceDiagram\n");
    if drawn.len() < result.clients.len() {
        let _ = writeln!(
            out,
            "    %% {} of {} clients drawn (sampled); report.html has the summary of all",
            drawn.len(),
            result.clients.len()
        );
    }
    let id = |lane: usize| format!("L{lane}");
    for (host, lanes) in diagram.hosts() {
        if lanes.len() > 1 {
            let _ = writeln!(out, "    box {}", mermaid_text(&host));
        }
        for &lane in &lanes {
            let _ = writeln!(
                out,
                "    participant {} as {}",
                id(lane),
                mermaid_text(&diagram.lanes[lane].label())
            );
        }
        if lanes.len() > 1 {
            out.push_str("    end\n");
        }
    }
    for (i, mark) in diagram.marks.iter().enumerate() {
        if out.len() > MERMAID_BUDGET {
            let _ = writeln!(
                out,
                "    Note over L0: {} more marks left out to stay under Mermaid's text limit: report.html and transcript.txt have them all",
                diagram.marks.len() - i
            );
            break;
        }
        let at = seconds(mark.at);
        let text = mermaid_text(&mark.text);
        match &mark.kind {
            MarkKind::Frame { to, group, .. } => {
                let via = group
                    .as_ref()
                    .map(|g| format!(" to {g}"))
                    .unwrap_or_default();
                if to.is_empty() {
                    let _ = writeln!(
                        out,
                        "    Note over {}: {at} {text}{via}, no other host on the segment",
                        id(mark.lane)
                    );
                }
                for &target in to {
                    let _ = writeln!(
                        out,
                        "    {}->>{}: {at} {text}{via}",
                        id(mark.lane),
                        id(target)
                    );
                }
            }
            MarkKind::Note => {
                let _ = writeln!(out, "    Note over {}: {at} {text}", id(mark.lane));
            }
            MarkKind::Drop => {
                let _ = writeln!(out, "    Note over {}: ✗ {at} {text}", id(mark.lane));
            }
            MarkKind::Timeout => {
                let _ = writeln!(out, "    Note over {}: ⏱ {at} {text}", id(mark.lane));
            }
        }
    }
    for client in result.clients.iter().filter(|c| drawn.contains(&c.name)) {
        if let Some(lane) = diagram.lanes.iter().position(|l| l.host == client.name) {
            let _ = writeln!(
                out,
                "    Note over {}: {}",
                id(lane),
                mermaid_text(&describe_outcome(client.outcome.as_ref()))
            );
        }
    }
    out
}

/// Mermaid refuses text past 50,000 characters by default; the diagram stops well before.
const MERMAID_BUDGET: usize = 45_000;

/// Text Mermaid takes in a label: no statement separator, no entity escapes.
fn mermaid_text(text: &str) -> String {
    text.replace(';', ",")
        .replace('#', "no. ")
        .replace('\n', " ")
}

/// The HTML report: self-contained (no external file; one inline script that only records
/// script errors for the browser test), a PASSED/FAILED banner, links to every file of the
/// run, an SVG sequence diagram (sampled clients and a summary for large runs), the key
/// chains, the decoded packets and the transcript.
pub fn html(result: &RunResult, drawing: &Drawing) -> String {
    let mut out = String::new();
    let title = format!("{}: {}", result.name, result.title);
    let passed = result.passed();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{}</title>\n\
         <script>{}</script>\n<style>\
         body{{font-family:sans-serif;font-size:17px;line-height:1.4;margin:1em auto;max-width:1200px;padding:0 1em;overflow-wrap:anywhere}}\
         table{{border-collapse:collapse;max-width:100%;display:block;overflow-x:auto}}\
         td,th{{border:1px solid #ccc;padding:2px 6px;font-size:90%;text-align:left;vertical-align:top}}\
         .ok{{color:#070}}.failed{{color:#b00;font-weight:bold}}code,pre{{font-size:88%}}pre{{white-space:pre-wrap}}\
         .banner{{padding:.5em 1em;font-size:130%;font-weight:bold;color:#fff}}.banner.passed{{background:#2a7a2a}}.banner.failed{{background:#b00}}\
         svg{{max-width:100%;height:auto}}\
         </style></head><body>\n<div class=\"banner {}\" id=\"banner\">{}</div>\n<h1>{}</h1>\n<p>Seed {} &middot; {} simulated</p>\n<p>{}</p>\n",
        esc(&title),
        SELF_CHECK,
        if passed { "passed" } else { "failed" },
        if passed { "PASSED" } else { "FAILED" },
        esc(&title),
        result.seed,
        seconds(result.duration),
        esc(&result.teaches)
    );
    out.push_str("<h2 id=\"files\">Files</h2>\n<p>");
    let links = file_names(result)
        .iter()
        .map(|name| format!("<a href=\"{0}\">{0}</a>", esc(name)))
        .collect::<Vec<_>>()
        .join(" &middot; ");
    out.push_str(&links);
    out.push_str("</p>\n");
    if !result.faults.is_empty() {
        out.push_str("<h2>Faults</h2>\n<ul>\n");
        for fault in &result.faults {
            let _ = writeln!(
                out,
                "<li>{}, from {} to {}</li>",
                esc(&fault.description),
                seconds(fault.from),
                seconds(fault.to)
            );
        }
        out.push_str("</ul>\n");
    }
    out.push_str("<h2 id=\"expectations\">Expectations</h2>\n<ul>\n");
    for check in &result.checks {
        let _ = writeln!(
            out,
            "<li class=\"{}\">{} {}</li>",
            if check.met { "ok" } else { "failed" },
            if check.met { "&#10003;" } else { "&#10007;" },
            esc(&check.to_string())
        );
    }
    out.push_str("</ul>\n<h2 id=\"outcome\">Outcome</h2>\n<ul>\n");
    for line in outcome_summary(result) {
        let _ = writeln!(out, "<li>{}</li>", esc(&line));
    }
    out.push_str("</ul>\n");
    let drawn = &drawing.drawn;
    if drawn.len() < result.clients.len() {
        out.push_str(&summary::html(result, drawn));
    }
    out.push_str("<h2 id=\"sequence\">Sequence</h2>\n");
    if result.packets().next().is_none() {
        out.push_str("<p>No frame crossed a simulated segment in this run: the boot unlocked without the network, and the recovery escrow (HTTPS between the lab's hosts, not in the pcaps) is drawn under Recovery escrow below.</p>\n");
    }
    out.push_str(&svg(&drawing.diagram));
    out.push_str(&key_chain::html(
        result,
        result.clients.iter().filter(|c| drawn.contains(&c.name)),
    ));
    out.push_str("<h2 id=\"packets\">Packets</h2>\n");
    let packets = packets_at(result, &drawing.kept[..drawing.kept.len().min(PACKET_ROWS)]);
    let total = result.packets().count();
    if packets.len() < total {
        let _ = writeln!(
            out,
            "<p>{} of {total} frames: those of the drawn clients and the servers, at most {PACKET_ROWS}; every frame is in the pcap files.</p>",
            packets.len()
        );
    }
    if total == 0 {
        out.push_str("<p>No frames.</p>\n");
    }
    out.push_str("<table><tr><th>time</th><th>segment</th><th>from</th><th>to</th><th>what</th><th>bytes</th></tr>\n");
    for packet in packets {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{} ({})</td><td>{} ({})</td><td>{}</td><td>{}</td></tr>",
            seconds(packet.at),
            esc(&packet.segment),
            esc(&packet.from),
            packet.src,
            esc(&packet.to),
            packet.dst,
            esc(&packet.summary()),
            packet.len
        );
    }
    out.push_str("</table>\n");
    out.push_str(&recovery_views::html(result.recovery.as_ref()));
    out.push_str("<h2 id=\"transcript\">Transcript</h2>\n<pre>");
    out.push_str(&esc(&transcript(result)));
    out.push_str("</pre>\n</body></html>\n");
    out
}

/// The report's only script: it changes nothing the reader sees. It records script errors
/// and, once loaded, the elements wider than the window, as attributes of `<html>`
/// (`data-script-errors`, `data-overflow`, `data-checked`), which the browser test reads.
const SELF_CHECK: &str = "(function(){var h=document.documentElement;window.onerror=function(m){h.setAttribute('data-script-errors',(h.getAttribute('data-script-errors')||'')+m+';');};window.addEventListener('load',function(){var w=window.innerWidth,bad=[];document.querySelectorAll('body *').forEach(function(e){var r=e.getBoundingClientRect();if(r.right>w+1||r.left<-1){bad.push(e.tagName+(e.id?'#'+e.id:'')+':'+Math.round(r.width));}});h.setAttribute('data-overflow',bad.slice(0,8).join(' '));h.setAttribute('data-checked','1');});})();";

/// At most this many rows in the report's packet table.
const PACKET_ROWS: usize = 300;

/// The names of the files a run writes beside the report (as the crate's output list names
/// them).
fn file_names(result: &RunResult) -> Vec<String> {
    let mut names: Vec<String> = ["transcript.txt", "result.json", "sequence.mmd"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (segment, _, _) in &result.segments {
        names.push(format!("{segment}.pcap"));
    }
    for server in &result.servers {
        names.push(format!("wds-{}.log", server.name));
    }
    if !key_log(result).is_empty() {
        names.push(KEY_LOG.to_string());
    }
    if result.clients.len() <= 50 {
        for client in &result.clients {
            names.push(format!("bitlocker-{}.log", client.name));
        }
        for client in result.clients.iter().filter(|c| c.checks.is_some()) {
            names.push(client_checks::file_name(&client.name));
        }
    }
    names.extend(
        recovery_views::outputs(result.recovery.as_ref())
            .into_iter()
            .map(|(name, _)| name),
    );
    names
}

fn svg(diagram: &Diagram) -> String {
    let column = 140;
    let row = 20;
    let top = 62;
    let width = 20 + column * diagram.lanes.len().max(1);
    let height = top + 20 + row * (diagram.marks.len() + 1);
    let x = |lane: usize| 10 + column / 2 + column * lane;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" font-size=\"11\" font-family=\"sans-serif\" role=\"img\" aria-label=\"sequence diagram\">\n<defs><marker id=\"arrow\" markerWidth=\"8\" markerHeight=\"8\" refX=\"8\" refY=\"4\" orient=\"auto\"><path d=\"M0,0 L8,4 L0,8 z\"/></marker></defs>\n"
    );
    for (host, lanes) in diagram.hosts() {
        let (first, last) = (lanes[0], lanes[lanes.len() - 1]);
        let x0 = x(first) - column / 2 + 4;
        let w = column * (last - first + 1) - 8;
        let _ = writeln!(
            out,
            "<rect x=\"{x0}\" y=\"4\" width=\"{w}\" height=\"22\" rx=\"4\" fill=\"#e8eef8\" stroke=\"#6a7fa8\"/><text x=\"{}\" y=\"19\" text-anchor=\"middle\" font-weight=\"bold\" font-size=\"13\">{}</text>",
            x0 + w / 2,
            esc(&host)
        );
        for &lane in &lanes {
            let px = x(lane);
            let _ = writeln!(
                out,
                "<text x=\"{px}\" y=\"42\" text-anchor=\"middle\" fill=\"#555\">{}</text><line x1=\"{px}\" y1=\"48\" x2=\"{px}\" y2=\"{}\" stroke=\"#999\" stroke-dasharray=\"4\"/>",
                esc(&diagram.lanes[lane].segment),
                height - 10
            );
        }
    }
    for (i, mark) in diagram.marks.iter().enumerate() {
        let y = top + row * i;
        let px = x(mark.lane);
        let at = seconds(mark.at);
        match &mark.kind {
            MarkKind::Frame { to, group, unlock } => {
                let colour = if *unlock { "#b05000" } else { "#333" };
                let far = to
                    .iter()
                    .copied()
                    .max_by_key(|&t| x(t).abs_diff(px))
                    .unwrap_or(mark.lane);
                let label_x = (px + x(far)) / 2;
                for &target in to {
                    let _ = writeln!(
                        out,
                        "<line x1=\"{px}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{colour}\" marker-end=\"url(#arrow)\"/>",
                        x(target)
                    );
                }
                if group.is_some() {
                    let _ = writeln!(
                        out,
                        "<circle cx=\"{px}\" cy=\"{y}\" r=\"3\" fill=\"{colour}\"/>"
                    );
                }
                let via = group
                    .as_ref()
                    .map(|g| format!(" → {g}"))
                    .unwrap_or_default();
                // Kept inside the drawing: a label too wide for its place is anchored at an edge.
                let label = format!("{at} {}{via}", mark.text);
                let half = label.chars().count() * 3 + 4;
                let (label_x, anchor) = if label_x + half > width {
                    (width - 4, "end")
                } else if label_x < half {
                    (4, "start")
                } else {
                    (label_x, "middle")
                };
                let _ = writeln!(
                    out,
                    "<text x=\"{label_x}\" y=\"{}\" text-anchor=\"{anchor}\" fill=\"{colour}\">{}</text>",
                    y - 3,
                    esc(&label)
                );
            }
            MarkKind::Note | MarkKind::Drop | MarkKind::Timeout => {
                let (fill, stroke, sign) = match mark.kind {
                    MarkKind::Drop => ("#fde2e2", "#b00", "✗ "),
                    MarkKind::Timeout => ("#fff1c7", "#a07000", "⏱ "),
                    _ => ("#f4f4f4", "#aaa", ""),
                };
                let text = format!("{at} {sign}{}", mark.text);
                let w = (text.chars().count() * 6 + 10).min(column * 3);
                let x0 = px
                    .saturating_sub(w / 2)
                    .max(2)
                    .min(width.saturating_sub(w + 2));
                let _ = writeln!(
                    out,
                    "<rect x=\"{x0}\" y=\"{}\" width=\"{w}\" height=\"16\" fill=\"{fill}\" stroke=\"{stroke}\"/><text x=\"{}\" y=\"{}\">{}</text>",
                    y - 12,
                    x0 + 5,
                    y,
                    esc(&text)
                );
            }
        }
    }
    out.push_str("</svg>");
    out
}

/// The WDS debug log of one server, in the spirit of
/// Microsoft-Windows-Deployment-Services-Diagnostics/Debug (simulated time, no wall clock).
pub fn wds_log(result: &RunResult, server: &str) -> String {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail, and every line is UTF-8 text.
    let _ = write_wds_log(result, server, &mut out);
    String::from_utf8(out)
        .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned())
}

/// [`wds_log`] written line by line into `out`: a storm's log is ten megabytes, not worth
/// building whole before it is written.
pub fn write_wds_log(
    result: &RunResult,
    server: &str,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    if let Some(server) = result.servers.iter().find(|s| s.name == server) {
        for line in &server.log {
            let level = match line.level {
                Level::Debug => "Verbose",
                Level::Info => "Information",
                Level::Error => "Error",
            };
            writeln!(
                out,
                "{} [WDSServer] [BitLocker Network Unlock] {level}: {}",
                crate::world::Seconds(line.at),
                line.message
            )?;
        }
    }
    Ok(())
}

/// The client's BitLocker event log (Microsoft-Windows-BitLocker/BitLocker Management, in
/// spirit): which protector unlocked, and why the earlier ones did not.
pub fn bitlocker_log(client: &crate::run::ClientResult) -> String {
    let mut out = String::new();
    for event in &client.events {
        let line = match event {
            BootEvent::NetworkUnlockSkipped { reason, .. } => Some((
                "Warning",
                format!("Network Unlock was not attempted: {reason}"),
            )),
            BootEvent::ProtectorFailed(failure) => Some((
                "Warning",
                format!(
                    "The {} protector could not unlock the operating system volume: {}",
                    failure.protector.manage_bde_name(),
                    failure.reason
                ),
            )),
            BootEvent::Unlocked { protector, .. } => Some((
                "Information",
                format!(
                    "BitLocker unlocked the operating system volume with the {} protector.",
                    protector.manage_bde_name()
                ),
            )),
            BootEvent::PromptShown { prompt, .. } => {
                Some(("Information", format!("BitLocker shows {prompt}.")))
            }
            _ => None,
        };
        if let Some((level, text)) = line {
            let _ = writeln!(out, "{} {level}: {text}", seconds(event.at()));
        }
    }
    out
}

/// The key log's file name among a run's outputs.
pub const KEY_LOG: &str = "nkpu-keys.log";

/// The run's key log for Wireshark (`wireshark/nkpu.lua`) and `nulab doctor`: each client's
/// `NKPU_SESSION` line as its boot client wrote it, in client order, or nothing when no
/// client released Network Unlock secrets.
pub fn key_log(result: &RunResult) -> String {
    let mut lines: Vec<&str> = Vec::new();
    // A set beside the list: a storm's 100,000 lines are not each compared with all before.
    let mut seen: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for client in &result.clients {
        for event in &client.events {
            if let BootEvent::NetworkUnlockReady { released, .. } = event
                && seen.insert(&*released.key_log)
            {
                lines.push(&released.key_log);
            }
        }
    }
    if lines.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "# Network Unlock key log: NKPU_SESSION <thumbprint> <key protector's first 16 bytes> <session key SK>\n",
    );
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The machine-readable result.
pub fn json(result: &RunResult) -> String {
    let clients = result
        .clients
        .iter()
        .map(|c| {
            let (state, unlocked_by, at_seconds) = match c.outcome.as_ref().map(|o| &o.result) {
                Some(BootResult::Unlocked { protector, at }) => (
                    "unlocked",
                    Some(protector.cli_name()),
                    Some(at.as_secs_f64()),
                ),
                Some(BootResult::Waiting { prompt, since }) => (
                    match prompt {
                        boot_client::boot::Prompt::Pin => "waiting-for-pin",
                        boot_client::boot::Prompt::RecoveryPassword => {
                            "waiting-for-recovery-password"
                        }
                    },
                    None,
                    Some(since.as_secs_f64()),
                ),
                Some(BootResult::Stuck { at }) => ("stuck", None, Some(at.as_secs_f64())),
                None => ("booting", None, None),
            };
            json_view::Client {
                at_seconds,
                failures: c.outcome.as_ref().map_or_else(Vec::new, |o| {
                    o.failures
                        .iter()
                        .map(|f| json_view::Failure {
                            at_seconds: f.at.as_secs_f64(),
                            protector: f.protector.cli_name(),
                            reason: &f.reason,
                        })
                        .collect()
                }),
                name: &c.name,
                state,
                unlocked_by,
            }
        })
        .collect();
    let servers = result
        .servers
        .iter()
        .map(|s| json_view::Server {
            counters: s.counters.iter().map(|(k, v)| (k.as_str(), *v)).collect(),
            name: &s.name,
        })
        .collect();
    let segments = result
        .segments
        .iter()
        .map(|(name, packets, _)| json_view::Segment {
            frames: packets.len(),
            name,
            nkpu_replies: packets.iter().filter(|p| p.is_unlock_reply()).count(),
            nkpu_requests: packets.iter().filter(|p| p.is_unlock_request()).count(),
        })
        .collect();
    let view = json_view::Run {
        checks: &result.checks,
        clients,
        // The scenario's faults with their windows (scenarios without faults write what they
        // did).
        faults: (!result.faults.is_empty()).then(|| {
            result
                .faults
                .iter()
                .map(|f| json_view::Fault {
                    fault: &f.description,
                    from_s: f.from.as_secs_f64(),
                    scope: &f.scope,
                    to_s: f.to.as_secs_f64(),
                })
                .collect()
        }),
        passed: result.passed(),
        recovery: recovery_views::json(result.recovery.as_ref()),
        scenario: &result.name,
        seed: result.seed,
        segments,
        servers,
        title: &result.title,
    };
    let mut text = serde_json::to_string_pretty(&view).unwrap_or_default();
    text.push('\n');
    text
}

/// `result.json`'s shape, serialized straight from the run (a storm's 10,000 clients were a
/// `serde_json::Value` tree first). Every object's fields are in alphabetical order, as
/// `serde_json`'s maps write them, so the file reads as it always has.
mod json_view {
    use std::collections::BTreeMap;

    use serde::Serialize;

    #[derive(Serialize)]
    pub(super) struct Run<'a> {
        pub checks: &'a [crate::check::Check],
        pub clients: Vec<Client<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub faults: Option<Vec<Fault<'a>>>,
        pub passed: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub recovery: Option<serde_json::Value>,
        pub scenario: &'a str,
        pub seed: u64,
        pub segments: Vec<Segment<'a>>,
        pub servers: Vec<Server<'a>>,
        pub title: &'a str,
    }

    #[derive(Serialize)]
    pub(super) struct Client<'a> {
        pub at_seconds: Option<f64>,
        pub failures: Vec<Failure<'a>>,
        pub name: &'a str,
        pub state: &'static str,
        pub unlocked_by: Option<&'static str>,
    }

    #[derive(Serialize)]
    pub(super) struct Failure<'a> {
        pub at_seconds: f64,
        pub protector: &'static str,
        pub reason: &'a str,
    }

    #[derive(Serialize)]
    pub(super) struct Server<'a> {
        pub counters: BTreeMap<&'a str, u64>,
        pub name: &'a str,
    }

    #[derive(Serialize)]
    pub(super) struct Segment<'a> {
        pub frames: usize,
        pub name: &'a str,
        pub nkpu_replies: usize,
        pub nkpu_requests: usize,
    }

    #[derive(Serialize)]
    pub(super) struct Fault<'a> {
        pub fault: &'a str,
        pub from_s: f64,
        pub scope: &'a str,
        pub to_s: f64,
    }
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.split("\n\n") {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + word.len() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        if !line.is_empty() {
            lines.push(line);
        }
        lines.push(String::new());
    }
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escaping_covers_markup() {
        assert_eq!(
            esc("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn wrapping_keeps_words_and_paragraphs() {
        let lines = wrap("one two three four\n\nfive", 9);
        assert_eq!(lines, ["one two", "three", "four", "", "five"]);
    }
}
