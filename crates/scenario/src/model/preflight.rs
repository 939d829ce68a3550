//! Checks a scenario makes sense before anything runs, so that a mistake that would only show
//! as a puzzling outcome is reported at its `FILE:LINE:COLUMN` instead: an address outside its
//! segment's subnet, two hosts with one address (a static one inside a DHCP pool counts: a
//! client could be leased it; a DHCP and a WDS server at one address are told the seed's rule
//! that they belong on separate servers, and how to model one machine anyway), a server counter nobody counts, a DHCP pool
//! smaller than the clients that need it, and a scenario that expects nothing (refused unless
//! it says `expect_nothing = true`: it would always pass).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use toml::Spanned;
use unlock_server::provider::{MALFORMED_COUNTER_PREFIX, counter_names};

use super::{Loaded, Scenario, ScenarioError};

/// Addresses per segment in the pool a DHCP server gets by default (`.100` to `.199`).
pub const DEFAULT_POOL_SIZE: u64 = 100;

/// Runs every check, in file order within each kind.
pub fn check(loaded: &Loaded) -> Result<(), ScenarioError> {
    addresses(loaded)?;
    counters(loaded)?;
    pools(loaded)?;
    expectations(loaded)
}

/// A segment's subnet, when it parses (a subnet that does not is reported when the world is
/// built, at its line).
fn subnet_of(s: &Scenario, segment: &str) -> Option<Ipv4Net> {
    s.segments
        .iter()
        .find(|seg| seg.name.get_ref() == segment)
        .and_then(|seg| seg.subnet.get_ref().parse::<Ipv4Net>().ok())
        .map(|net| net.trunc())
}

/// One host's address on one segment, where the file gives it.
struct Placed<'a> {
    host: String,
    segment: &'a Spanned<String>,
    address: &'a Spanned<String>,
}

/// Every static address of the scenario, in file order: routers, DHCP and WDS servers, and the
/// clients' static adapters (each machine of a storm gets the same one).
fn placed(s: &Scenario) -> Vec<Placed<'_>> {
    let mut all = Vec::new();
    for router in &s.routers {
        for interface in &router.interfaces {
            all.push(Placed {
                host: router.name.get_ref().clone(),
                segment: &interface.segment,
                address: &interface.address,
            });
        }
    }
    for server in &s.dhcp_servers {
        all.push(Placed {
            host: server.name.get_ref().clone(),
            segment: &server.segment,
            address: &server.address,
        });
    }
    for server in &s.wds {
        all.push(Placed {
            // On a DHCP server's machine (`same_server_as`), it is that host's address.
            host: server
                .same_server_as
                .as_ref()
                .unwrap_or(&server.name)
                .get_ref()
                .clone(),
            segment: &server.segment,
            address: &server.address,
        });
    }
    for client in &s.clients {
        for adapter in &client.adapters {
            if let Some(address) = &adapter.address {
                for instance in 1..=client.count.min(2) {
                    all.push(Placed {
                        host: if client.count == 1 {
                            client.name.get_ref().clone()
                        } else {
                            format!("{}-{instance:04}", client.name.get_ref())
                        },
                        segment: &adapter.segment,
                        address,
                    });
                }
            }
        }
    }
    all.sort_by_key(|p| p.address.span().start);
    all
}

/// `10.0.4.5/24` or `10.0.4.5`: the address (a prefix that does not parse is reported when the
/// world is built).
fn address_of(text: &str) -> Option<Ipv4Addr> {
    text.parse::<Ipv4Net>()
        .map(|net| net.addr())
        .or_else(|_| text.parse::<Ipv4Addr>())
        .ok()
}

