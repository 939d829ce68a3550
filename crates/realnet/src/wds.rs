//! The WDS Network Unlock provider on real interfaces: `nulab server`'s engine. It is the one
//! [`Driver`] plus the provider's service, the one the simulator runs too
//! ([`UnlockService`] in front of [`unlock_server::provider::Provider`]), and the certificate
//! files, the policy file and SIGHUP.
//!
//! Sockets: per interface, UDP 67 on IPv4 and UDP 547 on IPv6 (joined to ff02::1:2, the
//! All_DHCP_Relay_Agents_and_Servers group a DHCPv6 client sends to), each bound to its device
//! so that a reply leaves by the interface the request came in on.
//!
//! Every core: the RSA-2048 private-key operation is nearly all the cost of a request, so the
//! driver's one thread runs only the provider's cheap steps (`Provider::classify`); each
//! request that passes is handed to the one decrypt pool (`unlock_processor::DecryptPool`,
//! `workers` threads, one per core by default) over a **bounded** queue with a non-blocking
//! send. When the queue
//! is full the request is shed on the spot and counted under `drop.overloaded` in the
//! provider's counters and log (`Provider::shed`), so memory and waiting time stay bounded
//! whatever the offered load: a client whose request is shed retransmits (DHCPv4 after 2 s) or
//! falls back to its PIN, as it would if the datagram had been lost. The keys are shared
//! (`Arc<ProviderKey>` inside each job); there is no lock around the provider, because only the
//! driver's thread touches it. Results wake the driver ([`Driver::wake`]), which hands them
//! to the service to count, log and send.
//!
//! Reload: [`Control::Reload`] (SIGHUP in `nulab server`) re-reads the certificate files and
//! folders and the policy file. A certificate no longer on disk is removed from the store, so
//! its requests are then logged as the seed's error condition; an invalid policy file makes the
//! provider stop answering, logged with every problem and its line, until a valid one is loaded.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nkpu::{ProviderKey, Thumbprint};
use tokio::sync::mpsc;
use unlock_processor::{DecryptPool, PoolProcessor};
use unlock_server::provider::{LogLine, Provider};
use unlock_server::service::{DHCPV4_SERVER_PORT, DHCPV6_SERVER_PORT, UnlockService};

use crate::ShellError;
use crate::driver::{Driver, DriverConfig, ShellNote};

/// The DHCPv6 multicast group servers listen on (RFC 8415).
pub const ALL_DHCP_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

/// Where the provider's certificates come from.
#[derive(Debug, Clone, Default)]
pub struct CertificateSource {
    /// `.pfx` (or PEM with key) files.
    pub files: Vec<PathBuf>,
    /// Folders whose `*.pfx` files are loaded.
    pub dirs: Vec<PathBuf>,
    /// The `.pfx` password (the same for every file).
    pub password: Option<String>,
}

/// A certificate store read from disk.
#[derive(Debug, Default)]
pub struct LoadedStore {
    pub keys: Vec<(Thumbprint, PathBuf, ProviderKey)>,
    /// Files that could not be loaded, with why.
    pub errors: Vec<String>,
}

impl CertificateSource {
    /// Reads every file and folder. A file that cannot be loaded is reported in `errors`; the
    /// caller decides whether that is fatal (at start) or logged (at reload).
    pub fn load(&self) -> LoadedStore {
        let mut store = LoadedStore::default();
        let mut paths: Vec<PathBuf> = self.files.clone();
        for dir in &self.dirs {
            match std::fs::read_dir(dir) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("pfx")))
                        .collect();
                    // Directory order is the file system's: sort, so logs are stable.
                    found.sort();
                    paths.extend(found);
                }
                Err(err) => store
                    .errors
                    .push(format!("certificate folder {}: {err}", dir.display())),
            }
        }
        for path in paths {
            match load_key(&path, self.password.as_deref()) {
                Ok((thumbprint, key)) => store.keys.push((thumbprint, path, key)),
                Err(err) => store.errors.push(err),
            }
        }
        store
    }
}

