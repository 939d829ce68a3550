//! The summary of a large run, in place of a diagram nobody could open: per-outcome client
//! counts (the report's Outcome section), the unlock-time histogram with its percentiles, each
//! WDS server's requests in hand over time (read from the provider's own log: a request is
//! in hand from its phase 4 line until its phase 6 line or its drop after decryption began,
//! i.e. queued or being processed), and which clients the diagram samples.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use boot_client::boot::BootResult;
use unlock_server::provider::DropReason;

use crate::run::RunResult;
use crate::text::esc;
use crate::world::seconds;

/// Each unlocked client's time from power-on to unlock, sorted.
pub fn unlock_times(result: &RunResult) -> Vec<Duration> {
    let mut times: Vec<Duration> = result
        .clients
        .iter()
        .filter_map(|c| match c.outcome.as_ref().map(|o| &o.result) {
            Some(BootResult::Unlocked { at, .. }) => Some(at.saturating_sub(c.boot_at)),
            _ => None,
        })
        .collect();
    times.sort();
    times
}

/// The `p`-th percentile (nearest rank) of sorted `times`.
pub fn percentile(times: &[Duration], p: usize) -> Option<Duration> {
    if times.is_empty() {
        return None;
    }
    let rank = (p * times.len()).div_ceil(100).clamp(1, times.len());
    times.get(rank - 1).copied()
}

/// `bins` equal bins from the first to the last time: (bin start, bin end, count).
pub fn histogram(times: &[Duration], bins: usize) -> Vec<(Duration, Duration, usize)> {
    let (Some(&lo), Some(&hi)) = (times.first(), times.last()) else {
        return Vec::new();
    };
    let bins = bins.max(1);
    let span = (hi - lo).max(Duration::from_micros(1));
    let step = span / bins as u32;
    let step = step.max(Duration::from_micros(1));
    let mut counts = vec![0usize; bins];
    for &t in times {
        let i = ((t - lo).as_nanos() / step.as_nanos()) as usize;
        counts[i.min(bins - 1)] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, n)| (lo + step * i as u32, lo + step * (i as u32 + 1), n))
        .collect()
}

/// A server's requests in hand (queued or being decrypted) after each change: (time, count).
pub fn in_hand<'a>(
    log: impl IntoIterator<Item = &'a unlock_server::provider::LogLine>,
) -> Vec<(Duration, usize)> {
    let mut n = 0usize;
    let mut points = Vec::new();
    for line in log {
        // A request leaves the server's hands when it is answered or dropped after it was
        // recognised.
        let late_drop = line
            .message
            .drop_reason()
            .is_some_and(DropReason::after_recognition);
        match line.message.phase() {
            Some(4) => n += 1,
            Some(6) => n = n.saturating_sub(1),
            _ if late_drop => n = n.saturating_sub(1),
            _ => continue,
        }
        match points.last_mut() {
            Some((at, count)) if *at == line.at => *count = n,
            _ => points.push((line.at, n)),
        }
    }
    points
}