fn addresses(loaded: &Loaded) -> Result<(), ScenarioError> {
    let s = &loaded.scenario;
    for server in &s.wds {
        if let Some(name) = &server.same_server_as
            && !s
                .dhcp_servers
                .iter()
                .any(|d| d.name.get_ref() == name.get_ref())
        {
            return Err(
                loaded.error_at(name.span(), format!("no DHCP server {:?}", name.get_ref()))
            );
        }
    }
    let pools = pool_ranges(s);
    let mut seen: Vec<(Ipv4Addr, String)> = Vec::new();
    for place in placed(s) {
        let Some(address) = address_of(place.address.get_ref()) else {
            continue;
        };
        if let Some(subnet) = subnet_of(s, place.segment.get_ref())
            && !subnet.contains(&address)
        {
            return Err(loaded.error_at(
                place.address.span(),
                format!(
                    "{address} ({}) is outside segment {}'s subnet {subnet}",
                    place.host,
                    place.segment.get_ref()
                ),
            ));
        }
        if let Some((_, other)) = seen
            .iter()
            .find(|(a, host)| *a == address && *host != place.host)
        {
            let dhcp_and_wds = |a: &str, b: &str| {
                s.dhcp_servers.iter().any(|d| d.name.get_ref() == a)
                    && s.wds.iter().any(|w| w.name.get_ref() == b)
            };
            let hint = if dhcp_and_wds(other, &place.host) || dhcp_and_wds(&place.host, other) {
                "; a DHCP server and a WDS server on one machine both need UDP 67, and the seed \
                 requires them on separate servers (to model that machine anyway, give the \
                 [[wds]] same_server_as = the DHCP server's name)"
            } else {
                ""
            };
            return Err(loaded.error_at(
                place.address.span(),
                format!(
                    "two hosts have the address {address}: {other} and {}{hint}",
                    place.host
                ),
            ));
        }
        if let Some((first, last, server)) = pools
            .iter()
            .find(|(first, last, _)| (*first..=*last).contains(&address))
        {
            return Err(loaded.error_at(
                place.address.span(),
                format!(
                    "{address} ({}) is inside DHCP server {server}'s pool {first}-{last}: a \
                     client could be leased it too",
                    place.host
                ),
            ));
        }
        seen.push((address, place.host));
    }
    Ok(())
}

/// Each DHCP server's pools as address ranges: its `[[dhcp_server.pool]]`s, or the default
/// pool on every segment (`.100` to `.199` of a /24 or wider).
fn pool_ranges(s: &Scenario) -> Vec<(Ipv4Addr, Ipv4Addr, String)> {
    let mut ranges = Vec::new();
    for server in &s.dhcp_servers {
        let name = server.name.get_ref();
        if server.pools.is_empty() {
            for segment in &s.segments {
                if let Some(subnet) = subnet_of(s, segment.name.get_ref())
                    && subnet.prefix_len() <= 24
                {
                    let base = u32::from(subnet.network());
                    ranges.push((
                        Ipv4Addr::from(base + 100),
                        Ipv4Addr::from(base + 199),
                        name.clone(),
                    ));
                }
            }
        }
        for pool in &server.pools {
            if let (Some(first), Some(last)) = (
                address_of(pool.first.get_ref()),
                address_of(pool.last.get_ref()),
            ) {
                ranges.push((first, last, name.clone()));
            }
        }
    }
    ranges
}