fn load_key(path: &Path, password: Option<&str>) -> Result<(Thumbprint, ProviderKey), String> {
    let certificate = certificates::files::load_provider_certificate(path, password)
        .map_err(|err| err.to_string())?;
    let key = ProviderKey::from_pkcs8_der(&certificate.private_key_pkcs8_der())
        .map_err(|err| format!("{}: private key: {err}", path.display()))?;
    Ok((certificate.thumbprint(), key))
}

/// The UDP ports the provider listens on (67 and 547; others only for benches and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub v4: u16,
    pub v6: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Self { v4: 67, v6: 547 }
    }
}

/// How the provider runs.
#[derive(Debug, Clone)]
pub struct WdsConfig {
    pub interfaces: Vec<String>,
    pub certificates: CertificateSource,
    /// `bde-network-unlock.ini`; `None`: no file, no subnet restrictions.
    pub policy: Option<PathBuf>,
    /// Threads running the private-key operation.
    pub workers: usize,
    /// Requests that may wait for a worker; beyond that they are shed.
    pub queue_capacity: usize,
    pub ports: Ports,
    /// Listen on IPv6 (UDP 547) too.
    pub ipv6: bool,
    /// The DHCPv6 server identifier.
    pub server_duid: Vec<u8>,
}

impl WdsConfig {
    /// One worker per core, a queue of 16 requests per worker (about 16 ms of work each: a
    /// burst is absorbed, a flood is shed long before a client's 2 s retransmission).
    pub fn new(interfaces: Vec<String>, certificates: CertificateSource) -> Self {
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            interfaces,
            certificates,
            policy: None,
            workers,
            queue_capacity: 16 * workers,
            ports: Ports::default(),
            ipv6: true,
            // DUID-EN (type 2) under Microsoft's enterprise number 311, identifier "nulab".
            server_duid: vec![0, 2, 0, 0, 1, 0x37, b'n', b'u', b'l', b'a', b'b'],
        }
    }
}

/// What the shell is told from outside while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Re-read the certificates and the policy file (SIGHUP).
    Reload,
    /// Stop (SIGINT, SIGTERM, `--for` elapsed).
    Stop,
}

/// What a run ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WdsReport {
    /// The provider's counters: `replied`, `drop.<reason>`.
    pub counters: BTreeMap<String, u64>,
    /// Datagrams received on every socket.
    pub received: u64,
    pub workers: usize,
    pub queue_capacity: usize,
    /// The most requests that were ever waiting for a worker at once.
    pub peak_queue: usize,
}

impl WdsReport {
    pub fn counter(&self, label: &str) -> u64 {
        self.counters.get(label).copied().unwrap_or(0)
    }

    /// The counter summary, one `label count` line each (`received N`, then every counter,
    /// then `peak-queue P of C (W workers)`): what `nulab server` prints at the end and
    /// appends to its log. Scripts read the `label count` lines (`nulab scenario run
    /// --backend netns` does).
    pub fn summary_lines(&self) -> Vec<String> {
        let mut lines = vec![format!("received {}", self.received)];
        lines.extend(
            self.counters
                .iter()
                .map(|(label, count)| format!("{label} {count}")),
        );
        lines.push(format!(
            "peak-queue {} of {} ({} workers)",
            self.peak_queue, self.queue_capacity, self.workers
        ));
        lines
    }
}

