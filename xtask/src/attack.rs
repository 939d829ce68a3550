//! The recovery service under attack (issue 20), from `recovery-service`'s `attack` bench: the
//! real `recovery-escrowd` process with its default limits, legitimate devices escrowing over
//! HTTPS while 500 unauthenticated connections (slow headers, idle, oversized bodies with a
//! wrong token) press on it, beside the same devices' figures without the attack from the
//! same run (alternating windows), and the server's peak RSS. Goals: peak RSS under 128 MiB,
//! and the legitimate throughput at least 80% of the unattacked figure (the median of the
//! rounds' paired ratios). Written to BENCHMARKS.md.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};

const SECONDS: u32 = 4;
const ROUNDS: u32 = 5;
const CLIENTS: u32 = 32;
const ATTACKERS: u32 = 500;
const MAX_PEAK_RSS_MIB: f64 = 128.0;
const MIN_RATIO: f64 = 0.8;

/// Runs the attack benchmark and writes its section.
pub fn run(root: &Path) -> Result<()> {
    eprintln!(
        "attack benchmark: {CLIENTS} devices, {ATTACKERS} attackers, {ROUNDS} rounds of 2 x \
         {SECONDS} s"
    );
    let env = [
        ("NULAB_BENCH_SECS", SECONDS.to_string()),
        ("NULAB_BENCH_ROUNDS", ROUNDS.to_string()),
        ("NULAB_BENCH_CLIENTS", CLIENTS.to_string()),
        ("NULAB_BENCH_ATTACKERS", ATTACKERS.to_string()),
    ];
    let f = crate::bench::recovery_bench_fields("attack", &env, &[])?;
    let v = |key: &str| -> Result<f64> {
        f.value(key)
            .with_context(|| format!("the attack benchmark printed no `{key}`"))
    };
    let (ratio, median, peak) = (v("ratio")?, v("median_round_ratio")?, v("peak_rss_mib")?);
    let met = median >= MIN_RATIO && peak < MAX_PEAK_RSS_MIB;
    let mut section = String::new();
    let _ = write!(
        section,
        "\n## Recovery service under attack (`cargo xtask attack`)\n\n\
         `cargo bench -p recovery-service --bench attack`: the `recovery-escrowd` process with \
         its default limits (handshake, header and body time-outs 10 s, idle keep-alive 30 s, \
         64 connections per client address, 1,024 in total, 1 MiB bodies), AES-256-GCM at \
         rest, the store on the build's own disk. {CLIENTS} enrolled devices on keep-alive \
         HTTPS connections from 127.0.0.1 escrow one new recovery password per request without \
         a pause, while {ROUNDS} rounds each measure {SECONDS} s without attack, then start the \
         attack, let it ramp up for 3 s, measure {SECONDS} s under it and stop it (alternating \
         windows, so that whatever else loads the machine falls on both alike). The attack: \
         {ATTACKERS} unauthenticated connections from 127.0.1.1-50; two fifths trickle a \
         request head one byte every half second, two fifths complete the TLS handshake and \
         stay idle, one fifth announce a 1 MB body with a wrong token, send up to 1 MB of it \
         and stall; each reconnects one second after the server closes it. The devices and \
         the attackers share one process (two tokio worker threads), the server has its own; \
         all on the same two cores. Peak RSS is the larger of the server's `VmHWM` at the end and every RSS sample.\n\n\
         | window | escrows | per second | p50 | p99 |\n|---|---:|---:|---:|---:|\n\
         | unattacked | {} | {:.0} | {:.2} ms | {:.2} ms |\n\
         | under attack | {} | {:.0} | {:.2} ms | {:.2} ms |\n\n\
         Under attack the devices kept {:.0}% of their unattacked throughput over the whole \
         run; per round (attacked over unattacked, the same round) from {:.0}% to {:.0}%, \
         median **{:.0}%**, on which the goal is judged. At least {} \
         attack connections were open at the start of an attacked window and at most {} at its \
         end (the oversized ones are answered 401 and closed at once, then wait a second); {} \
         connects, {} closed by the server. Server RSS: {:.1} MiB idle, at most {:.1} MiB \
         after an unattacked window, at most {:.1} MiB after an attacked one, \
         **{peak:.1} MiB peak**. \
         Goals: peak RSS under {MAX_PEAK_RSS_MIB:.0} MiB and at least {:.0}% of the unattacked \
         throughput; this run **{}** them.\n",
        f.get("quiet_escrows"),
        v("quiet_rate")?,
        v("quiet_p50_ms")?,
        v("quiet_p99_ms")?,
        f.get("attacked_escrows"),
        v("attacked_rate")?,
        v("attacked_p50_ms")?,
        v("attacked_p99_ms")?,
        ratio * 100.0,
        v("min_round_ratio")? * 100.0,
        v("max_round_ratio")? * 100.0,
        median * 100.0,
        f.get("open_start"),
        f.get("open_end"),
        f.get("connects"),
        f.get("closed"),
        v("rss_idle_mib")?,
        v("rss_unattacked_mib")?,
        v("rss_attacked_mib")?,
        MIN_RATIO * 100.0,
        if met { "meets" } else { "MISSES" },
    );
    print!("{section}");
    crate::bench::write_section(root, &section)?;
    if !met {
        bail!(
            "under attack: a median {:.0}% of the unattacked throughput (goal >= {:.0}%), peak \
             RSS {peak:.1} MiB (goal < {MAX_PEAK_RSS_MIB:.0} MiB)",
            median * 100.0,
            MIN_RATIO * 100.0
        );
    }
    Ok(())
}
