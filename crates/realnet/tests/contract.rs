//! The real shell keeps each ordering guarantee of the host contract (`host_contract::stack`),
//! one test per guarantee, named after it, as `netsim`'s `tests/sim/contract.rs` does for the
//! simulator. Guarantees 2, 3, 4 and 6 run the driver on the loopback interface; 1 (an address
//! change) and 5 (a link going down) change an interface, so they run in namespaces
//! (`testkit::netns::Lan`, `nucontract-<test>-<run id>-*`, removed on drop) as this test binary
//! run again inside them, in the role named by `REALNET_CONTRACT_ROLE`. All need root
//! (`SO_BINDTODEVICE`); every wait is bounded.

// Test code may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use host_contract::{Bytes, Datagram, HostStack, HostTime, Service};
use realnet::{AddressMode, Driver, DriverConfig};
use testkit::netns::{Lan, Running, wait_for_file};

const ROLE: &str = "REALNET_CONTRACT_ROLE";
const DIR: &str = "REALNET_CONTRACT_DIR";

type OnStart = Box<dyn FnMut(&mut dyn HostStack)>;
type OnTimer = Box<dyn FnMut(&mut dyn HostStack, u64)>;

/// A service driven by closures, keeping what it received and when.
struct Scripted {
    start: OnStart,
    timer: OnTimer,
    got: Rc<RefCell<Vec<(HostTime, Datagram)>>>,
}

impl Service for Scripted {
    fn on_start(&mut self, stack: &mut dyn HostStack) {
        (self.start)(stack);
    }
    fn on_datagram(&mut self, stack: &mut dyn HostStack, datagram: Datagram) {
        self.got.borrow_mut().push((stack.now(), datagram));
    }
    fn on_timer(&mut self, stack: &mut dyn HostStack, token: u64) {
        (self.timer)(stack, token);
    }
}

fn after(stack: &dyn HostStack, ms: u64) -> HostTime {
    stack.now().saturating_add(Duration::from_millis(ms))
}

/// Runs `service` on `interfaces` for `duration`.
fn drive(interfaces: &[&str], mode: AddressMode, service: &mut Scripted, duration: Duration) {
    let mut config = DriverConfig::new(interfaces.iter().map(|s| (*s).to_owned()).collect());
    config.ipv6 = false;
    config.addresses = mode;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut driver = Driver::new(config).unwrap();
        driver.start(service).await;
        driver
            .run_until(service, tokio::time::sleep(duration), |_| {
                ControlFlow::Continue(())
            })
            .await;
    });
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn guarantee_2_sends_leave_in_call_order() {
    if !testkit::require_root() {
        return;
    }
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let dst = sink.local_addr().unwrap();
    let port = free_port();
    let mut service = Scripted {
        start: Box::new(move |stack| {
            stack.bind(port).unwrap();
            let at = after(stack, 10);
            stack.set_timer(at, 0);
        }),
        timer: Box::new(move |stack, _| {
            let src = SocketAddr::from(([127, 0, 0, 1], port));
            for i in 0..50u8 {
                stack.send(0, src, dst, Bytes::from(vec![i])).unwrap();
            }
        }),
        got: Rc::default(),
    };
    drive(
        &["lo"],
        AddressMode::Record,
        &mut service,
        Duration::from_millis(300),
    );
    let mut order = Vec::new();
    let mut buf = [0u8; 16];
    while order.len() < 50 {
        let (len, _) = sink.recv_from(&mut buf).unwrap();
        assert_eq!(len, 1);
        order.push(buf[0]);
    }
    assert_eq!(order, (0..50).collect::<Vec<u8>>());
}

