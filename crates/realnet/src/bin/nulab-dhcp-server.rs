//! `nulab-dhcp-server`: nulab's DHCPv4 server on real interfaces for a while, one line per
//! lease event on stdout for people (`   0.132s leased 192.168.77.100 to 01:52:54:… on eth0
//! for 3600 s`), then the leases it holds. Output goes through `realnet::output`: cut off by a
//! closed pipe, the server stops quietly with status 141; any other write error is one line
//! and status 1.

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use dhcp::{Pool, ServerConfig, ServerEvent};
use ipnet::Ipv4Net;
use realnet::output::{self, OutputError};

const PROGRAM: &str = "nulab-dhcp-server";

#[derive(Parser)]
#[command(about = "Serve DHCPv4 leases on real interfaces with nulab's server core")]
struct Args {
    /// The interface to serve on, and the server's address on it (`eth0=192.168.77.1/24`).
    /// Repeat for several interfaces.
    #[arg(long = "interface", value_parser = parse_interface, required = true)]
    interfaces: Vec<(String, Ipv4Net)>,
    /// A pool `FIRST-LAST`; its subnet is that of the interface whose subnet holds FIRST.
    /// Repeat for several pools.
    #[arg(long = "range", value_parser = parse_range, required_unless_present = "pools")]
    ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// A pool on any subnet, for clients behind a relay (giaddr):
    /// `SUBNET,FIRST,LAST[,ROUTER]`, e.g. `10.0.9.0/24,10.0.9.100,10.0.9.199,10.0.9.1`.
    /// Repeat for several pools.
    #[arg(long = "pool", value_parser = parse_pool)]
    pools: Vec<Pool>,
    /// Option 3 for every pool.
    #[arg(long)]
    router: Option<Ipv4Addr>,
    /// Option 6 for every pool (repeatable).
    #[arg(long)]
    dns: Vec<Ipv4Addr>,
    /// The lease time offered (`1h`, `900s`).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    lease: Duration,
    /// Stop after this long (`60s`, `1h`).
    #[arg(long = "for", default_value = "60s", value_parser = humantime::parse_duration)]
    run_for: Duration,
    /// Send every reply this late (`5s`): an overloaded server, as a scenario's
    /// `[[fault]] dhcp_server = "..."` with `delay` (lease events are printed when decided).
    #[arg(long = "reply-delay", default_value = "0s", value_parser = humantime::parse_duration)]
    reply_delay: Duration,
}

fn parse_interface(text: &str) -> Result<(String, Ipv4Net), String> {
    let (name, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected NAME=ADDRESS/PREFIX"))?;
    let addr = addr.parse().map_err(|err| format!("`{addr}`: {err}"))?;
    Ok((name.to_owned(), addr))
}

fn parse_range(text: &str) -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let (first, last) = text
        .split_once('-')
        .ok_or_else(|| format!("`{text}`: expected FIRST-LAST"))?;
    let first: Ipv4Addr = first.parse().map_err(|err| format!("`{first}`: {err}"))?;
    let last: Ipv4Addr = last.parse().map_err(|err| format!("`{last}`: {err}"))?;
    if first > last {
        return Err(format!("`{text}`: FIRST is after LAST"));
    }
    Ok((first, last))
}

fn parse_pool(text: &str) -> Result<Pool, String> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let (subnet, first, last, router) = match parts.as_slice() {
        [subnet, first, last] => (subnet, first, last, None),
        [subnet, first, last, router] => (subnet, first, last, Some(router)),
        _ => return Err(format!("`{text}`: expected SUBNET,FIRST,LAST[,ROUTER]")),
    };
    let subnet: Ipv4Net = subnet.parse().map_err(|err| format!("`{subnet}`: {err}"))?;
    let first: Ipv4Addr = first.parse().map_err(|err| format!("`{first}`: {err}"))?;
    let last: Ipv4Addr = last.parse().map_err(|err| format!("`{last}`: {err}"))?;
    if first > last || !subnet.contains(&first) || !subnet.contains(&last) {
        return Err(format!(
            "`{text}`: FIRST..LAST must lie in SUBNET, in order"
        ));
    }
    let mut pool = Pool::new(subnet.trunc(), first, last);
    if let Some(router) = router {
        pool.router = Some(router.parse().map_err(|err| format!("`{router}`: {err}"))?);
    }
    Ok(pool)
}

