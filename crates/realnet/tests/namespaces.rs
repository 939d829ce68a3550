//! nulab's DHCP cores against real DHCP software, through the real-socket shell, in network
//! namespaces: nulab's client gets a lease from dnsmasq, and nulab's server leases an address
//! to busybox `udhcpc`.
//!
//! Each test builds its own topology (`testkit::netns::Lan`, namespaces named
//! `nulab-<test>-<pid>-*`): a server
//! namespace and a client namespace, each with one end of a veth pair whose other end is a
//! port of a bridge inside a third, switch namespace. Addresses (192.168.77.0/24, private)
//! exist only inside the namespaces; the root namespace's interfaces are never touched.
//! Deleting the namespaces (on drop, even when the test fails) removes the veths with them.
//! nulab's binaries run inside a namespace through `ip netns exec`, so the test process never
//! changes namespace. Every wait is bounded.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use testkit::netns::{Lan, Running, wait_for_file};

const SERVER_ADDR: &str = "192.168.77.1";

/// Hosts `srv` (the server, 192.168.77.1) and `cli` (the client) on one bridge.
fn topology(test: &str) -> Lan {
    let lan = Lan::new(&format!("nulab-{test}"), &["srv", "cli"]);
    lan.address("srv", &format!("{SERVER_ADDR}/24"));
    lan
}

fn have_everything(tools: &[&str]) -> bool {
    testkit::require_root() && tools.iter().all(|tool| testkit::require_tool(tool))
}

#[test]
fn nulab_client_gets_a_lease_from_dnsmasq() {
    if !have_everything(&["ip", "dnsmasq"]) {
        return;
    }
    let topology = topology("dnsmasq");
    let dir = tempfile::tempdir().expect("temp dir");
    let leases = dir.path().join("dnsmasq.leases");
    let log = dir.path().join("dnsmasq.log");
    let dnsmasq = topology.dnsmasq(
        "srv",
        "192.168.77.100,192.168.77.150,255.255.255.0,10m",
        &[
            "--dhcp-option=3,192.168.77.1",
            "--dhcp-option=6,192.168.77.53",
        ],
        dir.path(),
    );

    let client = Running::new(
        topology
            .command("cli", env!("CARGO_BIN_EXE_nulab-dhcp-client"))
            .args([
                "--interface",
                "cli0",
                "--initial-timeout",
                "1s",
                "--limit",
                "30s",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("client starts"),
    );
    let out = client.wait(Duration::from_secs(40));
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
        wait_for_file(&leases, &address.to_string(), Duration::from_secs(5)),
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
    let topology = topology("udhcpc");
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
        topology
            .command("srv", env!("CARGO_BIN_EXE_nulab-dhcp-server"))
            .args([
                "--interface",
                &format!("srv0={SERVER_ADDR}/24"),
                "--range",
                "192.168.77.100-192.168.77.110",
                "--router",
                SERVER_ADDR,
                "--dns",
                "192.168.77.53",
                "--lease",
                "900s",
                "--for",
                "30s",
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
        topology
            .command("cli", "udhcpc")
            .args(["-f", "-q", "-n", "-t", "5", "-T", "1", "-i", "cli0", "-s"])
            .arg(&script)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("udhcpc starts"),
    );
    let out = udhcpc.wait(Duration::from_secs(20));
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
        // A sentence for people, not a Debug dump of the event.
        assert!(
            !line.contains('{'),
            "a Debug dump in the server's log: {line}"
        );
        if line.contains("leased 192.168.77.100 to ") && line.ends_with("for 900 s") {
            leased = true;
            break;
        }
        if start.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    assert!(leased, "the server reported the lease");
}

/// Both binaries, each the one driver plus a DHCP service: nulab's client gets a lease from
/// nulab's server (needs no external DHCP software, so it runs wherever root does).
#[test]
fn nulabs_client_gets_a_lease_from_nulabs_server() {
    if !have_everything(&["ip"]) {
        return;
    }
    let topology = topology("pair");
    let mut server = Running::new(
        topology
            .command("srv", env!("CARGO_BIN_EXE_nulab-dhcp-server"))
            .args([
                "--interface",
                &format!("srv0={SERVER_ADDR}/24"),
                "--range",
                "192.168.77.120-192.168.77.130",
                "--router",
                SERVER_ADDR,
                "--lease",
                "600s",
                "--for",
                "30s",
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
    let client = Running::new(
        topology
            .command("cli", env!("CARGO_BIN_EXE_nulab-dhcp-client"))
            .args(["--interface", "cli0", "--limit", "20s", "--seed", "3"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("client starts"),
    );
    let out = client.wait(Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "address=192.168.77.120",
        "prefix=24",
        "router=192.168.77.1",
        "server_id=192.168.77.1",
        "lease_secs=600",
    ] {
        assert!(
            stdout.lines().any(|l| l.trim() == expected),
            "{expected} in the client's output:\n{stdout}"
        );
    }
    // The client only shows what the firmware would get: the interface keeps no address.
    let shown = std::process::Command::new("ip")
        .args([
            "-n",
            &topology.ns("cli"),
            "-4",
            "address",
            "show",
            "dev",
            "cli0",
        ])
        .output()
        .expect("ip runs");
    assert!(
        !String::from_utf8_lossy(&shown.stdout).contains("192.168.77.120"),
        "the client left the interface alone"
    );
}

/// Its log cut off by a closed pipe (`nulab-dhcp-server … | head -1` once head is done), the
/// server stops at once and quietly with status 141, as `nulab` does: no panic, no message.
#[test]
fn a_closed_pipe_stops_the_dhcp_server_quietly() {
    if !have_everything(&["ip"]) {
        return;
    }
    let topology = topology("pipe");
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let server = Running::new(
        topology
            .command("srv", env!("CARGO_BIN_EXE_nulab-dhcp-server"))
            .args([
                "--interface",
                &format!("srv0={SERVER_ADDR}/24"),
                "--range",
                "192.168.77.140-192.168.77.150",
                "--for",
                "30s",
            ])
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .expect("server starts"),
    );
    let start = Instant::now();
    let out = server.wait(Duration::from_secs(20));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the server ran on with nobody reading"
    );
    assert_eq!(out.status.code(), Some(141), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "a closed pipe is quiet: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
