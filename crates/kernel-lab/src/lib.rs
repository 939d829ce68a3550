//! The real-kernel backend of scenarios (`nulab scenario run --backend netns`): the scenario's
//! network built on the running Linux kernel, with nulab's own programs and real third-party
//! parts on it, so that the file that drives the simulator drives real packets too.
//!
//! A run, named by a run id so that two runs never collide: one namespace per segment holding
//! bridge `br0`; one namespace per host (DHCP server, WDS server, router, client) with one veth
//! per adapter whose peer is a port of its segment's bridge (link state and static addresses
//! from the file; duplicate address detection off); routers forward IPv4 and run dnsmasq in
//! relay mode, one relay per interface with that interface's helper list. The DHCP servers are
//! `nulab-dhcp-server` processes, the WDS servers `nulab server` processes with the scenario's
//! certificates (written as `.pfx`) and INI, the clients `nulab client` processes booting the
//! volume image and TPM state that `scenario::world` prepares for the simulator (the same
//! machine, written to disk), each with its console script (`nulab client --console`). Loss
//! on a segment is an nftables bridge rule, latency, duplication and corruption `tc netem` on
//! its bridge ports; partitions, a silent DHCP server and an adapter's link down are nftables
//! bridge rules and `ip link` on the ports (`faults`), a DHCP server answering late is
//! `nulab-dhcp-server --reply-delay`; server events become signals and restarts (stop, start,
//! crash and restart of `nulab server`; its certificate store removed: the files deleted and
//! SIGHUP). tcpdump writes a pcap per segment. Everything the run created (processes by PID, then namespaces)
//! is removed when the run ends, fails or is interrupted (SIGINT, SIGTERM).
//!
//! [`refusals`] says, before anything is created, why a scenario cannot run on real kernels;
//! [`missing_tools`] names the tools a run needs with the Debian packages that provide them.

pub mod compose;
mod faults;
mod lab;
pub mod parity;
mod plan;

use std::path::PathBuf;

pub use lab::run;
pub use plan::{missing_tools, refusals};

/// What a real-kernel run needs from its caller.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `nulab` executable (`nulab server`, `nulab client`).
    pub nulab: PathBuf,
    /// The `nulab-dhcp-server` executable.
    pub dhcp_server: PathBuf,
    /// The scenario's output folder (created).
    pub out: PathBuf,
    /// The seed (default: the scenario's own).
    pub seed: Option<u64>,
}

/// What a run produced: `result.json`'s text (also written to `out`) and whether every
/// checked expectation was met.
#[derive(Debug, Clone)]
pub struct KernelRun {
    pub result_json: String,
    pub passed: bool,
}

/// Why a real-kernel run could not be made or finished.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    #[error("this scenario cannot run on real kernels: {}", .0.join("; "))]
    Refused(Vec<String>),
    #[error("missing tools: {}", .0.join(", "))]
    MissingTools(Vec<String>),
    #[error("the real-kernel backend needs root (network namespaces, veths, tc); run as root")]
    NotRoot,
    #[error("{0}")]
    Scenario(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("{0}")]
    Start(String),
    #[error("interrupted: everything the run started was removed")]
    Interrupted,
}

/// `nulab client`'s time flags: `--pin-after DURATION` and `--limit DURATION`, in the one grammar
/// of durations every nulab command takes.
pub(crate) fn client_time_args(
    pin_after: std::time::Duration,
    limit: std::time::Duration,
) -> (Vec<String>, Vec<String>) {
    (
        vec!["--pin-after".into(), format!("{}ms", pin_after.as_millis())],
        vec!["--limit".into(), format!("{}s", limit.as_secs().max(1))],
    )
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status.lines().any(|line| {
            line.strip_prefix("Uid:")
                .and_then(|rest| rest.split_whitespace().nth(1))
                == Some("0")
        })
    })
}
