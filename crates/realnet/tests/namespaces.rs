//! nulab's DHCP cores against real DHCP software, through the real-socket shell, in network
//! namespaces: nulab's client gets a lease from dnsmasq, and nulab's server leases an address
//! to busybox `udhcpc`.
//!
//! Each test builds its own topology (namespaces named `nulab-<test>-<pid>-*`): a server
//! namespace and a client namespace, each with one end of a veth pair whose other end is a
//! port of a bridge inside a third, switch namespace. Addresses (192.168.77.0/24, private)
//! exist only inside the namespaces; the root namespace's interfaces are never touched.
//! Deleting the namespaces (on drop, even when the test fails) removes the veths with them.
//! nulab's binaries run inside a namespace through `ip netns exec`, so the test process never
//! changes namespace. Every wait is bounded.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SERVER_ADDR: &str = "192.168.77.1";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Server namespace (`srv0`), client namespace (`cli0`), switch namespace (bridge `br0`).
struct Topology {
    server: String,
    client: String,
    switch: String,
}

impl Topology {
    fn new(test: &str) -> Topology {
        let base = format!("nulab-{test}-{}", std::process::id());
        let topology = Topology {
            server: format!("{base}-s"),
            client: format!("{base}-c"),
            switch: format!("{base}-w"),
        };
        // From here on, Drop cleans up whatever was created.
        for ns in [&topology.server, &topology.client, &topology.switch] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let w = topology.switch.as_str();
        ip(&["-n", w, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", w, "link", "set", "br0", "up"]);
        for (ns, end, port) in [
            (&topology.server, "srv0", "srvp"),
            (&topology.client, "cli0", "clip"),
        ] {
            // Both ends are created directly in their namespaces: no name ever appears in
            // the root namespace.
            ip(&[
                "link", "add", end, "netns", ns, "type", "veth", "peer", "name", port, "netns", w,
            ]);
            ip(&["-n", w, "link", "set", port, "master", "br0", "up"]);
            ip(&["-n", ns, "link", "set", end, "up"]);
        }
        ip(&[
            "-n",
            &topology.server,
            "addr",
            "add",
            &format!("{SERVER_ADDR}/24"),
            "dev",
            "srv0",
        ]);
        topology
    }

    /// `program args...` inside namespace `ns`.
    fn command(ns: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns, program]);
        command
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.server, &self.client, &self.switch] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A child process killed (and reaped) on drop, so a failing test leaves nothing running.
struct Running(Option<Child>);

impl Running {
    fn new(child: Child) -> Running {
        Running(Some(child))
    }

