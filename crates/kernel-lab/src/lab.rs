//! One real-kernel run: the namespaces and veths, the processes on them, the timeline of faults
//! and server events, and the outcome gathered into `result.json`. [`Teardown`] owns every
//! namespace and process the run created and removes them on drop, so every way out of [`run`]
//! (success, an error, an interrupt) leaves nothing behind.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use scenario::Loaded;
use scenario::model::{ClientTpm, DhcpSoftware, FaultSpec};
use serde_json::json;

use crate::faults::{Effect, Plug, Plugs};
use crate::{KernelRun, LabError, Options};

/// The `.pfx` password of the certificates a run writes for its WDS servers.
const PFX_PASSWORD: &str = "nulab-lab";

/// Namespaces and processes of a run, removed on drop (processes first, by PID).
struct Teardown {
    namespaces: Vec<String>,
    processes: Vec<(String, Child)>,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        for (_, child) in &mut self.processes {
            terminate(child);
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// SIGTERM, a bounded wait, then SIGKILL; always reaped.
fn terminate(child: &mut Child) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

/// Runs `program args`, which must succeed.
fn sh(program: &str, args: &[&str]) -> Result<(), LabError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(io(format!("cannot start {program}")))?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// A bridge port: its switch namespace and name.
struct Port {
    switch: String,
    name: String,
}

struct Segment {
    name: String,
    ns: String,
    ports: Vec<Port>,
}

struct Wds {
    name: String,
    ns: String,
    args: Vec<String>,
    running: Option<usize>,
    /// Counters of the processes that already ended (stop, crash), summed.
    counters: BTreeMap<String, u64>,
    generation: usize,
}

struct Client {
    name: String,
    ns: String,
    args: Vec<String>,
    boot_at: Duration,
    outcome: PathBuf,
    log: PathBuf,
    process: Option<usize>,
}

/// A netem fault on a segment, anchored at the lease when it begins inside the DHCP exchange.
struct Fault {
    segment: usize,
    /// Loss in parts per million: an nftables bridge rule (`numgen random`) in the segment's
    /// namespace, which needs no qdisc module.
    loss_ppm: Option<u32>,
    /// Latency, jitter, duplication and corruption: `tc netem` on the bridge ports.
    netem: Vec<String>,
    from: Duration,
    to: Duration,
    anchored_at_lease: bool,
    applied: bool,
    /// Loaded with the DHCP exchange spared, waiting for the lease.
    exempting: bool,
    removed: bool,
}

/// A fault made of bridge rules or port links ([`crate::faults`]) over `from..to`.
struct Window {
    effect: Effect,
    from: Duration,
    to: Duration,
    applied: bool,
    removed: bool,
}

impl Window {
    /// Window `k`'s table, in each segment namespace its rules are for.
    fn table(k: usize) -> String {
        format!("nulab_block{k}")
    }

    fn apply(&mut self, k: usize, work: &Path, segments: &[Segment]) -> Result<(), LabError> {
        match &self.effect {
            Effect::Drop(rules) => {
                for (seg, rules) in crate::faults::by_segment(rules) {
                    let file = work.join(format!("block{k}-s{seg}.nft"));
                    let text = crate::faults::bridge_table(&Window::table(k), &rules);
                    std::fs::write(&file, text).map_err(io(format!("{}", file.display())))?;
                    let file = file.display().to_string();
                    sh(
                        "ip",
                        &["netns", "exec", &segments[seg].ns, "nft", "-f", &file],
                    )?;
                }
            }
            Effect::LinkDown(ports) => {
                for (seg, port) in ports {
                    sh(
                        "ip",
                        &["-n", &segments[*seg].ns, "link", "set", port, "down"],
                    )?;
                }
            }
        }
        self.applied = true;
        Ok(())
    }

    /// Ends the window (best effort: deleting the namespaces at teardown removes the rest).
    fn remove(&mut self, k: usize, segments: &[Segment]) {
        match &self.effect {
            Effect::Drop(rules) => {
                for seg in crate::faults::by_segment(rules).into_keys() {
                    let table = Window::table(k);
                    let ns = &segments[seg].ns;
                    let _ = sh(
                        "ip",
                        &[
                            "netns", "exec", ns, "nft", "delete", "table", "bridge", &table,
                        ],
                    );
                }
            }
            Effect::LinkDown(ports) => {
                for (seg, port) in ports {
                    let _ = sh("ip", &["-n", &segments[*seg].ns, "link", "set", port, "up"]);
                }
            }
        }
        self.removed = true;
    }

    fn describe(&self, segments: &[Segment]) -> String {
        match &self.effect {
            Effect::Drop(rules) => rules
                .iter()
                .map(|r| format!("{}: {} (nftables)", segments[r.segment].name, r.rule))
                .collect::<Vec<_>>()
                .join("; "),
            Effect::LinkDown(ports) => ports
                .iter()
                .map(|(seg, port)| format!("{}: port {port} link down", segments[*seg].name))
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

/// A short run id from the PID and the clock (names must fit 15-character interface names).
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:05x}", (std::process::id() ^ nanos) & 0xf_ffff)
}

struct Builder {
    id: String,
    teardown: Teardown,
    work: PathBuf,
}

impl Builder {
    fn namespace(&mut self, role: &str) -> Result<String, LabError> {
        let ns = format!("nl{}-{role}", self.id);
        sh("ip", &["netns", "add", &ns])?;
        self.teardown.namespaces.push(ns.clone());
        sh("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        for key in [
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ] {
            sh("ip", &["netns", "exec", &ns, "sysctl", "-qw", key])?;
        }
        Ok(ns)
    }

    /// A veth `interface` in `ns` whose peer is a port of `segment`'s bridge; the port's name.
    fn plug(
        &mut self,
        ns: &str,
        interface: &str,
        segment: &mut Segment,
        link_up: bool,
    ) -> Result<String, LabError> {
        let port = format!(
            "p{}",
            self.teardown.namespaces.len() * 8 + segment.ports.len()
        );
        sh(
            "ip",
            &[
                "link",
                "add",
                interface,
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &segment.ns,
            ],
        )?;
        sh(
            "ip",
            &["-n", &segment.ns, "link", "set", &port, "master", "br0"],
        )?;
        if link_up {
            sh("ip", &["-n", &segment.ns, "link", "set", &port, "up"])?;
        }
        sh("ip", &["-n", ns, "link", "set", interface, "up"])?;
        segment.ports.push(Port {
            switch: segment.ns.clone(),
            name: port.clone(),
        });
        Ok(port)
    }

    /// Starts `program args` inside `ns`, its stdout to `stdout` and stderr to `stderr`.
    fn spawn(
        &mut self,
        label: &str,
        ns: &str,
        program: &Path,
        args: &[String],
        stdout: &Path,
        stderr: &Path,
    ) -> Result<usize, LabError> {
        let out = File::create(stdout).map_err(io(format!("{}", stdout.display())))?;
        let err = File::options()
            .create(true)
            .append(true)
            .open(stderr)
            .map_err(io(format!("{}", stderr.display())))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io(format!("cannot start {}", program.display())))?;
        self.teardown.processes.push((label.to_owned(), child));
        Ok(self.teardown.processes.len() - 1)
    }
}

/// Waits (bounded) until `path` contains `needle`.
fn wait_for(
    path: &Path,
    needle: &str,
    limit: Duration,
    stop: &AtomicBool,
) -> Result<bool, LabError> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if stop.load(Ordering::Relaxed) {
            return Err(LabError::Interrupted);
        }
        if std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle)) {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(false)
}

