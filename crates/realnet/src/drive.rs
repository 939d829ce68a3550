//! The shell's loop around each core: send what the core wants sent, then wait for a datagram
//! or the core's next timeout, whichever comes first, and feed it in.
//!
//! A failed `send_to` (the interface went down, say) is treated as a lost datagram: the core's
//! retransmission timers are what copes with loss, on a real network as in the simulator. The
//! destination the core is told about is the socket's local address (`0.0.0.0:port`): reading
//! the real one needs `IP_PKTINFO`, and neither DHCP core looks at it.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use dhcp::{Client, ClientConfig, ClientEvent, Lease, Received, Server, ServerConfig, ServerEvent};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tokio::time::Instant;

use crate::{InterfaceSocket, ShellError, adapter_facts};

/// The largest datagram the shell reads (a DHCP message is at most a few hundred bytes; a
/// larger one is truncated and then dropped by the core as malformed).
const MAX_DATAGRAM: usize = 2048;

fn seeded(seed: Option<u64>) -> ChaCha20Rng {
    match seed {
        Some(seed) => ChaCha20Rng::seed_from_u64(seed),
        None => ChaCha20Rng::from_entropy(),
    }
}

/// Sleep until `deadline` (time since `epoch`), or forever if there is none.
async fn sleep_until(epoch: Instant, deadline: Option<Duration>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(epoch + at).await,
        None => std::future::pending().await,
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
}

/// One DORA on `interface` as firmware runs it; the lease, or why there is none. Gives up
/// with [`ShellError::TimedOut`] after `limit` whatever the client's own timers say.
pub async fn run_client(
    interface: &str,
    config: ClientConfig,
    limit: Duration,
    seed: Option<u64>,
) -> Result<Lease, ShellError> {
    let facts = adapter_facts(interface)?;
    let socket = InterfaceSocket::open(interface, dhcp::CLIENT_PORT)?;
    let mut rng = seeded(seed);
    let epoch = Instant::now();
    let mut client = Client::new(config, facts, 0);
    client.start(Duration::ZERO, &mut rng);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let exchange = async {
        loop {
            while let Some(t) = client.poll_transmit() {
                let _ = socket.socket.send_to(&t.payload, t.dst).await;
            }
            while let Some(event) = client.poll_event() {
                match event {
                    ClientEvent::Bound(lease) => return Ok(lease),
                    ClientEvent::Failed(failure) => return Err(ShellError::Dhcp(failure)),
                    _ => {}
                }
            }
            tokio::select! {
                received = socket.socket.recv_from(&mut buf) => {
                    let Ok((len, src)) = received else { continue };
                    let now = epoch.elapsed();
                    let payload = &buf[..len];
                    let rx = Received { interface: 0, src, dst: local(dhcp::CLIENT_PORT), payload };
                    client.handle(now, rx, &mut rng);
                }
                () = sleep_until(epoch, client.poll_timeout()) => {
                    client.handle_timeout(epoch.elapsed(), &mut rng);
                }
            }
        }
    };
    tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| ShellError::TimedOut(limit))?
}

/// What a server run ended with.
#[derive(Debug, Clone)]
pub struct ServerReport {
    pub counters: dhcp::ServerCounters,
    pub leases: Vec<dhcp::server::LeaseRecord>,
}

/// Serve `config` on `interfaces` (index `i` of the list is the core's interface `i`, so it
/// must match `config.interfaces`) for `duration`, calling `on_event` for every lease event
/// as it happens.
pub async fn run_server(
    interfaces: &[String],
    config: ServerConfig,
    duration: Duration,
    mut on_event: impl FnMut(Duration, ServerEvent),
) -> Result<ServerReport, ShellError> {
    let sockets = interfaces
        .iter()
        .map(|name| InterfaceSocket::open(name, dhcp::SERVER_PORT).map(|s| Arc::new(s.socket)))
        .collect::<Result<Vec<_>, _>>()?;
    // One receiving task per interface, all feeding one queue, so that the core is only ever
    // touched by this loop.
    let (queue, mut incoming) = tokio::sync::mpsc::channel::<(usize, SocketAddr, Vec<u8>)>(64);
    let mut receivers = tokio::task::JoinSet::new();
    for (index, socket) in sockets.iter().enumerate() {
        let socket = socket.clone();
        let queue = queue.clone();
        receivers.spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while let Ok((len, src)) = socket.recv_from(&mut buf).await {
                if queue.send((index, src, buf[..len].to_vec())).await.is_err() {
                    return;
                }
            }
        });
    }
    let epoch = Instant::now();
    let mut server = Server::new(config);
    let end = epoch + duration;
    loop {
        while let Some(t) = server.poll_transmit() {
            if let Some(socket) = sockets.get(t.interface) {
                let _ = socket.send_to(&t.payload, t.dst).await;
            }
        }
        while let Some(event) = server.poll_event() {
            on_event(epoch.elapsed(), event);
        }
        tokio::select! {
            datagram = incoming.recv() => {
                let Some((interface, src, payload)) = datagram else { break };
                let rx = Received { interface, src, dst: local(dhcp::SERVER_PORT), payload: &payload };
                server.handle(epoch.elapsed(), rx);
            }
            () = sleep_until(epoch, server.poll_timeout()) => {
                server.handle_timeout(epoch.elapsed());
            }
            () = tokio::time::sleep_until(end) => break,
        }
    }
    receivers.abort_all();
    Ok(ServerReport {
        counters: server.counters().clone(),
        leases: server.leases(),
    })
}
