//! `nulab-dhcp-server`: nulab's DHCPv4 server on real interfaces for a while, one line per
//! lease event on stdout, then the leases it holds.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use dhcp::{Pool, ServerConfig};
use ipnet::Ipv4Net;

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

fn main() -> ExitCode {
    let args = Args::parse();
    let mut pools = Vec::new();
    for &(first, last) in &args.ranges {
        let Some(&(_, net)) = args.interfaces.iter().find(|(_, net)| net.contains(&first)) else {
            eprintln!("nulab-dhcp-server: no interface's subnet holds {first}");
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
            eprintln!("nulab-dhcp-server: {}", realnet::ShellError::Runtime(err));
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", names.join(","));
    let _ = std::io::stdout().flush();
    let run = realnet::run_server(&names, config, args.run_for, |at, event| {
        println!("{:.3}s {event:?}", at.as_secs_f64());
        let _ = std::io::stdout().flush();
    });
    match runtime.block_on(run) {
        Ok(report) => {
            for lease in report.leases {
                println!("lease {} {}", lease.addr, lease.client);
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("nulab-dhcp-server: {err}");
            ExitCode::FAILURE
        }
    }
}