fn netem_of(fault: &FaultSpec) -> Vec<String> {
    let mut netem = vec!["netem".to_owned()];
    if let Some(latency) = &fault.latency {
        netem.extend(["delay".into(), latency.get_ref().clone()]);
        if let Some(jitter) = &fault.jitter {
            netem.push(jitter.get_ref().clone());
        }
    }
    for (kind, value) in [("duplicate", &fault.duplicate), ("corrupt", &fault.corrupt)] {
        if let Some(value) = value {
            netem.extend([kind.to_owned(), value.get_ref().clone()]);
        }
    }
    netem
}

/// Builds and runs `loaded` on the running kernel. `narrate` receives one line per phase.
pub fn run(
    loaded: &Loaded,
    options: &Options,
    mut narrate: impl FnMut(&str),
) -> Result<KernelRun, LabError> {
    let why = crate::refusals(loaded);
    if !why.is_empty() {
        return Err(LabError::Refused(why));
    }
    if !crate::is_root() {
        return Err(LabError::NotRoot);
    }
    let missing = crate::missing_tools(loaded);
    if !missing.is_empty() {
        return Err(LabError::MissingTools(missing));
    }
    for program in [&options.nulab, &options.dhcp_server] {
        if !program.is_file() {
            return Err(LabError::Start(format!(
                "{} not found (build it: cargo build -p nulab -p realnet --bins)",
                program.display()
            )));
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(io("cannot listen for SIGINT/SIGTERM"))?;
    }
    let s = &loaded.scenario;
    let seed = options.seed.unwrap_or(s.seed);
    let out = options.out.clone();
    std::fs::create_dir_all(&out).map_err(io(format!("{}", out.display())))?;
    let work = out.join("kernel-lab");
    std::fs::create_dir_all(&work).map_err(io(format!("{}", work.display())))?;

    // The machines and certificates, exactly as the simulator's world makes them.
    let world =
        scenario::world::build(loaded, seed).map_err(|e| LabError::Scenario(e.to_string()))?;
    let machines = scenario::world::prepared_machines(loaded, seed, &world.certificates)
        .map_err(|e| LabError::Scenario(e.to_string()))?;
    let certificates = world.certificates;

    let mut b = Builder {
        id: run_id(),
        teardown: Teardown {
            namespaces: Vec::new(),
            processes: Vec::new(),
        },
        work: work.clone(),
    };
    narrate(&format!(
        "real kernel: run id {}, namespaces nl{}-*",
        b.id, b.id
    ));

    // Where each host plugs in, for the faults on hosts, adapters and routers.
    let mut plugs = Plugs::new();
    let mut plug_of = |host: &str, segment: usize, port: String, adapter: &str| {
        plugs.entry(host.to_owned()).or_default().push(Plug {
            segment,
            port,
            adapter: adapter.to_owned(),
        });
    };

    // Segments: a bridge each, in a namespace of its own.
    let mut segments = Vec::new();
    for (i, spec) in s.segments.iter().enumerate() {
        let ns = b.namespace(&format!("s{i}"))?;
        sh("ip", &["-n", &ns, "link", "add", "br0", "type", "bridge"])?;
        sh("ip", &["-n", &ns, "link", "set", "br0", "up"])?;
        segments.push(Segment {
            name: spec.name.get_ref().clone(),
            ns,
            ports: Vec::new(),
        });
        narrate(&format!(
            "segment {}: bridge br0 in its own namespace",
            spec.name.get_ref()
        ));
    }

    // Routers: forwarding, and dnsmasq relaying per interface.
    let mut gateways: BTreeMap<String, String> = BTreeMap::new();
    let mut relay_args = Vec::new();
    for (r, router) in s.routers.iter().enumerate() {
        let ns = b.namespace(&format!("r{r}"))?;
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        )?;
        for (i, interface) in router.interfaces.iter().enumerate() {
            let name = format!("eth{i}");
            let seg = segment_index(&segments, interface.segment.get_ref())?;
            let port = b.plug(&ns, &name, &mut segments[seg], true)?;
            plug_of(router.name.get_ref(), seg, port, &name);
            sh(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    interface.address.get_ref(),
                    "dev",
                    &name,
                ],
            )?;
            let address = interface
                .address
                .get_ref()
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            gateways.insert(interface.segment.get_ref().clone(), address.clone());
            for helper in &interface.relay_to {
                relay_args.push((ns.clone(), address.clone(), helper.get_ref().clone()));
            }
        }
        narrate(&format!(
            "router {}: IPv4 forwarding, relays {}",
            router.name.get_ref(),
            router
                .interfaces
                .iter()
                .filter(|i| !i.relay_to.is_empty())
                .map(|i| format!(
                    "{} -> {}",
                    i.segment.get_ref(),
                    i.relay_to
                        .iter()
                        .map(|h| h.get_ref().as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    let mut by_router: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (ns, local, helper) in relay_args {
        by_router.entry(ns).or_default().push((local, helper));
    }
    for (n, (ns, relays)) in by_router.iter().enumerate() {
        let log = work.join(format!("relay{n}.log"));
        let mut args: Vec<String> = [
            "--conf-file=/dev/null",
            "--port=0",
            "--no-daemon",
            "--pid-file=",
            "--user=root",
            "--group=root",
            "--log-dhcp",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
        args.push(format!("--log-facility={}", log.display()));
        for (local, helper) in relays {
            args.push(format!("--dhcp-relay={local},{helper}"));
        }
        b.spawn(
            "relay",
            ns,
            Path::new("dnsmasq"),
            &args,
            &work.join(format!("relay{n}.out")),
            &work.join(format!("relay{n}.err")),
        )?;
        if !wait_for(&log, "DHCP relay", Duration::from_secs(10), &stop)? {
            return Err(LabError::Start(format!(
                "dnsmasq (relay) did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )));
        }
    }

    // A server host: a namespace, eth0 on its segment with its address, a default route.
    let server_host = |b: &mut Builder,
                       segments: &mut Vec<Segment>,
                       plug_of: &mut dyn FnMut(&str, usize, String, &str),
                       (host, role): (&str, String),
                       segment: &str,
                       address: &str|
     -> Result<String, LabError> {
        let ns = b.namespace(&role)?;
        let seg = segments
            .iter()
            .position(|x| x.name == segment)
            .ok_or_else(|| LabError::Scenario(format!("no segment {segment}")))?;
        let port = b.plug(&ns, "eth0", &mut segments[seg], true)?;
        plug_of(host, seg, port, "eth0");
        sh("ip", &["-n", &ns, "addr", "add", address, "dev", "eth0"])?;
        if let Some(gateway) = gateways.get(segment) {
            sh(
                "ip",
                &["-n", &ns, "route", "add", "default", "via", gateway],
            )?;
        }
        Ok(ns)
    };

    // DHCP servers: nulab-dhcp-server with the world's pools.
    let run_for = format!("{}s", s.duration.as_secs() + 30);
    for (d, spec) in s.dhcp_servers.iter().enumerate() {
        let ns = server_host(
            &mut b,
            &mut segments,
            &mut plug_of,
            (spec.name.get_ref(), format!("d{d}")),
            spec.segment.get_ref(),
            spec.address.get_ref(),
        )?;
        // (subnet, first, last, router) per pool: the world's default pools or the file's.
        let mut pools: Vec<(String, String, String, Option<String>)> = Vec::new();
        if spec.pools.is_empty() {
            for seg in &s.segments {
                let Ok(subnet) = seg.subnet.get_ref().parse::<Ipv4Net>() else {
                    continue;
                };
                if subnet.prefix_len() > 24 {
                    continue;
                }
                let base = u32::from(subnet.network());
                pools.push((
                    subnet.to_string(),
                    std::net::Ipv4Addr::from(base + 100).to_string(),
                    std::net::Ipv4Addr::from(base + 199).to_string(),
                    gateways.get(seg.name.get_ref()).cloned(),
                ));
            }
        } else {
            for pool in &spec.pools {
                pools.push((
                    pool.subnet.get_ref().clone(),
                    pool.first.get_ref().clone(),
                    pool.last.get_ref().clone(),
                    pool.router.as_ref().map(|r| r.get_ref().clone()),
                ));
            }
        }
        let stdout = out.join(format!("dhcp-{}.log", spec.name.get_ref()));
        let stderr = work.join(format!("dhcp{d}.err"));
        let (program, args, ready, what) = match spec.software {
            DhcpSoftware::Nulab => {
                let mut args = vec![
                    "--interface".to_owned(),
                    format!("eth0={}", spec.address.get_ref()),
                    "--for".into(),
                    run_for.clone(),
                ];
                if let Some(delay) = crate::faults::reply_delay(&s.faults, spec.name.get_ref()) {
                    args.extend(["--reply-delay".into(), delay.to_owned()]);
                }
                for (subnet, first, last, router) in &pools {
                    let mut text = format!("{subnet},{first},{last}");
                    if let Some(router) = router {
                        text.push_str(&format!(",{router}"));
                    }
                    args.extend(["--pool".into(), text]);
                }
                (
                    options.dhcp_server.clone(),
                    args,
                    (stdout.clone(), "listening"),
                    "nulab-dhcp-server",
                )
            }
            DhcpSoftware::Dnsmasq => {
                let mut args: Vec<String> = [
                    "--conf-file=/dev/null",
                    "--port=0",
                    "--no-ping",
                    "--no-daemon",
                    "--bind-interfaces",
                    "--interface=eth0",
                    "--except-interface=lo",
                    "--pid-file=",
                    "--user=root",
                    "--group=root",
                    "--log-dhcp",
                ]
                .iter()
                .map(|a| (*a).to_owned())
                .collect();
                for (p, (subnet, first, last, router)) in pools.iter().enumerate() {
                    let mask = subnet
                        .parse::<Ipv4Net>()
                        .map(|n| n.netmask().to_string())
                        .unwrap_or_else(|_| "255.255.255.0".into());
                    args.push(format!("--dhcp-range=set:pool{p},{first},{last},{mask},1h"));
                    if let Some(router) = router {
                        args.push(format!("--dhcp-option=tag:pool{p},3,{router}"));
                    }
                }
                args.push(format!(
                    "--dhcp-leasefile={}",
                    work.join(format!("dnsmasq{d}.leases")).display()
                ));
                args.push(format!("--log-facility={}", stdout.display()));
                (
                    PathBuf::from("dnsmasq"),
                    args,
                    (stdout.clone(), "sockets bound exclusively"),
                    "dnsmasq",
                )
            }
            DhcpSoftware::Kea => {
                let config = work.join(format!("kea{d}.json"));
                let leases = work.join(format!("kea{d}.leases.csv"));
                let text = kea_config(&pools, &leases, &stdout, s.duration);
                std::fs::write(&config, text).map_err(io(format!("{}", config.display())))?;
                // Its PID and lock files in the run's folder, not /run/kea: runs do not collide.
                let run_dir = work.display().to_string();
                (
                    PathBuf::from("env"),
                    vec![
                        format!("KEA_PIDFILE_DIR={run_dir}"),
                        format!("KEA_LOCKFILE_DIR={run_dir}"),
                        "kea-dhcp4".into(),
                        "-c".into(),
                        config.display().to_string(),
                    ],
                    (stdout.clone(), "DHCP4_STARTED"),
                    "kea-dhcp4",
                )
            }
        };
        let _ = std::fs::remove_file(&stdout);
        let console = work.join(format!("dhcp{d}.out"));
        let started_out = if spec.software == DhcpSoftware::Nulab {
            &stdout
        } else {
            &console
        };
        b.spawn("dhcp", &ns, &program, &args, started_out, &stderr)?;
        if !wait_for(&ready.0, ready.1, Duration::from_secs(10), &stop)? {
            return Err(LabError::Start(format!(
                "{what} {} did not start: {}{}",
                spec.name.get_ref(),
                std::fs::read_to_string(&stderr).unwrap_or_default(),
                std::fs::read_to_string(&stdout).unwrap_or_default()
            )));
        }
        narrate(&format!(
            "DHCP server {} ({what}) at {}{}",
            spec.name.get_ref(),
            spec.address.get_ref(),
            crate::faults::reply_delay(&s.faults, spec.name.get_ref())
                .map(|d| format!(", every reply {d} late (--reply-delay)"))
                .unwrap_or_default()
        ));
    }

    // WDS servers: nulab server with the scenario's certificates and INI.
    let mut wds = Vec::new();
    for (w, spec) in s.wds.iter().enumerate() {
        let ns = server_host(
            &mut b,
            &mut segments,
            &mut plug_of,
            (spec.name.get_ref(), format!("w{w}")),
            spec.segment.get_ref(),
            spec.address.get_ref(),
        )?;
        let dir = work.join(format!("wds-{}", spec.name.get_ref()));
        std::fs::create_dir_all(&dir).map_err(io(format!("{}", dir.display())))?;
        let held: Vec<&scenario::world::NamedCertificate> = match &spec.certificates {
            None => certificates.iter().collect(),
            Some(names) => certificates
                .iter()
                .filter(|c| names.iter().any(|n| n.get_ref() == &c.name))
                .collect(),
        };
        let mut args = vec!["server".to_owned(), "--interface".into(), "eth0".into()];
        for cert in held {
            let path = dir.join(format!("{}.pfx", cert.name));
            certificates::files::save_pfx(&path, &cert.bundle, PFX_PASSWORD)
                .map_err(|e| LabError::Start(format!("{}: {e}", path.display())))?;
            args.extend(["--cert".into(), path.display().to_string()]);
        }
        args.extend(["--password".into(), PFX_PASSWORD.into()]);
        let policy = match (&spec.policy, &spec.policy_file) {
            (Some(text), _) => Some(text.clone().into_bytes()),
            (None, Some(file)) => Some(loaded.read_relative(file).map_err(LabError::Scenario)?),
            (None, None) => None,
        };
        if let Some(policy) = policy {
            let path = dir.join("bde-network-unlock.ini");
            std::fs::write(&path, policy).map_err(io(format!("{}", path.display())))?;
            args.extend(["--policy".into(), path.display().to_string()]);
        }
        let log = out.join(format!("wds-{}.log", spec.name.get_ref()));
        let _ = std::fs::remove_file(&log);
        args.extend(["--log".into(), log.display().to_string()]);
        args.extend(["--workers".into(), "1".into()]);
        // Its counters as one JSON summary line when it stops.
        args.push("--json".into());
        wds.push(Wds {
            name: spec.name.get_ref().clone(),
            ns,
            args,
            running: None,
            counters: BTreeMap::new(),
            generation: 0,
        });
        if spec.running {
            start_wds(&mut b, &mut wds[w], &options.nulab, &stop)?;
        }
        narrate(&format!(
            "WDS server {} (nulab server) at {}{}",
            spec.name.get_ref(),
            spec.address.get_ref(),
            if spec.running {
                ""
            } else {
                ": service stopped"
            }
        ));
    }

    // Clients: the prepared machine written to disk, nulab client on its adapters.
    let mut clients = Vec::new();
    for (c, machine) in machines.into_iter().enumerate() {
        let spec = &s.clients[machine.group_index];
        let ns = b.namespace(&format!("c{c}"))?;
        let mut args = vec!["client".to_owned()];
        for (i, adapter) in spec.adapters.iter().enumerate() {
            let name = adapter.name.clone().unwrap_or_else(|| format!("eth{i}"));
            let seg = segment_index(&segments, adapter.segment.get_ref())?;
            // A link fault from the start: the port is down before the client powers on.
            let down_at_start = s.faults.iter().any(|f| {
                f.link.is_some()
                    && f.from.is_none_or(|t| t.is_zero())
                    && f.adapter.as_ref().is_some_and(|a| {
                        a.get_ref() == &format!("{}/{name}", spec.name.get_ref())
                            || a.get_ref() == &format!("{}/{name}", machine.name)
                    })
            });
            let port = b.plug(
                &ns,
                &name,
                &mut segments[seg],
                adapter.link && !down_at_start,
            )?;
            plug_of(spec.name.get_ref(), seg, port.clone(), &name);
            if machine.name != *spec.name.get_ref() {
                plug_of(&machine.name, seg, port, &name);
            }
            if let Some(address) = &adapter.address {
                sh(
                    "ip",
                    &["-n", &ns, "addr", "add", address.get_ref(), "dev", &name],
                )?;
            }
            if !adapter.dhcp {
                args.extend(["--no-dhcp".into(), name.clone()]);
            }
            if !adapter.uefi_driver {
                args.extend(["--no-uefi-driver".into(), name.clone()]);
            }
            args.extend(["--interface".into(), name]);
        }
        let image = work.join(format!("{}.img", machine.name));
        let volume = if spec.tpm == ClientTpm::Swtpm {
            start_swtpm(&mut b, &ns, &machine.name)?;
            let tcti = tpm::swtpm::tcti(SWTPM_PORT);
            args.extend(["--tpm".into(), tcti.clone()]);
            let volume = volume_on_swtpm(loaded, machine.group_index, seed, &certificates, &ns)?;
            narrate(&format!(
                "client {}: its TPM is swtpm ({tcti} in its namespace)",
                machine.name
            ));
            volume
        } else {
            let state = work.join(format!("{}.img.tpm.json", machine.name));
            std::fs::write(&state, machine.tpm.to_json())
                .map_err(io(format!("{}", state.display())))?;
            machine.volume
        };
        volume
            .save(&image)
            .map_err(|e| LabError::Start(format!("{}: {e}", image.display())))?;
        args.extend(["--volume".into(), image.display().to_string()]);
        if !spec.order.is_empty() {
            let order: Vec<&str> = spec.order.iter().map(|o| o.get_ref().as_str()).collect();
            args.extend(["--order".into(), order.join(",")]);
        }
        // The console script, in a file: no PIN or recovery password on a command line.
        if !spec.console.is_empty() {
            let script = console_script(&spec.console, machine.recovery_password.as_ref())?;
            let path = work.join(format!("{}.console", machine.name));
            std::fs::write(&path, script).map_err(io(format!("{}", path.display())))?;
            args.extend(["--console".into(), path.display().to_string()]);
        }
        let outcome = work.join(format!("{}.outcome.json", machine.name));
        args.extend(crate::client_time_args(Duration::ZERO, s.duration).1);
        args.extend([
            "--seed".into(),
            seed.to_string(),
            "--outcome-json".into(),
            outcome.display().to_string(),
        ]);
        // A log (or outcome) left by an earlier run in the same folder must not be read as
        // this run's: the lease watch reads the log before the client starts.
        let log = out.join(format!("bitlocker-{}.log", machine.name));
        write_empty(&log)?;
        let _ = std::fs::remove_file(work.join(format!("{}.outcome.json", machine.name)));
        clients.push(Client {
            log,
            name: machine.name,
            ns,
            args,
            boot_at: spec.boot_at.unwrap_or_default(),
            outcome,
            process: None,
        });
    }

    // A real pcap per segment.
    for seg in &segments {
        let pcap = out.join(format!("{}.pcap", seg.name));
        let err = work.join(format!("tcpdump-{}.err", seg.name));
        let args: Vec<String> = [
            "-i",
            "br0",
            "-n",
            "-U",
            "--immediate-mode",
            "-Z",
            "root",
            "-w",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain([pcap.display().to_string()])
        .collect();
        let _ = std::fs::remove_file(&err);
        b.spawn(
            "tcpdump",
            &seg.ns,
            Path::new("tcpdump"),
            &args,
            &work.join("tcpdump.out"),
            &err,
        )?;
        if !wait_for(&err, "listening on", Duration::from_secs(10), &stop)? {
            return Err(LabError::Start(format!(
                "tcpdump on {} did not start: {}",
                seg.name,
                std::fs::read_to_string(&err).unwrap_or_default()
            )));
        }
    }

    // Faults: netem on the segment's bridge ports.
    let mut faults = Vec::new();
    for spec in &s.faults {
        let Some(segment) = &spec.segment else {
            continue;
        };
        faults.push(Fault {
            segment: segment_index(&segments, segment.get_ref())?,
            loss_ppm: spec.loss.as_ref().map(|l| loss_ppm(l.get_ref())),
            netem: netem_of(spec),
            from: spec.from.unwrap_or_default(),
            to: spec.to.unwrap_or(s.duration),
            // The simulator's DHCP exchange lasts well under a millisecond; a real one takes a
            // few. A fault that begins inside it is anchored at the first lease instead.
            anchored_at_lease: spec
                .from
                .is_some_and(|f| f > Duration::ZERO && f < Duration::from_millis(100)),
            applied: false,
            exempting: false,
            removed: false,
        });
    }
    for (i, seg) in s.segments.iter().enumerate() {
        if let Some(latency) = seg.latency {
            faults.push(Fault {
                segment: i,
                loss_ppm: None,
                netem: vec![
                    "netem".into(),
                    "delay".into(),
                    format!("{}us", latency.as_micros()),
                ],
                from: Duration::ZERO,
                to: s.duration,
                anchored_at_lease: false,
                applied: false,
                exempting: false,
                removed: false,
            });
        }
    }

    // Partitions, a silent DHCP server and link faults: bridge rules and port links.
    let segment_names: Vec<String> = segments.iter().map(|seg| seg.name.clone()).collect();
    let router_names: Vec<String> = s.routers.iter().map(|r| r.name.get_ref().clone()).collect();
    let mut windows = Vec::new();
    for spec in &s.faults {
        if let Some(effect) = crate::faults::effect_of(spec, &plugs, &segment_names, &router_names)
            .map_err(LabError::Scenario)?
        {
            windows.push(Window {
                effect,
                from: spec.from.unwrap_or_default(),
                to: spec.to.unwrap_or(s.duration),
                applied: false,
                removed: false,
            });
        }
    }

    let dhcp_exemptions: Vec<String> =
        std::iter::once("ip saddr 0.0.0.0 udp dport 67 accept".to_owned())
            .chain(s.dhcp_servers.iter().map(|d| {
                format!(
                    "ip saddr {} udp sport 67 accept",
                    d.address.get_ref().split('/').next().unwrap_or_default()
                )
            }))
            .collect();

    // The timeline.
    narrate("boot: the clients power on");
    let mut events: Vec<(Duration, String, String)> = s
        .events
        .iter()
        .map(|e| (e.at, e.host.get_ref().clone(), e.action.get_ref().clone()))
        .collect();
    events.sort_by_key(|e| e.0);
    let start = Instant::now();
    let mut lease_at: Option<Duration> = None;
    let limit = s.duration + Duration::from_secs(5);
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(LabError::Interrupted);
        }
        let now = start.elapsed();
        if lease_at.is_none()
            && clients
                .iter()
                .filter(|c| c.process.is_some())
                .any(|c| std::fs::read_to_string(&c.log).is_ok_and(|t| t.contains("configured on")))
        {
            lease_at = Some(now);
        }
        for (f, fault) in faults.iter_mut().enumerate() {
            let begin = if fault.anchored_at_lease {
                lease_at
            } else {
                Some(fault.from)
            };
            // Loss anchored at the lease is in place from the start, sparing the DHCP
            // exchange (from 0.0.0.0, or from a DHCP server's port 67) until the lease.
            if let Some(ppm) = fault.loss_ppm.filter(|_| fault.anchored_at_lease) {
                if !fault.applied && !fault.exempting {
                    load_loss(
                        &b.work,
                        &segments[fault.segment].ns,
                        f,
                        ppm,
                        &dhcp_exemptions,
                    )?;
                    fault.exempting = true;
                }
                if fault.exempting && lease_at.is_some() {
                    load_loss(&b.work, &segments[fault.segment].ns, f, ppm, &[])?;
                    fault.exempting = false;
                    fault.applied = true;
                    narrate(&format!(
                        "{:.3}s fault begins on {} at the lease: loss {}% (nftables)",
                        now.as_secs_f64(),
                        segments[fault.segment].name,
                        f64::from(ppm) / 10_000.0
                    ));
                }
            }
            if !fault.applied && begin.is_some_and(|t| now >= t) {
                if let Some(ppm) = fault.loss_ppm {
                    load_loss(&b.work, &segments[fault.segment].ns, f, ppm, &[])?;
                }
                for port in segments[fault.segment]
                    .ports
                    .iter()
                    .filter(|_| fault.netem.len() > 1)
                {
                    let mut args = vec![
                        "-n",
                        &port.switch,
                        "qdisc",
                        "replace",
                        "dev",
                        &port.name,
                        "root",
                    ];
                    args.extend(fault.netem.iter().map(String::as_str));
                    sh("tc", &args).map_err(|err| match err {
                        LabError::Command { stderr, .. } if stderr.contains("unknown") => {
                            LabError::Start(format!(
                                "this kernel has no netem (CONFIG_NET_SCH_NETEM), which latency, \
                                 jitter, duplication and corruption need on real kernels ({})",
                                fault.netem.join(" ")
                            ))
                        }
                        other => other,
                    })?;
                }
                fault.applied = true;
                narrate(&format!(
                    "{:.3}s fault begins on {}: {}{}",
                    now.as_secs_f64(),
                    segments[fault.segment].name,
                    fault
                        .loss_ppm
                        .map(|ppm| format!("loss {}% (nftables) ", f64::from(ppm) / 10_000.0))
                        .unwrap_or_default(),
                    if fault.netem.len() > 1 {
                        fault.netem.join(" ")
                    } else {
                        String::new()
                    }
                ));
            }
            if fault.applied && !fault.removed && now >= fault.to {
                if fault.loss_ppm.is_some() {
                    let table = format!("nulab_fault{f}");
                    let ns = &segments[fault.segment].ns;
                    let _ = sh(
                        "ip",
                        &[
                            "netns", "exec", ns, "nft", "delete", "table", "bridge", &table,
                        ],
                    );
                }
                for port in segments[fault.segment]
                    .ports
                    .iter()
                    .filter(|_| fault.netem.len() > 1)
                {
                    let _ = sh(
                        "tc",
                        &[
                            "-n",
                            &port.switch,
                            "qdisc",
                            "del",
                            "dev",
                            &port.name,
                            "root",
                        ],
                    );
                }
                fault.removed = true;
                narrate(&format!(
                    "{:.3}s fault ends on {}",
                    now.as_secs_f64(),
                    segments[fault.segment].name
                ));
            }
        }
        for (k, window) in windows.iter_mut().enumerate() {
            if !window.applied && now >= window.from {
                window.apply(k, &b.work, &segments)?;
                narrate(&format!(
                    "{:.3}s fault begins: {}",
                    now.as_secs_f64(),
                    window.describe(&segments)
                ));
            }
            if window.applied && !window.removed && now >= window.to {
                window.remove(k, &segments);
                narrate(&format!(
                    "{:.3}s fault ends: {}",
                    now.as_secs_f64(),
                    window.describe(&segments)
                ));
            }
        }
        while events.first().is_some_and(|e| now >= e.0) {
            let (at, host, action) = events.remove(0);
            if let Some(server) = wds.iter_mut().find(|w| w.name == host) {
                match action.as_str() {
                    "stop-wds" | "crash" => stop_wds(&mut b, server),
                    "remove-certificate-store" => {
                        remove_certificate_store(&mut b, server, &stop)?;
                    }
                    _ => start_wds(&mut b, server, &options.nulab, &stop)?,
                }
                narrate(&format!("{:.3}s {host}: {action}", at.as_secs_f64()));
            }
        }
        for client in &mut clients {
            if client.process.is_none() && now >= client.boot_at {
                let args = client.args.clone();
                let err = b.work.join(format!("{}.err", client.name));
                client.process = Some(b.spawn(
                    &client.name,
                    &client.ns,
                    &options.nulab,
                    &args,
                    &client.log,
                    &err,
                )?);
            }
        }
        let all_done = clients.iter().all(|c| {
            c.process.is_some_and(|p| {
                b.teardown.processes[p]
                    .1
                    .try_wait()
                    .ok()
                    .flatten()
                    .is_some()
            })
        });
        if (all_done && events.is_empty()) || now > limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    narrate("end: the servers stop and report");
    for server in &mut wds {
        stop_wds(&mut b, server);
    }
    // Stop the captures (SIGTERM flushes the pcap).
    for (label, child) in &mut b.teardown.processes {
        if label == "tcpdump" {
            terminate(child);
        }
    }

    // The outcome.
    let mut passed = true;
    let mut client_values = Vec::new();
    let mut checks = Vec::new();
    for client in &clients {
        let mut value: serde_json::Value = std::fs::read_to_string(&client.outcome)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_else(|| json!({"state": "booting", "unlocked_by": null, "at_seconds": null, "failures": []}));
        if let Some(map) = value.as_object_mut() {
            map.insert("name".into(), json!(client.name));
        }
        // nulab client counts from its own start; the scenario's times count from the run's,
        // and a client powers on at `boot_at`.
        let offset = client.boot_at.as_secs_f64();
        if offset > 0.0 {
            if let Some(at) = value["at_seconds"].as_f64() {
                value["at_seconds"] = json!(at + offset);
            }
            if let Some(failures) = value["failures"].as_array_mut() {
                for failure in failures {
                    if let Some(at) = failure["at_seconds"].as_f64() {
                        failure["at_seconds"] = json!(at + offset);
                    }
                }
            }
        }
        for expect in s
            .expectations
            .iter()
            .filter(|e| e.client.get_ref() == &client.name)
        {
            if let Some(by) = &expect.unlocked_by {
                let met = value["unlocked_by"].as_str() == Some(by.get_ref().as_str());
                passed &= met;
                checks.push(json!({"expectation": format!("{} is unlocked by {}", client.name, by.get_ref()), "met": met}));
            }
            if let Some(failures) = &expect.failures {
                let got: Vec<String> = value["failures"]
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
                    .unwrap_or_default();
                let met = got.len() == failures.len()
                    && got
                        .iter()
                        .zip(failures)
                        .all(|(g, want)| failure_matches(g, want));
                passed &= met;
                checks.push(json!({"expectation": format!("{}'s earlier protectors failed as: {}", client.name, if failures.is_empty() { "(none)".to_string() } else { failures.join("; ") }), "met": met}));
            }
        }
        narrate(&format!(
            "{}: {} {}",
            client.name,
            value["state"].as_str().unwrap_or("booting"),
            value["unlocked_by"].as_str().unwrap_or("")
        ));
        client_values.push(value);
    }
    let mut server_values = Vec::new();
    for server in &wds {
        for expect in s
            .server_expectations
            .iter()
            .filter(|e| e.wds.get_ref() == &server.name)
        {
            for (label, want) in &expect.counters {
                let got = server.counters.get(label.get_ref()).copied().unwrap_or(0);
                let met = got == *want;
                passed &= met;
                checks.push(json!({"expectation": format!("{} counted {} = {want}", server.name, label.get_ref()), "met": met}));
            }
        }
        server_values.push(json!({"name": server.name, "counters": server.counters}));
    }
    let value = json!({
        "scenario": loaded.name,
        "title": s.title,
        "seed": seed,
        "backend": "netns",
        "passed": passed,
        "checks": checks,
        "clients": client_values,
        "servers": server_values,
        "segments": segments.iter().map(|seg| json!({"name": seg.name, "pcap": format!("{}.pcap", seg.name)})).collect::<Vec<_>>(),
    });
    let mut result_json = serde_json::to_string_pretty(&value).unwrap_or_default();
    result_json.push('\n');
    let path = out.join("result.json");
    std::fs::write(&path, &result_json).map_err(io(format!("{}", path.display())))?;
    drop(b);
    Ok(KernelRun {
        result_json,
        passed,
    })
}

/// Loads (or replaces) segment fault `f`'s loss in namespace `ns`: an nftables bridge table
/// dropping `ppm` parts per million of forwarded frames, after the `exempt` accept rules.
fn load_loss(work: &Path, ns: &str, f: usize, ppm: u32, exempt: &[String]) -> Result<(), LabError> {
    let drop = if ppm >= 1_000_000 {
        "drop".to_owned()
    } else {
        format!("numgen random mod 1000000 < {ppm} drop")
    };
    let rules: Vec<String> = exempt.iter().cloned().chain([drop]).collect();
    let text = crate::faults::bridge_table(&format!("nulab_fault{f}"), &rules);
    let file = work.join(format!("fault{f}.nft"));
    std::fs::write(&file, text).map_err(io(format!("{}", file.display())))?;
    let file = file.display().to_string();
    sh("ip", &["netns", "exec", ns, "nft", "-f", &file])
}

/// `30%`, `0.5%` or `1` (a fraction) as parts per million, capped at a million.
fn loss_ppm(text: &str) -> u32 {
    let text = text.trim();
    let fraction = match text.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().unwrap_or(0.0) / 100.0,
        None => text.parse::<f64>().unwrap_or(0.0),
    };
    (fraction.clamp(0.0, 1.0) * 1_000_000.0).round() as u32
}

fn write_empty(path: &Path) -> Result<(), LabError> {
    std::fs::write(path, b"").map_err(io(format!("{}", path.display())))
}

fn segment_index(segments: &[Segment], name: &str) -> Result<usize, LabError> {
    segments
        .iter()
        .position(|seg| seg.name == name)
        .ok_or_else(|| LabError::Scenario(format!("no segment {name}")))
}

/// Whether a failure `protector: reason` meets an expected `protector: words`: the same
/// protector, and the reason contains the words (the simulator's check, `scenario::run`).
fn failure_matches(got: &str, want: &str) -> bool {
    let (Some((gp, gr)), (wp, ww)) = (
        got.split_once(": "),
        want.split_once(':').unwrap_or((want, "")),
    ) else {
        return false;
    };
    gp == wp.trim() && gr.contains(ww.trim())
}

fn start_wds(
    b: &mut Builder,
    server: &mut Wds,
    nulab: &Path,
    stop: &AtomicBool,
) -> Result<(), LabError> {
    if server.running.is_some() {
        return Ok(());
    }
    server.generation += 1;
    let stdout = b
        .work
        .join(format!("wds-{}.{}.out", server.name, server.generation));
    let stderr = b
        .work
        .join(format!("wds-{}.{}.err", server.name, server.generation));
    let args = server.args.clone();
    let index = b.spawn("wds", &server.ns.clone(), nulab, &args, &stdout, &stderr)?;
    // The log file (`--log`) says it, whatever nulab server prints on its own outputs; each
    // start appends one more "listening on" line.
    let log = args
        .iter()
        .position(|a| a == "--log")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| stderr.clone());
    let start = Instant::now();
    let mut started = false;
    while start.elapsed() < Duration::from_secs(20) {
        if stop.load(Ordering::Relaxed) {
            return Err(LabError::Interrupted);
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.matches("decrypt workers").count() >= server.generation {
            started = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if !started {
        // `--json` puts its error on standard output, as a JSON line.
        return Err(LabError::Start(format!(
            "nulab server {} did not start: {}{}",
            server.name,
            std::fs::read_to_string(&stderr).unwrap_or_default(),
            std::fs::read_to_string(&stdout).unwrap_or_default().trim()
        )));
    }
    server.running = Some(index);
    Ok(())
}

/// Kea's configuration for the world's pools on `eth0` (raw sockets, as a DHCP server on a
/// LAN uses), leases in `leases`, its log in `log`; the lease time is the run's length plus a
/// margin, as nulab-dhcp-server's and dnsmasq's pools have a lease far longer than any run.
fn kea_config(
    pools: &[(String, String, String, Option<String>)],
    leases: &Path,
    log: &Path,
    duration: Duration,
) -> String {
    let subnets: Vec<serde_json::Value> = pools
        .iter()
        .enumerate()
        .map(|(i, (subnet, first, last, router))| {
            let mut entry = serde_json::json!({
                "id": i + 1,
                "subnet": subnet,
                "pools": [{ "pool": format!("{first} - {last}") }],
            });
            if let Some(router) = router {
                entry["option-data"] = serde_json::json!([{ "name": "routers", "data": router }]);
            }
            entry
        })
        .collect();
    let config = serde_json::json!({
        "Dhcp4": {
            "interfaces-config": { "interfaces": ["eth0"], "dhcp-socket-type": "raw" },
            "lease-database": {
                "type": "memfile",
                "persist": true,
                "name": leases.display().to_string(),
                "lfc-interval": 0,
            },
            "valid-lifetime": duration.as_secs().max(3600) + 600,
            "subnet4": subnets,
            "loggers": [{
                "name": "kea-dhcp4",
                "output_options": [{ "output": log.display().to_string(), "flush": true }],
                "severity": "INFO",
            }],
        }
    });
    serde_json::to_string_pretty(&config).unwrap_or_default()
}

/// Where a client's swtpm listens, inside the client's own namespace (its loopback).
const SWTPM_PORT: u16 = tpm::swtpm::DEFAULT_PORT;

/// Starts swtpm for client `name` inside its namespace `ns`, on that namespace's loopback
/// ([`SWTPM_PORT`] and the control port above it), its state in the run's folder; the command
/// line is `tpm::swtpm`'s, as every swtpm nulab starts.
fn start_swtpm(b: &mut Builder, ns: &str, name: &str) -> Result<(), LabError> {
    let state = b.work.join(format!("{name}-swtpm"));
    std::fs::create_dir_all(&state).map_err(io(format!("{}", state.display())))?;
    let args = tpm::swtpm::socket_args(SWTPM_PORT, &state);
    let out = b.work.join(format!("{name}.swtpm.out"));
    let err = b.work.join(format!("{name}.swtpm.err"));
    b.spawn("swtpm", ns, Path::new("swtpm"), &args, &out, &err)?;
    Ok(())
}

/// The client's volume, its history made on the swtpm in namespace `ns`: a thread of this
/// process joins that network namespace (`setns` affects only the calling thread) and reaches
/// swtpm on the namespace's loopback, then closes its connection before the client opens its
/// own (swtpm serves one at a time).
#[cfg(feature = "real-tpm")]
fn volume_on_swtpm(
    loaded: &Loaded,
    group_index: usize,
    seed: u64,
    certificates: &[scenario::world::NamedCertificate],
    ns: &str,
) -> Result<volume::Volume, LabError> {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = File::open(&path).map_err(io(format!("cannot open {path}")))?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| LabError::Start(format!("cannot join {ns}: {e}")))?;
                let start = Instant::now();
                // Wait for its port first: a TCTI that cannot connect logs errors as it fails.
                let control = tpm::swtpm::control_port(SWTPM_PORT);
                while std::net::TcpStream::connect(("127.0.0.1", control)).is_err()
                    && start.elapsed() < Duration::from_secs(10)
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let mut tpm = loop {
                    match tpm::RealTpm::connect(&tpm::swtpm::tcti(SWTPM_PORT), None) {
                        Ok(tpm) => break tpm,
                        Err(_) if start.elapsed() < Duration::from_secs(10) => {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Err(e) => {
                            return Err(LabError::Start(format!("swtpm in {ns}: {e}")));
                        }
                    }
                };
                scenario::world::prepare_volume_on(
                    loaded,
                    group_index,
                    seed,
                    certificates,
                    &mut tpm,
                )
                .map_err(|e| LabError::Scenario(e.to_string()))
            })
            .join()
            .unwrap_or_else(|_| Err(LabError::Start("the sealing thread panicked".into())))
    })
}

#[cfg(not(feature = "real-tpm"))]
fn volume_on_swtpm(
    _loaded: &Loaded,
    _group_index: usize,
    _seed: u64,
    _certificates: &[scenario::world::NamedCertificate],
    _ns: &str,
) -> Result<volume::Volume, LabError> {
    Err(LabError::Refused(vec![
        crate::plan::SWTPM_NEEDS_FEATURE.into(),
    ]))
}

/// `nulab client --console`'s script for `inputs`: one line each, `AFTERms pin PIN` or
/// `AFTERms recovery-password PASSWORD`, where `correct` is the machine's own recovery
/// password (as the simulator's world types it).
fn console_script(
    inputs: &[scenario::model::ConsoleSpec],
    recovery_password: Option<&volume::RecoveryPassword>,
) -> Result<String, LabError> {
    let mut script = String::new();
    for input in inputs {
        let after = input.after.as_millis();
        let line = match (&input.pin, &input.recovery_password) {
            (Some(pin), None) => format!("{after}ms pin {pin}"),
            (None, Some(text)) => {
                let typed = match (text.as_str(), recovery_password) {
                    ("correct", Some(password)) => password.to_string(),
                    ("correct", None) => {
                        return Err(LabError::Scenario(
                            "a console input types the recovery password, but the machine has \
                             no recovery password protector"
                                .into(),
                        ));
                    }
                    (other, _) => other.to_owned(),
                };
                format!("{after}ms recovery-password {typed}")
            }
            _ => {
                return Err(LabError::Scenario(
                    "each console input has one of `pin` or `recovery_password`".into(),
                ));
            }
        };
        script.push_str(&line);
        script.push('\n');
    }
    Ok(script)
}

/// The value of `flag` in `args` (every one, in order).
fn flag_values<'a>(args: &'a [String], flag: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    args.windows(2)
        .filter(move |pair| pair[0] == flag)
        .map(|pair| pair[1].as_str())
}

/// Someone deletes the WDS server's FVE_NKP store: its certificate files are removed and a
/// running `nulab server` re-reads its store (SIGHUP), after which it drops and logs every
/// request as the seed's error condition; waits (bounded) until its log says so.
fn remove_certificate_store(
    b: &mut Builder,
    server: &mut Wds,
    stop: &AtomicBool,
) -> Result<(), LabError> {
    for path in flag_values(&server.args, "--cert") {
        std::fs::remove_file(path).map_err(io(format!("cannot remove {path}")))?;
    }
    let Some(index) = server.running else {
        return Ok(());
    };
    let pid = b.teardown.processes[index].1.id().to_string();
    sh("kill", &["-HUP", &pid])?;
    if let Some(log) = flag_values(&server.args, "--log").next()
        && !wait_for(
            Path::new(log),
            "is no longer in the FVE_NKP store",
            Duration::from_secs(5),
            stop,
        )?
    {
        return Err(LabError::Start(format!(
            "nulab server {} did not reload its certificate store on SIGHUP",
            server.name
        )));
    }
    Ok(())
}

/// Stops a running WDS server (SIGTERM) and adds its final counters to the server's.
fn stop_wds(b: &mut Builder, server: &mut Wds) {
    let Some(index) = server.running.take() else {
        return;
    };
    terminate(&mut b.teardown.processes[index].1);
    let stdout = b
        .work
        .join(format!("wds-{}.{}.out", server.name, server.generation));
    let text = std::fs::read_to_string(stdout).unwrap_or_default();
    // `--json`: {"type":"summary","counters":{LABEL:N},...} as its last line.
    for line in text.lines() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if value["type"] == "summary"
            && let Some(counters) = value["counters"].as_object()
        {
            for (label, count) in counters {
                *server.counters.entry(label.clone()).or_default() += count.as_u64().unwrap_or(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_console_script_types_each_input_in_order_and_correct_is_the_machines_password() {
        let input =
            |after: u64, pin: Option<&str>, recovery: Option<&str>| scenario::model::ConsoleSpec {
                after: Duration::from_secs(after),
                pin: pin.map(str::to_owned),
                recovery_password: recovery.map(str::to_owned),
            };
        let inputs = [
            input(3, Some("111111"), None),
            input(30, None, Some("correct")),
        ];
        let password: volume::RecoveryPassword =
            "111111-222222-333333-444444-555555-666666-111111-222222"
                .parse()
                .unwrap();
        assert_eq!(
            console_script(&inputs, Some(&password)).unwrap(),
            "3000ms pin 111111\n30000ms recovery-password \
             111111-222222-333333-444444-555555-666666-111111-222222\n"
        );
        assert!(console_script(&inputs, None).is_err());
        assert!(console_script(&[input(1, Some("1"), Some("2"))], None).is_err());
    }

    #[test]
    fn loss_is_in_parts_per_million() {
        assert_eq!(loss_ppm("100%"), 1_000_000);
        assert_eq!(loss_ppm("30%"), 300_000);
        assert_eq!(loss_ppm("0.5%"), 5_000);
        assert_eq!(loss_ppm("0.25"), 250_000);
        assert_eq!(loss_ppm("150%"), 1_000_000);
    }

    #[test]
    fn failures_match_with_or_without_the_adapter() {
        assert!(failure_matches(
            "network-unlock: adapter 1 (eth0): DHCPv4: no reply to 2 request(s)",
            "network-unlock: DHCPv4: no reply to 2 request(s)"
        ));
        assert!(!failure_matches(
            "network-unlock: adapter 1 (eth0): DHCPv4: no reply to 1 request(s)",
            "network-unlock: DHCPv4: no reply to 2 request(s)"
        ));
        assert!(!failure_matches("tpm: x", "network-unlock: x"));
    }
}