/// The summary section of the report.
pub fn html(result: &RunResult, drawn: &BTreeSet<String>) -> String {
    let mut out = String::from("<h2 id=\"summary\">Summary</h2>\n");
    let times = unlock_times(result);
    let _ = writeln!(
        out,
        "<p>{} clients: too many to draw one by one. {} unlocked. The diagram below draws {} sampled clients (the first, the median and the last to unlock, and the first that did not): {}.</p>",
        result.clients.len(),
        times.len(),
        drawn.len(),
        esc(&drawn.iter().cloned().collect::<Vec<_>>().join(", "))
    );
    if !times.is_empty() {
        out.push_str("<h3>Unlock time (power-on to unlock)</h3>\n<p>");
        let pct = [50, 90, 95, 99, 100]
            .iter()
            .filter_map(|&p| percentile(&times, p).map(|t| format!("p{p} {}", seconds(t))))
            .collect::<Vec<_>>()
            .join(" &middot; ");
        out.push_str(&pct);
        out.push_str("</p>\n");
        let bins = histogram(&times, 20);
        let max = bins.iter().map(|b| b.2).max().unwrap_or(1).max(1);
        let (w, bar_h, left) = (1000usize, 14usize, 250usize);
        let _ = writeln!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {}\" width=\"{w}\" height=\"{}\" font-size=\"12\" font-family=\"sans-serif\" role=\"img\" aria-label=\"unlock-time histogram\">",
            bins.len() * (bar_h + 4) + 8,
            bins.len() * (bar_h + 4) + 8
        );
        for (i, (from, to, n)) in bins.iter().enumerate() {
            let y = 4 + i * (bar_h + 4);
            let len = (w - left - 60) * n / max;
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} – {}</text><rect x=\"{left}\" y=\"{y}\" width=\"{len}\" height=\"{bar_h}\" fill=\"#4a78b8\"/><text x=\"{}\" y=\"{}\">{n}</text>",
                left - 6,
                y + bar_h - 2,
                seconds(*from),
                seconds(*to),
                left + len + 4,
                y + bar_h - 2
            );
        }
        out.push_str("</svg>\n");
    }
    for server in &result.servers {
        let points = in_hand(&server.log);
        if points.is_empty() {
            continue;
        }
        let peak = points.iter().map(|p| p.1).max().unwrap_or(0);
        let _ = writeln!(
            out,
            "<h3>{}: requests in hand over time</h3>\n<p>Queued or being decrypted, from the provider's log (phase 4 to phase 6 or a drop): at most {peak}, {} changes.</p>",
            esc(&server.name),
            points.len()
        );
        let (Some(first), Some(last)) = (points.first(), points.last()) else {
            continue;
        };
        let (w, h, pad) = (1000usize, 200usize, 40usize);
        let span = (last.0 - first.0).as_nanos().max(1);
        let px = |at: Duration| {
            pad + ((at - first.0).as_nanos() * (w - 2 * pad) as u128 / span) as usize
        };
        let py = |n: usize| h - pad / 2 - n * (h - pad) / peak.max(1);
        let mut path = format!("M{},{}", px(first.0), py(0));
        let mut previous = 0;
        // At most one point per pixel column: the column's highest count.
        let mut columns: Vec<(usize, usize, usize)> = Vec::new();
        for &(at, n) in &points {
            let x = px(at);
            match columns.last_mut() {
                Some((cx, high, last_n)) if *cx == x => {
                    *high = (*high).max(n);
                    *last_n = n;
                }
                _ => columns.push((x, n, n)),
            }
        }
        for (x, high, last_n) in columns {
            let _ = write!(
                path,
                " L{x},{} L{x},{} L{x},{}",
                py(previous),
                py(high),
                py(last_n)
            );
            previous = last_n;
        }
        let _ = writeln!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" font-size=\"12\" font-family=\"sans-serif\" role=\"img\" aria-label=\"requests in hand\"><path d=\"{path}\" fill=\"none\" stroke=\"#b05000\"/><line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/><text x=\"{pad}\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text><text x=\"2\" y=\"{}\">{peak}</text><text x=\"2\" y=\"{}\">0</text></svg>",
            py(0),
            w - pad,
            py(0),
            h - 2,
            seconds(first.0),
            w - pad,
            h - 2,
            seconds(last.0),
            py(peak) + 4,
            py(0)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, SocketAddr};
    use unlock_server::provider::{Level, LogLine, LogMessage, Xid};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let times: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&times, 50), Some(ms(50)));
        assert_eq!(percentile(&times, 99), Some(ms(99)));
        assert_eq!(percentile(&times, 100), Some(ms(100)));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn the_histogram_counts_every_time_once() {
        let times: Vec<Duration> = (0..=10).map(ms).collect();
        let bins = histogram(&times, 5);
        assert_eq!(bins.len(), 5);
        assert_eq!(bins.iter().map(|b| b.2).sum::<usize>(), 11);
        assert_eq!(bins[4].2, 3, "the last bin holds its end");
    }

    #[test]
    fn requests_in_hand_rise_at_phase_4_and_fall_at_phase_6_or_a_late_drop() {
        let line = |at, message: LogMessage| LogLine {
            at: ms(at),
            level: Level::Debug,
            message,
        };
        let client = |last: u8| IpAddr::from([10, 0, 4, last]);
        let thumbprint = nkpu::Thumbprint::from_bytes([7; 20]);
        let recognised = |last| LogMessage::Recognised {
            client: client(last),
            xid: Xid::V4(u32::from(last)),
            thumbprint,
        };
        let replied = |last| LogMessage::Replied {
            client: client(last),
            thumbprint,
            destination: SocketAddr::new(client(last), 68),
        };
        let dropped = |last, reason| LogMessage::Dropped {
            source: SocketAddr::new(client(last), 68),
            reason: Box::new(reason),
        };
        let log = [
            line(1, recognised(1)),
            line(1, recognised(2)),
            line(2, dropped(9, DropReason::NotNetworkUnlock)),
            line(3, recognised(3)),
            line(4, replied(1)),
            line(5, dropped(2, DropReason::Overloaded)),
            line(6, "a shell's note".into()),
            line(6, replied(3)),
        ];
        assert_eq!(
            in_hand(&log),
            [(ms(1), 2), (ms(3), 3), (ms(4), 2), (ms(5), 1), (ms(6), 0)]
        );
    }
}
