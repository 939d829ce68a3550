//! Starts swtpm (with `tpm::swtpm`'s command line) on a free port pair for one test and kills it
//! on drop.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Swtpm {
    child: Child,
    port: u16,
    _state: tempfile::TempDir,
}

/// Two consecutive free ports (server, control), found by binding and releasing.
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
        let port = probe.local_addr().expect("address").port();
        drop(probe);
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two consecutive free ports");
}

impl Swtpm {
    pub fn start() -> Self {
        let state = tempfile::tempdir().expect("state dir");
        let port = free_port_pair();
        let child = Command::new("swtpm")
            .args(tpm::swtpm::socket_args(port, state.path()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start swtpm");
        let server = Self {
            child,
            port,
            _state: state,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        // Probe the control port, not the server port: swtpm serves one connection at a time.
        while TcpStream::connect(server.control_address()).is_err() {
            assert!(
                Instant::now() < deadline,
                "swtpm did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub fn tcti(&self) -> String {
        tpm::swtpm::tcti(self.port)
    }

    pub fn control_address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], tpm::swtpm::control_port(self.port)))
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