#[test]
fn guarantee_3_and_4_timers_fire_in_deadline_order_never_early_and_time_never_goes_back() {
    if !testkit::require_root() {
        return;
    }
    let fired = Rc::new(RefCell::new(Vec::new()));
    let deadlines = Rc::new(RefCell::new(Vec::new()));
    let (fired2, deadlines2) = (fired.clone(), deadlines.clone());
    let mut service = Scripted {
        start: Box::new(move |stack| {
            // Set out of order, with a tie and one already past.
            for (ms, token) in [(90u64, 0u64), (30, 1), (60, 2), (30, 3)] {
                let at = after(stack, ms);
                deadlines2.borrow_mut().push((token, at));
                stack.set_timer(at, token);
            }
            deadlines2.borrow_mut().push((4, HostTime::ZERO));
            stack.set_timer(HostTime::ZERO, 4);
        }),
        timer: Box::new(move |stack, token| {
            let now = stack.now();
            std::thread::sleep(Duration::from_millis(2));
            assert_eq!(stack.now(), now, "now is fixed inside a callback");
            fired2.borrow_mut().push((token, now));
        }),
        got: Rc::default(),
    };
    drive(
        &["lo"],
        AddressMode::Record,
        &mut service,
        Duration::from_millis(300),
    );
    let fired = fired.borrow();
    let tokens: Vec<u64> = fired.iter().map(|(t, _)| *t).collect();
    assert_eq!(tokens, [4, 1, 3, 2, 0]);
    for (token, at) in fired.iter() {
        let (_, deadline) = deadlines
            .borrow()
            .iter()
            .copied()
            .find(|(t, _)| t == token)
            .unwrap();
        assert!(
            *at >= deadline,
            "timer {token} fired at {at}, before {deadline}"
        );
    }
    assert!(
        fired.windows(2).all(|w| w[0].1 <= w[1].1),
        "time never goes back"
    );
}

