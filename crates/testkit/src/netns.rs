//! A switched LAN of network namespaces for tests that run real programs (dnsmasq, udhcpc,
//! `nulab server`, `nulab client`, tshark) against each other, and a child process that is
//! killed when the test ends, whichever way it ends.
//!
//! [`Lan::new`] makes a switch namespace holding bridge `br0` and one namespace per host, each
//! with interface `<host>0` whose veth peer (`<host>p`) is a bridge port. Both veth ends are
//! created directly in their namespaces, so no name ever appears in the root namespace, and
//! deleting the namespaces (on drop, even when the test panics) removes the veths with them.
//! Programs run inside a namespace through `ip netns exec`: the test process never changes
//! namespace. Every wait is bounded.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `ip ARGS...`, which must succeed.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Hosts on one bridge, each in its own namespace.
pub struct Lan {
    base: String,
    hosts: Vec<String>,
}

impl Lan {
    /// Namespaces `<base>-<pid>-<host>` for each host and `<base>-<pid>-switch`.
    pub fn new(base: &str, hosts: &[&str]) -> Lan {
        let lan = Lan {
            base: format!("{base}-{}", std::process::id()),
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        };
        // From here on, Drop cleans up whatever was created.
        let switch = lan.ns("switch");
        for ns in lan.namespaces() {
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        for host in &lan.hosts {
            let (ns, end, port) = (lan.ns(host), format!("{host}0"), format!("{host}p"));
            ip(&[
                "link", "add", &end, "netns", &ns, "type", "veth", "peer", "name", &port, "netns",
                &switch,
            ]);
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"]);
            ip(&["-n", &ns, "link", "set", &end, "up"]);
        }
        lan
    }

    /// The namespace of `host` (or of the switch, for `"switch"`).
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.base)
    }

    /// Gives `host`'s interface (`<host>0`) a static address, `cidr` like `192.168.77.1/24`.
    pub fn address(&self, host: &str, cidr: &str) {
        ip(&[
            "-n",
            &self.ns(host),
            "addr",
            "add",
            cidr,
            "dev",
            &format!("{host}0"),
        ]);
    }

    /// `program` to run inside `host`'s namespace.
    pub fn command(&self, host: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns(host), program]);
        command
    }

    /// dnsmasq as the DHCP server (DNS off) on `host`'s interface, leasing `range`
    /// (`first,last,mask,lease-time`) plus `extra` options, logging every DHCP exchange to
    /// `dir/dnsmasq.log` and its leases to `dir/dnsmasq.leases`. Returns once its sockets are
    /// bound (bounded wait; panics with the log if it never gets there).
    pub fn dnsmasq(&self, host: &str, range: &str, extra: &[&str], dir: &Path) -> Running {
        let log = dir.join("dnsmasq.log");
        let running = Running::spawn(
            self.command(host, "dnsmasq")
                .args([
                    "--conf-file=/dev/null",
                    "--port=0",
                    "--no-ping",
                    "--no-daemon",
                    "--bind-interfaces",
                    "--except-interface=lo",
                    "--pid-file=",
                    "--user=root",
                    "--group=root",
                    "--log-dhcp",
                ])
                .arg(format!("--interface={host}0"))
                .arg(format!("--dhcp-range={range}"))
                .args(extra)
                .arg(format!(
                    "--dhcp-leasefile={}",
                    dir.join("dnsmasq.leases").display()
                ))
                .arg(format!("--log-facility={}", log.display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        assert!(
            wait_for_file(&log, "sockets bound exclusively", Duration::from_secs(10)),
            "dnsmasq did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        running
    }

    /// Waits (bounded) until something accepts TCP connections on `127.0.0.1:port` inside
    /// `host`'s namespace (swtpm's control port, say), probing with bash's `/dev/tcp`.
    pub fn wait_for_tcp(&self, host: &str, port: u16, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            let probe = self
                .command(host, "bash")
                .arg("-c")
                .arg(format!(": </dev/tcp/127.0.0.1/{port}"))
                .stderr(Stdio::null())
                .status();
            if probe.is_ok_and(|status| status.success()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn namespaces(&self) -> Vec<String> {
        self.hosts
            .iter()
            .map(|h| self.ns(h))
            .chain([self.ns("switch")])
            .collect()
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.namespaces() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

/// A child process killed (and reaped) on drop, so a failing test leaves nothing running.
pub struct Running(Option<Child>);

impl Running {
    pub fn new(child: Child) -> Running {
        Running(Some(child))
    }

    pub fn spawn(command: &mut Command) -> Running {
        Running::new(command.spawn().expect("the process starts"))
    }

    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("the child is only taken by wait")
    }

    /// Sends `signal` by name (INT, TERM, HUP).
    pub fn signal(&mut self, signal: &str) {
        let pid = self.child().id();
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal}");
    }

    /// Waits for the exit, killing the child after `limit`, and collects its output.
    pub fn wait(mut self, limit: Duration) -> Output {
        let start = Instant::now();
        while self.child().try_wait().expect("wait").is_none() {
            if start.elapsed() > limit {
                let _ = self.child().kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let child = self.0.take().expect("not yet taken");
        child.wait_with_output().expect("output")
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

/// Waits (bounded) until the file at `path` contains `needle`.
pub fn wait_for_file(path: &Path, needle: &str, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::fs::read_to_string(path).is_ok_and(|text| text.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}
