//! The DHCP cores on real interfaces: [`run_client`] (`nulab-dhcp-client`) and [`run_server`]
//! (`nulab-dhcp-server`), each the one [`Driver`] plus the service the simulator runs too
//! (`dhcp::service::DhcpClientService`, `dhcp::service::DhcpServerService`).

use std::cell::RefCell;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::time::Duration;

use dhcp::service::{ClientRecord, DhcpClientService, DhcpServerService};
use dhcp::{ClientConfig, Lease, Server, ServerConfig, ServerEvent};

use crate::ShellError;
use crate::delay::Delayed;
use crate::driver::{AddressMode, Driver, DriverConfig, ShellNote};

/// A 32-byte seed from a `u64` (little-endian in the first 8 bytes), or `None` for the OS's.
pub(crate) fn seed_bytes(seed: Option<u64>) -> Option<[u8; 32]> {
    seed.map(|n| {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        bytes
    })
}

/// One DORA on `interface` as firmware runs it; the lease, or why there is none. Gives up
/// with [`ShellError::TimedOut`] after `limit` whatever the client's own timers say. The
/// interface is left as it was (the lease is recorded, not configured).
pub async fn run_client(
    interface: &str,
    config: ClientConfig,
    limit: Duration,
    seed: Option<u64>,
) -> Result<Lease, ShellError> {
    let mut driver_config = DriverConfig::new(vec![interface.to_owned()]);
    driver_config.seed = seed_bytes(seed);
    driver_config.addresses = AddressMode::Record;
    driver_config.ipv6 = false;
    let mut driver = Driver::new(driver_config)?;
    let record = Rc::new(RefCell::new(ClientRecord::default()));
    let mut service = DhcpClientService::new(config, 0, Rc::clone(&record));
    let done = |record: &ClientRecord| record.lease.is_some() || record.failure.is_some();
    driver.start(&mut service).await;
    if driver.open_sockets() == 0 {
        return Err(no_socket(&mut driver, interface));
    }
    if !done(&record.borrow()) {
        let stop = tokio::time::sleep(limit);
        driver
            .run_until(&mut service, stop, |_| {
                if done(&record.borrow()) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .await;
    }
    let mut record = record.borrow_mut();
    if let Some(lease) = record.lease.take() {
        return Ok(lease);
    }
    match record.failure.take() {
        Some(failure) => Err(ShellError::Dhcp(failure)),
        None => Err(ShellError::TimedOut(limit)),
    }
}

/// [`ShellError::NoSocket`], or the first socket failure the driver noted.
pub(crate) fn no_socket(driver: &mut Driver, interfaces: &str) -> ShellError {
    let why = driver
        .take_notes()
        .into_iter()
        .map(|note| match note {
            ShellNote::SocketFailed { why, .. } | ShellNote::AddressNotConfigured { why, .. } => {
                why
            }
            ShellNote::AddressConfigured { interface, address } => {
                format!("{address} configured on {interface}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    if why.is_empty() {
        ShellError::NoSocket(interfaces.to_owned())
    } else {
        ShellError::NoSocket(format!("{interfaces}: {why}"))
    }
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
    on_event: impl FnMut(Duration, ServerEvent),
) -> Result<ServerReport, ShellError> {
    run_server_late(interfaces, config, duration, Duration::ZERO, on_event).await
}

/// [`run_server`], every datagram the server sends leaving `reply_delay` late
/// ([`crate::delay::Delayed`]): a DHCP server that answers late.
pub async fn run_server_late(
    interfaces: &[String],
    config: ServerConfig,
    duration: Duration,
    reply_delay: Duration,
    on_event: impl FnMut(Duration, ServerEvent),
) -> Result<ServerReport, ShellError> {
    let server = Rc::new(RefCell::new(Server::new(config)));
    let service = DhcpServerService::new(Rc::clone(&server));
    if reply_delay.is_zero() {
        serve(interfaces, server, service, duration, on_event).await
    } else {
        let service = Delayed::new(service, reply_delay);
        serve(interfaces, server, service, duration, on_event).await
    }
}

async fn serve<S: host_contract::Service>(
    interfaces: &[String],
    server: Rc<RefCell<Server>>,
    mut service: S,
    duration: Duration,
    mut on_event: impl FnMut(Duration, ServerEvent),
) -> Result<ServerReport, ShellError> {
    let mut driver_config = DriverConfig::new(interfaces.to_vec());
    driver_config.ipv6 = false;
    let mut driver = Driver::new(driver_config)?;
    driver.start(&mut service).await;
    if driver.open_sockets() == 0 {
        return Err(no_socket(&mut driver, &interfaces.join(",")));
    }
    let stop = tokio::time::sleep(duration);
    driver
        .run_until(&mut service, stop, |driver| {
            let at = driver.elapsed();
            while let Some(event) = server.borrow_mut().poll_event() {
                on_event(at, event);
            }
            ControlFlow::Continue(())
        })
        .await;
    let server = server.borrow();
    Ok(ServerReport {
        counters: server.counters().clone(),
        leases: server.leases(),
    })
}