fn counters(loaded: &Loaded) -> Result<(), ScenarioError> {
    let known = counter_names();
    for expect in &loaded.scenario.server_expectations {
        for name in expect.counters.keys() {
            let text = name.get_ref();
            let malformed = text
                .strip_prefix(MALFORMED_COUNTER_PREFIX)
                .is_some_and(|reason| !reason.is_empty());
            if !known.contains(text) && !malformed {
                return Err(loaded.error_at(
                    name.span(),
                    format!(
                        "the server never counts {text:?}; it counts {}, and {MALFORMED_COUNTER_PREFIX}REASON",
                        known.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Each segment's DHCP clients (adapters configured for DHCP with a cable, every machine of a
/// storm) against the addresses the pools hold for it.
fn pools(loaded: &Loaded) -> Result<(), ScenarioError> {
    let s = &loaded.scenario;
    if s.dhcp_servers.is_empty() {
        return Ok(());
    }
    for segment in &s.segments {
        let Some(subnet) = subnet_of(s, segment.name.get_ref()) else {
            continue;
        };
        let mut demand: u64 = 0;
        let mut who = Vec::new();
        for client in &s.clients {
            let adapters = client
                .adapters
                .iter()
                .filter(|a| a.dhcp && a.link && a.segment.get_ref() == segment.name.get_ref())
                .count() as u64;
            if adapters > 0 {
                demand += adapters * u64::from(client.count);
                who.push(if client.count == 1 {
                    client.name.get_ref().clone()
                } else {
                    format!("{} ×{}", client.name.get_ref(), client.count)
                });
            }
        }
        if demand == 0 {
            continue;
        }
        let mut supply: u64 = 0;
        let mut at = None;
        for server in &s.dhcp_servers {
            if server.pools.is_empty() {
                if subnet.prefix_len() <= 24 {
                    supply += DEFAULT_POOL_SIZE;
                }
                at.get_or_insert(server.name.span());
                continue;
            }
            for pool in &server.pools {
                let Ok(pool_net) = pool.subnet.get_ref().parse::<Ipv4Net>() else {
                    continue;
                };
                if pool_net.trunc() != subnet {
                    continue;
                }
                let (Some(first), Some(last)) = (
                    address_of(pool.first.get_ref()),
                    address_of(pool.last.get_ref()),
                ) else {
                    continue;
                };
                supply += u64::from(u32::from(last).saturating_sub(u32::from(first))) + 1;
                at = Some(pool.subnet.span());
            }
        }
        if demand > supply {
            let span = at.unwrap_or_else(|| segment.name.span());
            return Err(loaded.error_at(
                span,
                format!(
                    "the DHCP pools hold {supply} address(es) for segment {} ({subnet}), but {demand} \
                     client adapter(s) there need one ({}): give it a [[dhcp_server.pool]] with \
                     room for them",
                    segment.name.get_ref(),
                    who.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn expectations(loaded: &Loaded) -> Result<(), ScenarioError> {
    let s = &loaded.scenario;
    let expects_something = !s.expectations.is_empty()
        || !s.server_expectations.is_empty()
        || !s.packet_expectations.is_empty()
        || !s.escrow_expectations.is_empty()
        || s.expect_database.is_some();
    if !expects_something && !s.expect_nothing {
        return Err(loaded.error_at(
            0..0,
            "the scenario expects nothing, so it would always pass: add an [[expect]], \
             [[expect_server]], [[expect_packets]], [[expect_escrow]] or [expect_database], or \
             say `expect_nothing = true`",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Result<Loaded, ScenarioError> {
        crate::model::parse(Path::new("p.toml"), text.to_string())
    }

    const NET: &str = "title = \"t\"\nexpect_nothing = true\n\
        [[segment]]\nname = \"corp\"\nsubnet = \"10.0.4.0/24\"\n";

    fn wds(name: &str, address: &str) -> String {
        format!("[[wds]]\nname = \"{name}\"\nsegment = \"corp\"\naddress = \"{address}\"\n")
    }

    #[test]
    fn an_address_outside_its_segment_is_refused_where_it_is() {
        let err = parse(&format!("{NET}{}", wds("wds", "10.0.5.10/24"))).expect_err("outside");
        assert_eq!((err.line, err.column), (9, 11), "{err}");
        assert!(
            err.message
                .contains("outside segment corp's subnet 10.0.4.0/24"),
            "{err}"
        );
        let err = parse(&format!(
            "{NET}[[client]]\nname = \"pc\"\n[[client.adapter]]\nsegment = \"corp\"\n\
             dhcp = false\naddress = \"192.168.1.5/24\"\n"
        ))
        .expect_err("a client's static address");
        assert_eq!(err.line, 11, "{err}");
        parse(&format!("{NET}{}", wds("wds", "10.0.4.10/24"))).expect("inside");
    }

    #[test]
    fn two_hosts_with_one_address_are_refused_at_the_second() {
        let err = parse(&format!(
            "{NET}{}{}",
            wds("wds1", "10.0.4.10/24"),
            wds("wds2", "10.0.4.10/24")
        ))
        .expect_err("duplicate");
        assert_eq!(err.line, 13, "{err}");
        assert!(
            err.message
                .contains("two hosts have the address 10.0.4.10: wds1 and wds2"),
            "{err}"
        );
        let err = parse(&format!(
            "{NET}[[client]]\nname = \"pc\"\ncount = 3\n[[client.adapter]]\nsegment = \"corp\"\n\
             dhcp = false\naddress = \"10.0.4.50/24\"\n"
        ))
        .expect_err("a storm of one static address");
        assert!(err.message.contains("pc-0001 and pc-0002"), "{err}");
        let err = parse(&format!(
            "{NET}[[dhcp_server]]\nname = \"dhcp\"\nsegment = \"corp\"\naddress = \"10.0.4.2/24\"\n{}",
            wds("wds", "10.0.4.150/24")
        ))
        .expect_err("inside the default pool");
        assert_eq!(err.line, 13, "{err}");
        assert!(
            err.message
                .contains("inside DHCP server dhcp's pool 10.0.4.100-10.0.4.199"),
            "{err}"
        );
    }

    #[test]
    fn dhcp_and_wds_at_one_address_are_refused_with_the_seeds_rule() {
        let text = "title = \"t\"\nexpect_nothing = true\n[[segment]]\nname = \"corp\"\n\
                    subnet = \"10.0.4.0/24\"\n[[dhcp_server]]\nname = \"dhcp\"\n\
                    segment = \"corp\"\naddress = \"10.0.4.2/24\"\n[[wds]]\nname = \"wds\"\n\
                    segment = \"corp\"\naddress = \"10.0.4.2/24\"\n";
        let err = parse(text).expect_err("one address");
        assert!(err.message.contains("UDP 67"), "{err}");
        assert!(err.message.contains("same_server_as"), "{err}");
        assert_eq!(err.line, 13, "{err}");
        parse(&text.replace(
            "[[wds]]\nname = \"wds\"\n",
            "[[wds]]\nname = \"wds\"\nsame_server_as = \"dhcp\"\n",
        ))
        .expect("said so");
    }

    #[test]
    fn a_counter_the_server_never_counts_is_refused_at_its_name() {
        let base = format!(
            "{}{}",
            NET.replace("expect_nothing = true\n", ""),
            wds("wds", "10.0.4.10/24")
        );
        let err = parse(&format!(
            "{base}[[expect_server]]\nwds = \"wds\"\ncounters = {{ replied = 1, \"drop.subnet-deny\" = 2 }}\n"
        ))
        .expect_err("misspelt");
        assert_eq!((err.line, err.column), (11, 27), "{err}");
        assert!(err.message.contains("\"drop.subnet-deny\""), "{err}");
        assert!(err.message.contains("drop.subnet-denied"), "{err}");
        parse(&format!(
            "{base}[[expect_server]]\nwds = \"wds\"\n\
             counters = {{ replied = 1, \"drop.subnet-denied\" = 2, \"drop.malformed.missing-end\" = 0 }}\n"
        ))
        .expect("every name counted");
    }

    #[test]
    fn every_counter_name_is_one_the_provider_counts() {
        let names = counter_names();
        assert!(names.contains(&"replied".to_string()), "{names:?}");
        assert!(names.contains(&"drop.overloaded".to_string()), "{names:?}");
        assert!(
            names.iter().skip(1).all(|n| n.starts_with("drop.")),
            "{names:?}"
        );
    }

    #[test]
    fn a_pool_smaller_than_its_clients_is_refused() {
        let server =
            "[[dhcp_server]]\nname = \"dhcp\"\nsegment = \"corp\"\naddress = \"10.0.4.2/24\"\n";
        let storm = |count: u32| {
            format!(
                "[[client]]\nname = \"pc\"\ncount = {count}\n[[client.adapter]]\nsegment = \"corp\"\n"
            )
        };
        let err = parse(&format!("{NET}{server}{}", storm(101))).expect_err("the default pool");
        assert!(err.message.contains("hold 100 address(es)"), "{err}");
        assert!(err.message.contains("101 client adapter(s)"), "{err}");
        assert_eq!(err.line, 7, "{err}");
        parse(&format!("{NET}{server}{}", storm(100))).expect("fits");
        let err = parse(&format!(
            "{NET}{server}[[dhcp_server.pool]]\nsubnet = \"10.0.4.0/24\"\nfirst = \"10.0.4.10\"\n\
             last = \"10.0.4.19\"\n{}",
            storm(11)
        ))
        .expect_err("an explicit pool");
        assert!(err.message.contains("hold 10 address(es)"), "{err}");
        assert_eq!(err.line, 11, "{err}");
    }
}
