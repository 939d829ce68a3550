//! Requests per second of the unlock provider's whole per-request path (decode, RSA-2048
//! decrypt with aws-lc-rs, seal, encode) on one core, for `cargo xtask bench`, which runs this
//! interleaved with `openssl speed rsa2048` and keeps the best run of each, so that a busy
//! machine does not favour one side. Usage: `server_rate SECONDS`; prints one number.
//!
//! Like `openssl speed` (which counts the process's CPU time unless given `-elapsed`), the rate
//! is requests per second of CPU time this process used: on a machine shared with other jobs,
//! wall-clock time would count the time the scheduler gave to them.

use std::time::{Duration, Instant};

#[path = "../benches/support/server_path.rs"]
mod support;

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let (provider, request) = support::provider_and_request();
    let budget = Duration::from_secs_f64(seconds);
    let start = cpu_time();
    let mut served = 0u64;
    while cpu_time().saturating_sub(start) < budget {
        std::hint::black_box(support::serve(&provider, &request));
        served += 1;
    }
    println!(
        "{:.1}",
        served as f64 / cpu_time().saturating_sub(start).as_secs_f64()
    );
}

/// The CPU time this process has used: the first field of `/proc/self/schedstat` (nanoseconds
/// on a CPU), or wall-clock time where that file does not exist.
fn cpu_time() -> Duration {
    static WALL_START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_else(|| WALL_START.get_or_init(Instant::now).elapsed())
}
