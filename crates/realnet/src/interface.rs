//! One UDP socket per interface, bound to the device, and what the firmware would know about
//! the interface (its MAC, whether the link is up), read from `/sys/class/net`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::ShellError;

/// A UDP socket that sends and receives on one interface only.
pub struct InterfaceSocket {
    pub name: String,
    pub socket: UdpSocket,
}

impl InterfaceSocket {
    /// `0.0.0.0:port` on `interface`, with `SO_BINDTODEVICE`, `SO_BROADCAST` and
    /// `SO_REUSEADDR` (a server and a client, or two servers, may share a port across
    /// interfaces). Must be called inside a tokio runtime.
    pub fn open(interface: &str, port: u16) -> Result<InterfaceSocket, ShellError> {
        let fail = |what| {
            move |source| ShellError::Interface {
                interface: interface.to_owned(),
                what,
                source,
            }
        };
        let socket =
            Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(fail("socket"))?;
        socket
            .bind_device(Some(interface.as_bytes()))
            .map_err(fail("SO_BINDTODEVICE (needs root or CAP_NET_RAW)"))?;
        socket.set_broadcast(true).map_err(fail("SO_BROADCAST"))?;
        socket
            .set_reuse_address(true)
            .map_err(fail("SO_REUSEADDR"))?;
        socket.set_nonblocking(true).map_err(fail("O_NONBLOCK"))?;
        let local = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
        socket
            .bind(&local.into())
            .map_err(|source| ShellError::Bind {
                interface: interface.to_owned(),
                address: local,
                source,
            })?;
        let socket = UdpSocket::from_std(socket.into()).map_err(fail("register with tokio"))?;
        Ok(InterfaceSocket {
            name: interface.to_owned(),
            socket,
        })
    }

    /// `[::]:port` on `interface`, IPv6 only, with `SO_BINDTODEVICE` and `SO_REUSEADDR`, and
    /// joined to `group` on the interface of index `ifindex` when given (a DHCPv6 server joins
    /// ff02::1:2; a client does not). Must be called inside a tokio runtime.
    pub fn open_v6(
        interface: &str,
        port: u16,
        group: Option<(Ipv6Addr, u32)>,
    ) -> Result<InterfaceSocket, ShellError> {
        let fail = |what| {
            move |source| ShellError::Interface {
                interface: interface.to_owned(),
                what,
                source,
            }
        };
        let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))
            .map_err(fail("IPv6 socket"))?;
        socket.set_only_v6(true).map_err(fail("IPV6_V6ONLY"))?;
        socket
            .bind_device(Some(interface.as_bytes()))
            .map_err(fail("SO_BINDTODEVICE (needs root or CAP_NET_RAW)"))?;
        socket
            .set_reuse_address(true)
            .map_err(fail("SO_REUSEADDR"))?;
        socket.set_nonblocking(true).map_err(fail("O_NONBLOCK"))?;
        let local = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0));
        socket
            .bind(&local.into())
            .map_err(|source| ShellError::Bind {
                interface: interface.to_owned(),
                address: local,
                source,
            })?;
        if let Some((group, ifindex)) = group {
            socket
                .join_multicast_v6(&group, ifindex)
                .map_err(fail("join the multicast group"))?;
        }
        let socket = UdpSocket::from_std(socket.into()).map_err(fail("register with tokio"))?;
        Ok(InterfaceSocket {
            name: interface.to_owned(),
            socket,
        })
    }
}

/// The MAC and link state of `interface`, as the firmware's driver would report them. Every
/// interface handed to the shell is taken to be configured for DHCP and to have a driver.
pub fn adapter_facts(interface: &str) -> Result<dhcp::AdapterFacts, ShellError> {
    let read = |file: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{interface}/{file}")).map_err(|source| {
            ShellError::Interface {
                interface: interface.to_owned(),
                what: "read /sys/class/net",
                source,
            }
        })
    };
    let mac = parse_mac(read("address")?.trim()).ok_or_else(|| ShellError::Interface {
        interface: interface.to_owned(),
        what: "not an Ethernet interface",
        source: std::io::Error::from(std::io::ErrorKind::InvalidData),
    })?;
    // "unknown" is what veth and tun devices without carrier reporting say when up.
    let operstate = read("operstate")?;
    let link_up = matches!(operstate.trim(), "up" | "unknown");
    Ok(dhcp::AdapterFacts {
        mac,
        link_up,
        dhcp_enabled: true,
        uefi_driver: true,
    })
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// A link-scope IPv6 destination (link-local, or multicast such as ff02::1:2) needs the
/// interface as its scope; other destinations go as they are.
pub(crate) fn scoped(destination: SocketAddr, ifindex: u32) -> SocketAddr {
    match destination {
        SocketAddr::V6(v6) if v6.scope_id() == 0 && is_link_scope(v6.ip()) => SocketAddr::V6(
            SocketAddrV6::new(*v6.ip(), v6.port(), v6.flowinfo(), ifindex),
        ),
        other => other,
    }
}

fn is_link_scope(ip: &Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xffc0) == 0xfe80 || ip.is_multicast()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_scope_destinations_get_the_interface_scope() {
        let ll: SocketAddr = "[fe80::1]:546".parse().expect("address");
        let SocketAddr::V6(v6) = scoped(ll, 7) else {
            panic!("v6 stays v6")
        };
        assert_eq!(v6.scope_id(), 7);
        let group: SocketAddr = "[ff02::1:2]:547".parse().expect("address");
        let SocketAddr::V6(v6) = scoped(group, 4) else {
            panic!("v6 stays v6")
        };
        assert_eq!(v6.scope_id(), 4);
        let global: SocketAddr = "[2001:db8::1]:546".parse().expect("address");
        assert_eq!(scoped(global, 7), global);
        let v4: SocketAddr = "255.255.255.255:68".parse().expect("address");
        assert_eq!(scoped(v4, 7), v4);
    }

    #[test]
    fn parses_sysfs_mac_addresses() {
        assert_eq!(
            parse_mac("02:aa:00:0b:cd:ef"),
            Some([0x02, 0xaa, 0, 0x0b, 0xcd, 0xef])
        );
        assert_eq!(parse_mac("02:aa:00:0b:cd"), None);
        assert_eq!(parse_mac("02:aa:00:0b:cd:ef:01"), None);
        assert_eq!(parse_mac("zz:aa:00:0b:cd:ef"), None);
    }

    #[test]
    fn loopback_facts_are_read_from_sysfs() {
        // Every Linux machine has `lo`, whose MAC is all zeros.
        let facts = adapter_facts("lo").expect("lo exists");
        assert_eq!(facts.mac, [0; 6]);
        assert!(adapter_facts("no-such-if0").is_err());
    }
}