/// Sends [`Control::Reload`] on SIGHUP and [`Control::Stop`] on SIGINT or SIGTERM to `tx`,
/// for as long as its receiver lives. Must be called inside a tokio runtime.
pub fn forward_signals(tx: mpsc::Sender<Control>) -> Result<(), ShellError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).map_err(ShellError::Signal)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ShellError::Signal)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(ShellError::Signal)?;
    tokio::spawn(async move {
        loop {
            let control = tokio::select! {
                _ = hangup.recv() => Control::Reload,
                _ = interrupt.recv() => Control::Stop,
                _ = terminate.recv() => Control::Stop,
            };
            if tx.send(control).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// Runs the provider on `config.interfaces` until `control` says stop (or is closed), writing
/// each log line to `log` as it is produced.
///
/// Fails at start when no certificate loads, when a named certificate file fails, or when no
/// socket could be opened; later problems (a reload that fails, a send that fails) are logged.
pub async fn run_wds(
    config: WdsConfig,
    mut control: mpsc::Receiver<Control>,
    log: impl FnMut(&LogLine),
) -> Result<WdsReport, ShellError> {
    // Written from the loop and from a reload: one owner, lent out between callbacks.
    let log = RefCell::new(log);
    let flush = |provider: &RefCell<Provider>| {
        for line in provider.borrow_mut().take_log() {
            (log.borrow_mut())(&line);
        }
    };
    let mut driver_config = DriverConfig::new(config.interfaces.clone());
    driver_config.host_name = config.interfaces.join(",");
    driver_config.ipv6 = config.ipv6;
    driver_config.ipv6_groups = vec![ALL_DHCP_SERVERS];
    driver_config.port_map = vec![
        (DHCPV4_SERVER_PORT, config.ports.v4),
        (DHCPV6_SERVER_PORT, config.ports.v6),
    ];
    let mut driver = Driver::new(driver_config)?;
    let provider = Rc::new(RefCell::new(Provider::new(config.server_duid.clone())));
    let store = config.certificates.load();
    if !store.errors.is_empty() {
        return Err(ShellError::Certificates(store.errors.join("; ")));
    }
    if store.keys.is_empty() {
        return Err(ShellError::Certificates(
            "no certificate: give --cert FILE.pfx or --cert-dir DIR".into(),
        ));
    }
    let held = RefCell::new(install(
        &mut provider.borrow_mut(),
        Duration::ZERO,
        &BTreeSet::new(),
        store,
    ));
    load_policy(
        &mut provider.borrow_mut(),
        Duration::ZERO,
        config.policy.as_deref(),
    );

    let workers = config.workers.max(1);
    let queue_capacity = config.queue_capacity.max(1);
    let pool = DecryptPool::bounded(workers, queue_capacity);
    let processor = PoolProcessor::new(pool, driver.wake());
    let gauges = processor.gauges();
    let mut service = UnlockService::with_processor(Rc::clone(&provider), Box::new(processor));
    driver.start(&mut service).await;
    let note_shell = |provider: &RefCell<Provider>, driver: &mut Driver| {
        let mut failed = Vec::new();
        for note in driver.take_notes() {
            let at = driver.elapsed();
            if let ShellNote::SocketFailed { why, .. } = note {
                provider.borrow_mut().note_error(at, why.clone());
                failed.push(why);
            }
        }
        failed
    };
    let failed = note_shell(&provider, &mut driver);
    flush(&provider);
    if driver.open_sockets() == 0 {
        // The reason (an address already in use names the address) is the error's own.
        let mut what = config.interfaces.join(",");
        if !failed.is_empty() {
            what = format!("{what}: {}", failed.join("; "));
        }
        return Err(ShellError::NoSocket(what));
    }
    provider.borrow_mut().note_info(
        driver.elapsed(),
        format!(
            "WDS service listening on {} (UDP {}{}), {workers} decrypt workers, queue of \
             {queue_capacity}",
            config.interfaces.join(","),
            config.ports.v4,
            if config.ipv6 {
                format!(" and {}", config.ports.v6)
            } else {
                String::new()
            },
        ),
    );

    // SIGHUP and stop arrive here; a reload touches the provider between two callbacks.
    let epoch = tokio::time::Instant::now();
    let controls = async {
        loop {
            match control.recv().await {
                Some(Control::Reload) => {
                    let now = epoch.elapsed();
                    let mut reloading = provider.borrow_mut();
                    let reloaded = &mut *reloading;
                    reloaded.note_info(
                        now,
                        "reloading the certificate store and the subnet policy (SIGHUP)".into(),
                    );
                    let store = config.certificates.load();
                    for error in &store.errors {
                        reloaded.note_error(now, format!("reload: {error}"));
                    }
                    let now_held = install(reloaded, now, &held.borrow(), store);
                    *held.borrow_mut() = now_held;
                    load_policy(reloaded, now, config.policy.as_deref());
                    drop(reloading);
                    // Logged now, not at the next datagram (there may be none for a while).
                    flush(&provider);
                }
                Some(Control::Stop) | None => return,
            }
        }
    };
    driver
        .run_until(&mut service, controls, |driver| {
            note_shell(&provider, driver);
            flush(&provider);
            ControlFlow::Continue(())
        })
        .await;
    // Requests already handed to a worker are finished and counted, so that every request
    // received is accounted for.
    driver
        .finish_wakes(
            &mut service,
            || gauges.outstanding.load(Ordering::Relaxed) > 0,
            Duration::from_secs(10),
        )
        .await;
    provider
        .borrow_mut()
        .note_info(driver.elapsed(), "WDS service stopped".into());
    flush(&provider);
    let counters = provider.borrow().counters().clone();
    Ok(WdsReport {
        counters,
        received: driver.received(),
        workers,
        queue_capacity,
        peak_queue: gauges.peak_queue.load(Ordering::Relaxed),
    })
}

/// Puts a loaded store into the provider: new and replaced keys added, keys no longer on disk
/// removed (their requests are then the seed's error condition). Returns what is now held.
fn install(
    provider: &mut Provider,
    now: Duration,
    held: &BTreeSet<Thumbprint>,
    store: LoadedStore,
) -> BTreeSet<Thumbprint> {
    let mut now_held = BTreeSet::new();
    for (thumbprint, path, key) in store.keys {
        provider.note_info(
            now,
            format!(
                "certificate {thumbprint} loaded from {} into the FVE_NKP store",
                path.display()
            ),
        );
        provider.add_certificate(thumbprint, key);
        now_held.insert(thumbprint);
    }
    for gone in held.difference(&now_held) {
        provider.remove_certificate(gone);
        provider.note_error(
            now,
            format!(
                "certificate {gone} is no longer in the FVE_NKP store: its clients will not be \
                 unlocked (an error condition, not a supported way to turn Network Unlock off)"
            ),
        );
    }
    now_held
}

fn load_policy(provider: &mut Provider, now: Duration, path: Option<&Path>) {
    let Some(path) = path else {
        provider.load_policy(now, None);
        return;
    };
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => provider.load_policy(now, Some(&text)),
            Err(err) => provider.policy_unreadable(now, format!("{}: {err}", path.display())),
        },
        // No file is the default state: every client with a known certificate is unlocked.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            provider.note_info(now, format!("{} does not exist", path.display()));
            provider.load_policy(now, None);
        }
        Err(err) => provider.policy_unreadable(now, format!("{}: {err}", path.display())),
    }
}