#[test]
fn guarantee_6_nothing_arrives_on_an_unbound_port() {
    if !testkit::require_root() {
        return;
    }
    let port = free_port();
    let sender = std::thread::spawn(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..60u8 {
            let _ = socket.send_to(&[i], ("127.0.0.1", port));
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let window = Rc::new(RefCell::new((HostTime::MAX, HostTime::MAX)));
    let window2 = window.clone();
    let got = Rc::new(RefCell::new(Vec::new()));
    let mut service = Scripted {
        start: Box::new(|stack| {
            let (bind, unbind) = (after(stack, 150), after(stack, 350));
            stack.set_timer(bind, 1);
            stack.set_timer(unbind, 2);
        }),
        timer: Box::new(move |stack, token| {
            if token == 1 {
                stack.bind(port).unwrap();
                window2.borrow_mut().0 = stack.now();
            } else {
                stack.unbind(port);
                window2.borrow_mut().1 = stack.now();
            }
        }),
        got: got.clone(),
    };
    drive(
        &["lo"],
        AddressMode::Record,
        &mut service,
        Duration::from_millis(800),
    );
    sender.join().unwrap();
    let (bound, unbound) = *window.borrow();
    let got = got.borrow();
    assert!(!got.is_empty(), "datagrams arrived while bound");
    assert!(got.len() < 60, "not all of them: {}", got.len());
    for (at, datagram) in got.iter() {
        assert!(
            *at >= bound && *at < unbound,
            "{at} outside {bound}..{unbound}"
        );
        assert_eq!(datagram.dst.port(), port);
    }
}

// ---- in namespaces ---------------------------------------------------------------------------

fn role_command(lan: &Lan, host: &str, role: &str, dir: &Path) -> Running {
    let exe = std::env::current_exe().unwrap();
    let log = std::fs::File::create(dir.join(format!("{role}.log"))).unwrap();
    Running::spawn(
        lan.command(host, exe.to_str().unwrap())
            .args([
                "role",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, role)
            .env(DIR, dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    )
}

fn append(dir: &Path, file: &str, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(file))
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

/// Host `b` (192.168.80.2, a recorder on UDP 7 that echoes each datagram's source back) and
/// host `a`, which runs `role` on the driver; returns b's record and a's.
fn in_namespaces(test: &str, role: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::new(&format!("nucontract-{test}"), &["a", "b"]);
    lan.address("b", "192.168.80.2/24");
    let _b = role_command(&lan, "b", "recorder", dir.path());
    assert!(
        wait_for_file(
            &dir.path().join("b.txt"),
            "listening",
            Duration::from_secs(10)
        ),
        "the recorder did not start"
    );
    let a = role_command(&lan, "a", role, dir.path());
    let out = a.wait(Duration::from_secs(30));
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    assert!(
        out.status.success(),
        "{role}: {}",
        read(&format!("{role}.log"))
    );
    (read("b.txt"), read("a.txt"))
}

#[test]
fn guarantee_1_an_address_set_is_in_effect_for_every_datagram_sent_after_it() {
    if !testkit::require_root() {
        return;
    }
    let (b, a) = in_namespaces("address", "address");
    // The datagram sent right after set_ipv4 left from the new address, and the reply to
    // that address came back.
    let first = b
        .lines()
        .find(|l| l.starts_with("got "))
        .unwrap_or_default();
    assert_eq!(first, "got first from 192.168.80.5:5000", "{b}");
    assert!(a.contains("echo: 192.168.80.5:5000"), "{a}");
}

#[test]
fn guarantee_5_a_datagram_is_never_held_past_a_link_coming_back() {
    if !testkit::require_root() {
        return;
    }
    let (b, a) = in_namespaces("link", "link");
    let got: Vec<&str> = b.lines().filter(|l| l.starts_with("got ")).collect();
    assert_eq!(
        got,
        [
            "got before from 192.168.80.5:5000",
            "got after from 192.168.80.5:5000"
        ],
        "a: {a}"
    );
}

/// Runs this process's role inside its namespace (the parent test sets the variables); does
/// nothing without them. Not a test of its own: ignored unless a parent asks for it.
#[test]
#[ignore = "a host's role, run inside its namespace by the tests above"]
fn role() {
    let (Ok(role), Ok(dir)) = (std::env::var(ROLE), std::env::var(DIR)) else {
        return;
    };
    let dir = PathBuf::from(dir);
    match role.as_str() {
        "recorder" => recorder(&dir),
        "address" => address_role(&dir),
        "link" => link_role(&dir),
        other => panic!("unknown role {other}"),
    }
}

fn recorder(dir: &Path) {
    let socket = UdpSocket::bind("192.168.80.2:7").unwrap();
    append(dir, "b.txt", "listening");
    let mut buf = [0u8; 512];
    loop {
        let (len, src) = socket.recv_from(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..len]).into_owned();
        append(dir, "b.txt", &format!("got {text} from {src}"));
        let _ = socket.send_to(format!("echo: {src}").as_bytes(), src);
    }
}

fn peer() -> SocketAddr {
    "192.168.80.2:7".parse().unwrap()
}

fn source() -> SocketAddr {
    "192.168.80.5:5000".parse().unwrap()
}

fn address_role(dir: &Path) {
    let got = Rc::new(RefCell::new(Vec::new()));
    let mut service = Scripted {
        start: Box::new(|stack| {
            stack.bind(5000).unwrap();
            let at = after(stack, 100);
            stack.set_timer(at, 0);
        }),
        timer: Box::new(|stack, _| {
            stack
                .set_ipv4(0, Some("192.168.80.5/24".parse().unwrap()))
                .unwrap();
            stack
                .send(0, source(), peer(), Bytes::from_static(b"first"))
                .unwrap();
        }),
        got: got.clone(),
    };
    drive(
        &["a0"],
        AddressMode::Configure,
        &mut service,
        Duration::from_secs(2),
    );
    for (_, datagram) in got.borrow().iter() {
        let text = String::from_utf8_lossy(&datagram.payload).into_owned();
        append(dir, "a.txt", &text);
    }
}

fn link(state: &str) {
    let status = std::process::Command::new("ip")
        .args(["link", "set", "a0", state])
        .status()
        .unwrap();
    assert!(status.success());
}

fn link_role(dir: &Path) {
    let mut service = Scripted {
        start: Box::new(|stack| {
            stack.bind(5000).unwrap();
            stack
                .set_ipv4(0, Some("192.168.80.5/24".parse().unwrap()))
                .unwrap();
            for (ms, token) in [(300, 0), (600, 1), (900, 2), (2500, 3)] {
                let at = after(stack, ms);
                stack.set_timer(at, token);
            }
        }),
        timer: Box::new(|stack, token| {
            let send = |stack: &mut dyn HostStack, text: &'static str| {
                stack
                    .send(0, source(), peer(), Bytes::from_static(text.as_bytes()))
                    .unwrap();
            };
            match token {
                0 => send(stack, "before"),
                1 => {
                    link("down");
                    send(stack, "during");
                    send(stack, "during");
                }
                2 => link("up"),
                _ => send(stack, "after"),
            }
        }),
        got: Rc::default(),
    };
    drive(
        &["a0"],
        AddressMode::Configure,
        &mut service,
        Duration::from_secs(4),
    );
    append(dir, "a.txt", "done");
}