/// A lease event as a sentence, naming the interface by its name. `at` is when it happened.
fn describe(event: &ServerEvent, at: Duration, interfaces: &[String]) -> String {
    let interface = |i: usize| {
        interfaces
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("interface {i}"))
    };
    match event {
        ServerEvent::Offered { client, addr } => format!("offered {addr} to {client}"),
        ServerEvent::Leased {
            client,
            addr,
            expires,
        } => format!(
            "leased {addr} to {client} for {} s",
            // `expires` counts from the request; `at` is a moment later.
            expires.saturating_sub(at).as_secs_f64().round()
        ),
        ServerEvent::Nak { client, requested } => match requested {
            Some(addr) => format!("refused {addr} to {client} (DHCPNAK)"),
            None => format!("refused the request of {client} (DHCPNAK)"),
        },
        ServerEvent::Released { client, addr } => format!("{client} released {addr}"),
        ServerEvent::Declined { client, addr } => {
            format!("{client} declined {addr} (in use on the network); it is held back")
        }
        ServerEvent::Expired { client, addr } => {
            format!("the lease of {addr} to {client} expired; the address is free again")
        }
        ServerEvent::NetworkUnlockIgnored { interface: i } => format!(
            "a Network Unlock request on {} is left to the WDS server",
            interface(*i)
        ),
        ServerEvent::Dropped { reason } => {
            format!("dropped a datagram: {}", reason.label())
        }
        // The enum is non-exhaustive: a new kind of event is still one line, not a dump.
        _ => "a lease event this version cannot describe".to_owned(),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut pools = Vec::new();
    for &(first, last) in &args.ranges {
        let Some(&(_, net)) = args.interfaces.iter().find(|(_, net)| net.contains(&first)) else {
            output::write_err(format_args!(
                "{PROGRAM}: error: no interface's subnet holds {first}"
            ));
            return ExitCode::FAILURE;
        };
        let mut pool = Pool::new(net.trunc(), first, last)
            .dns(args.dns.clone())
            .lease_time(args.lease);
        pool.router = args.router;
        pools.push(pool);
    }
    for pool in &args.pools {
        let mut pool = pool.clone().lease_time(args.lease);
        pool.dns = args.dns.clone();
        pools.push(pool);
    }
    let names: Vec<String> = args.interfaces.iter().map(|(n, _)| n.clone()).collect();
    let config = ServerConfig::new(args.interfaces.iter().map(|(_, a)| *a).collect(), pools);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            output::write_err(format_args!(
                "{PROGRAM}: error: {}",
                realnet::ShellError::Runtime(err)
            ));
            return ExitCode::FAILURE;
        }
    };
    if let Err(err) = output::write_line(format_args!("listening on {}", names.join(","))) {
        return err.exit_code(PROGRAM);
    }
    // The first failed write stops the server: nobody reads its log any more.
    let failed: std::cell::RefCell<Option<OutputError>> = std::cell::RefCell::new(None);
    let run = async {
        let serve = realnet::run_server_late(
            &names,
            config,
            args.run_for,
            args.reply_delay,
            |at, event| {
                if failed.borrow().is_some() {
                    return;
                }
                let line = describe(&event, at, &names);
                if let Err(err) =
                    output::write_line(format_args!("{:>8.3}s {line}", at.as_secs_f64()))
                {
                    *failed.borrow_mut() = Some(err);
                }
            },
        );
        tokio::pin!(serve);
        // Poll the server, and stop as soon as a write has failed.
        loop {
            tokio::select! {
                result = &mut serve => return Some(result),
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    if failed.borrow().is_some() {
                        return None;
                    }
                }
            }
        }
    };
    let result = runtime.block_on(run);
    if let Some(err) = failed.into_inner() {
        return err.exit_code(PROGRAM);
    }
    match result {
        Some(Ok(report)) => {
            for lease in report.leases {
                if let Err(err) =
                    output::write_line(format_args!("lease {} {}", lease.addr, lease.client))
                {
                    return err.exit_code(PROGRAM);
                }
            }
            ExitCode::SUCCESS
        }
        Some(Err(err)) => {
            output::write_err(format_args!("{PROGRAM}: error: {err}"));
            ExitCode::FAILURE
        }
        None => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_events_read_as_sentences() {
        // (events naming a client are checked end to end in tests/namespaces.rs: a ClientKey
        // comes only from a real request)
        let names = vec!["eth0".to_owned()];
        let at = Duration::from_secs(10);
        let dropped = describe(
            &ServerEvent::Dropped {
                reason: dhcp::DropReason::NoPool,
            },
            at,
            &names,
        );
        assert_eq!(
            dropped,
            format!("dropped a datagram: {}", dhcp::DropReason::NoPool.label())
        );
        let ignored = describe(
            &ServerEvent::NetworkUnlockIgnored { interface: 0 },
            at,
            &names,
        );
        assert!(ignored.contains("on eth0"), "{ignored}");
    }
}