/// The kernel's index of `interface`, from sysfs.
pub fn interface_index(interface: &str) -> Result<u32, ShellError> {
    let fail = |source| ShellError::Interface {
        interface: interface.to_owned(),
        what: "read /sys/class/net/*/ifindex",
        source,
    };
    let text =
        std::fs::read_to_string(format!("/sys/class/net/{interface}/ifindex")).map_err(fail)?;
    text.trim()
        .parse()
        .map_err(|_| fail(std::io::Error::from(std::io::ErrorKind::InvalidData)))
}

/// Formats a provider log line the way the WDS debug log reads: time, source, level, message.
pub fn format_log_line(line: &LogLine) -> String {
    let level = match line.level {
        unlock_server::provider::Level::Debug => "Debug",
        unlock_server::provider::Level::Info => "Info",
        unlock_server::provider::Level::Error => "Error",
    };
    format!(
        "[{:>10.3}s] [WDSServer/NKPPROV] {level}: {}",
        line.at.as_secs_f64(),
        line.message
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_an_index() {
        assert!(interface_index("lo").expect("lo exists") >= 1);
        assert!(interface_index("no-such-if0").is_err());
    }

    #[test]
    fn an_empty_source_loads_nothing_and_a_missing_file_is_an_error() {
        assert!(CertificateSource::default().load().keys.is_empty());
        let missing = CertificateSource {
            files: vec!["/nonexistent/nu.pfx".into()],
            ..Default::default()
        }
        .load();
        assert_eq!(missing.errors.len(), 1);
        assert!(missing.errors[0].contains("nu.pfx"), "{:?}", missing.errors);
    }

    #[test]
    fn log_lines_read_like_the_wds_debug_log() {
        let line = LogLine {
            at: Duration::from_millis(1500),
            level: unlock_server::provider::Level::Error,
            message: "x".into(),
        };
        assert_eq!(
            format_log_line(&line),
            "[     1.500s] [WDSServer/NKPPROV] Error: x"
        );
    }
}