    fn child(&mut self) -> &mut Child {
        self.0
            .as_mut()
            .expect("the child is only taken by wait_bounded")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Wait for the child to exit, killing it after `limit`, and collect its output.
fn wait_bounded(mut running: Running, limit: Duration) -> Output {
    let start = Instant::now();
    while running.child().try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = running.child().kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let child = running.0.take().expect("not yet taken");
    child.wait_with_output().expect("output")
}

/// Wait until `path` holds a line containing `needle`, for at most `limit`.
fn wait_for_file_line(path: &Path, needle: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::fs::read_to_string(path).is_ok_and(|text| text.lines().any(|l| l.contains(needle)))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn have_everything(tools: &[&str]) -> bool {
    testkit::require_root() && tools.iter().all(|tool| testkit::require_tool(tool))
}

#[test]
fn nulab_client_gets_a_lease_from_dnsmasq() {
    if !have_everything(&["ip", "dnsmasq"]) {
        return;
    }
    let topology = Topology::new("dnsmasq");
    let dir = tempfile::tempdir().expect("temp dir");
    let leases = dir.path().join("dnsmasq.leases");
    let log = dir.path().join("dnsmasq.log");
    let dnsmasq = Running::new(
        Topology::command(&topology.server, "dnsmasq")
            .args([
                "--conf-file=/dev/null",
                "--port=0",
                "--no-ping",
                "--no-daemon",
                "--bind-interfaces",
                "--interface=srv0",
                "--except-interface=lo",
                "--dhcp-range=192.168.77.100,192.168.77.150,255.255.255.0,10m",
                "--dhcp-option=3,192.168.77.1",
                "--dhcp-option=6,192.168.77.53",
                "--pid-file=",
                "--user=root",
                "--group=root",
                "--log-dhcp",
            ])
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .arg(format!("--log-facility={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq starts"),
    );
    assert!(
        wait_for_file_line(&log, "sockets bound exclusively", Duration::from_secs(10)),
        "dnsmasq did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let client = Running::new(
        Topology::command(&topology.client, env!("CARGO_BIN_EXE_nulab-dhcp-client"))
            .args([
                "--interface",
                "cli0",
                "--initial-timeout-ms",
                "1000",
                "--limit-secs",
                "30",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("client starts"),
    );
    let out = wait_bounded(client, Duration::from_secs(40));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {}\n{stdout}\ndnsmasq log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let field = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_default()
            .to_owned()
    };
    let address: std::net::Ipv4Addr = field("address").parse().expect("an address");
    assert!(
        (std::net::Ipv4Addr::new(192, 168, 77, 100)..=std::net::Ipv4Addr::new(192, 168, 77, 150))
            .contains(&address),
        "{address} is in dnsmasq's range"
    );
    assert_eq!(field("prefix"), "24");
    assert_eq!(field("router"), "192.168.77.1");
    assert_eq!(field("dns"), "192.168.77.53");
    assert_eq!(field("server_id"), SERVER_ADDR);
    assert_eq!(field("lease_secs"), "600");
    // dnsmasq recorded the same lease.
    assert!(
        wait_for_file_line(&leases, &address.to_string(), Duration::from_secs(5)),
        "dnsmasq wrote the lease to its file"
    );
    let recorded = std::fs::read_to_string(&leases).expect("lease file");
    assert!(
        recorded.contains(&address.to_string()),
        "dnsmasq's lease file names {address}:\n{recorded}"
    );
    drop(dnsmasq);
}

#[test]
fn udhcpc_gets_a_lease_from_nulabs_server() {
    if !have_everything(&["ip", "udhcpc"]) {
        return;
    }
    let topology = Topology::new("udhcpc");
    let dir = tempfile::tempdir().expect("temp dir");
    let env_file = dir.path().join("udhcpc.env");
    // udhcpc's own script would rewrite this machine's /etc/resolv.conf and configure the
    // interface: ours only writes down what udhcpc was told.
    let script = dir.path().join("record.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{{ echo \"event=$1\"; env | grep -E '^(ip|subnet|router|dns|serverid|lease|interface)='; }} >> '{}'\nexit 0\n",
            env_file.display()
        ),
    )
    .expect("script written");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("script executable");
    }

    let mut server = Running::new(
        Topology::command(&topology.server, env!("CARGO_BIN_EXE_nulab-dhcp-server"))
            .args([
                "--interface",
                &format!("srv0={SERVER_ADDR}/24"),
                "--range",
                "192.168.77.100-192.168.77.110",
                "--router",
                SERVER_ADDR,
                "--dns",
                "192.168.77.53",
                "--lease-secs",
                "900",
                "--run-secs",
                "30",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("server starts"),
    );
    let mut lines = BufReader::new(server.child().stdout.take().expect("piped")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(
        first.starts_with("listening on srv0"),
        "server said {first:?}"
    );

    let udhcpc = Running::new(
        Topology::command(&topology.client, "udhcpc")
            .args(["-f", "-q", "-n", "-t", "5", "-T", "1", "-i", "cli0", "-s"])
            .arg(&script)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("udhcpc starts"),
    );
    let out = wait_bounded(udhcpc, Duration::from_secs(20));
    let recorded = std::fs::read_to_string(&env_file).unwrap_or_default();
    assert!(
        out.status.success(),
        "udhcpc failed: {}{}\nrecorded:\n{recorded}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "event=bound",
        "ip=192.168.77.100",
        "subnet=255.255.255.0",
        "router=192.168.77.1",
        "dns=192.168.77.53",
        "serverid=192.168.77.1",
        "lease=900",
    ] {
        assert!(
            recorded.lines().any(|l| l.trim() == expected),
            "{expected} in what udhcpc was told:\n{recorded}"
        );
    }
    // The server logged the lease as it granted it.
    let start = Instant::now();
    let mut leased = false;
    for line in lines.map_while(Result::ok) {
        if line.contains("Leased") && line.contains("192.168.77.100") {
            leased = true;
            break;
        }
        if start.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    assert!(leased, "the server reported the lease");
}
