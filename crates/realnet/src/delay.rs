//! A service whose every datagram leaves late: [`Delayed`] wraps any `Service` and holds each
//! datagram it sends for a fixed delay before handing it to the host stack, in the order sent.
//! It is the real shell's form of the simulator's latency on everything one host sends (a
//! scenario's `[[fault]] dhcp_server = "..."`, `delay = "5s"`: an overloaded DHCP server
//! answering late), for kernels without netem (`nulab-dhcp-server --reply-delay`).
//!
//! The held datagrams wait on a timer of their own: the token [`DELAY_TOKEN`], which the
//! wrapped service never sees; its own timers and every other call pass straight through.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use host_contract::{
    AdapterIndex, AdapterInfo, Bytes, Datagram, HostStack, HostTime, Service, StackError,
};
use ipnet::Ipv4Net;
use rand_core::CryptoRngCore;

/// The timer token of the held datagrams (the wrapped service's own tokens are passed on).
pub const DELAY_TOKEN: u64 = u64::MAX - 0x5e_4d;

/// A datagram held until `at`.
struct Held {
    at: HostTime,
    adapter: AdapterIndex,
    src: SocketAddr,
    dst: SocketAddr,
    payload: Bytes,
}

/// `inner`, each datagram it sends leaving `delay` later.
pub struct Delayed<S> {
    inner: S,
    delay: Duration,
    held: VecDeque<Held>,
}

impl<S: Service> Delayed<S> {
    pub fn new(inner: S, delay: Duration) -> Self {
        Self {
            inner,
            delay,
            held: VecDeque::new(),
        }
    }

    /// Sends every held datagram whose time has come (a refused send is lost, as any
    /// datagram may be).
    fn release(&mut self, stack: &mut dyn HostStack) {
        let now = stack.now();
        while self.held.front().is_some_and(|h| h.at <= now) {
            if let Some(h) = self.held.pop_front() {
                let _ = stack.send(h.adapter, h.src, h.dst, h.payload);
            }
        }
    }
}

/// The stack the wrapped service sees: sends are held, everything else is the host's.
struct Holding<'a> {
    stack: &'a mut dyn HostStack,
    delay: Duration,
    held: &'a mut VecDeque<Held>,
}

impl HostStack for Holding<'_> {
    fn now(&self) -> HostTime {
        self.stack.now()
    }
    fn host_name(&self) -> &str {
        self.stack.host_name()
    }
    fn adapters(&self) -> &[AdapterInfo] {
        self.stack.adapters()
    }
    fn bind(&mut self, port: u16) -> Result<(), StackError> {
        self.stack.bind(port)
    }
    fn unbind(&mut self, port: u16) {
        self.stack.unbind(port);
    }
    fn send(
        &mut self,
        adapter: AdapterIndex,
        src: SocketAddr,
        dst: SocketAddr,
        payload: Bytes,
    ) -> Result<(), StackError> {
        host_contract::check_send(
            self.stack.adapters().len(),
            adapter,
            src,
            dst,
            payload.len(),
        )?;
        let at = self.stack.now() + self.delay;
        self.held.push_back(Held {
            at,
            adapter,
            src,
            dst,
            payload,
        });
        self.stack.set_timer(at, DELAY_TOKEN);
        Ok(())
    }
    fn set_timer(&mut self, at: HostTime, token: u64) {
        self.stack.set_timer(at, token);
    }
    fn set_ipv4(&mut self, adapter: AdapterIndex, addr: Option<Ipv4Net>) -> Result<(), StackError> {
        self.stack.set_ipv4(adapter, addr)
    }
    fn rng(&mut self) -> &mut dyn CryptoRngCore {
        self.stack.rng()
    }
}

impl<S: Service> Service for Delayed<S> {
    fn on_start(&mut self, stack: &mut dyn HostStack) {
        let mut holding = Holding {
            stack,
            delay: self.delay,
            held: &mut self.held,
        };
        self.inner.on_start(&mut holding);
    }

    fn on_datagram(&mut self, stack: &mut dyn HostStack, datagram: Datagram) {
        let mut holding = Holding {
            stack,
            delay: self.delay,
            held: &mut self.held,
        };
        self.inner.on_datagram(&mut holding, datagram);
    }

    fn on_timer(&mut self, stack: &mut dyn HostStack, token: u64) {
        if token == DELAY_TOKEN {
            self.release(stack);
            return;
        }
        let mut holding = Holding {
            stack,
            delay: self.delay,
            held: &mut self.held,
        };
        self.inner.on_timer(&mut holding, token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn eth0() -> AdapterInfo {
        AdapterInfo {
            name: "eth0".into(),
            mac: host_contract::MacAddr([2, 0, 0, 0, 0, 1]),
            ipv4: None,
            ipv6_link_local: std::net::Ipv6Addr::UNSPECIFIED,
            link_up: true,
            dhcp_enabled: true,
            uefi_driver: true,
        }
    }

    /// A stack that records sends and timers, its clock set by the test.
    struct Recorder {
        now: HostTime,
        adapters: Vec<AdapterInfo>,
        sent: Vec<(HostTime, Bytes)>,
        timers: Vec<(HostTime, u64)>,
        rng: ChaCha20Rng,
    }

    impl HostStack for Recorder {
        fn now(&self) -> HostTime {
            self.now
        }
        fn host_name(&self) -> &str {
            "dhcp"
        }
        fn adapters(&self) -> &[AdapterInfo] {
            &self.adapters
        }
        fn bind(&mut self, _: u16) -> Result<(), StackError> {
            Ok(())
        }
        fn unbind(&mut self, _: u16) {}
        fn send(
            &mut self,
            _: AdapterIndex,
            _: SocketAddr,
            _: SocketAddr,
            payload: Bytes,
        ) -> Result<(), StackError> {
            self.sent.push((self.now, payload));
            Ok(())
        }
        fn set_timer(&mut self, at: HostTime, token: u64) {
            self.timers.push((at, token));
        }
        fn set_ipv4(&mut self, _: AdapterIndex, _: Option<Ipv4Net>) -> Result<(), StackError> {
            Ok(())
        }
        fn rng(&mut self) -> &mut dyn CryptoRngCore {
            &mut self.rng
        }
    }

    /// Echoes each datagram at once and sets a timer of its own (token 7) that sends "tick".
    struct Echo;

    impl Service for Echo {
        fn on_start(&mut self, stack: &mut dyn HostStack) {
            stack.set_timer(HostTime::from_secs(1), 7);
        }
        fn on_datagram(&mut self, stack: &mut dyn HostStack, d: Datagram) {
            let _ = stack.send(0, d.dst, d.src, d.payload);
        }
        fn on_timer(&mut self, stack: &mut dyn HostStack, token: u64) {
            assert_eq!(token, 7, "the wrapper's own token reached the service");
            let to: SocketAddr = "10.0.4.100:68".parse().expect("addr");
            let from: SocketAddr = "10.0.4.2:67".parse().expect("addr");
            let _ = stack.send(0, from, to, Bytes::from_static(b"tick"));
        }
    }

    fn datagram(payload: &'static [u8]) -> Datagram {
        Datagram {
            adapter: 0,
            src: "0.0.0.0:68".parse().expect("addr"),
            dst: "255.255.255.255:67".parse().expect("addr"),
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn every_datagram_leaves_the_delay_later_in_order() {
        let mut stack = Recorder {
            now: HostTime::ZERO,
            adapters: vec![eth0()],
            sent: Vec::new(),
            timers: Vec::new(),
            rng: ChaCha20Rng::seed_from_u64(1),
        };
        let mut service = Delayed::new(Echo, Duration::from_secs(5));
        service.on_start(&mut stack);
        assert_eq!(stack.timers, [(HostTime::from_secs(1), 7)]);
        service.on_datagram(&mut stack, datagram(b"one"));
        stack.now = HostTime::from_millis(500);
        service.on_datagram(&mut stack, datagram(b"two"));
        stack.now = HostTime::from_secs(1);
        service.on_timer(&mut stack, 7);
        assert!(stack.sent.is_empty(), "sent before its time");
        assert_eq!(
            stack.timers[1..],
            [
                (HostTime::from_secs(5), DELAY_TOKEN),
                (HostTime::from_millis(5500), DELAY_TOKEN),
                (HostTime::from_secs(6), DELAY_TOKEN),
            ]
        );
        stack.now = HostTime::from_secs(5);
        service.on_timer(&mut stack, DELAY_TOKEN);
        stack.now = HostTime::from_secs(6);
        service.on_timer(&mut stack, DELAY_TOKEN);
        service.on_timer(&mut stack, DELAY_TOKEN);
        let sent: Vec<(HostTime, &[u8])> = stack.sent.iter().map(|(t, p)| (*t, &p[..])).collect();
        assert_eq!(
            sent,
            [
                (HostTime::from_secs(5), &b"one"[..]),
                (HostTime::from_secs(6), &b"two"[..]),
                (HostTime::from_secs(6), &b"tick"[..]),
            ]
        );
    }

    #[test]
    fn a_send_the_stack_would_refuse_is_refused_at_once() {
        let mut stack = Recorder {
            now: HostTime::ZERO,
            adapters: vec![eth0()],
            sent: Vec::new(),
            timers: Vec::new(),
            rng: ChaCha20Rng::seed_from_u64(1),
        };
        let mut held = VecDeque::new();
        let mut holding = Holding {
            stack: &mut stack,
            delay: Duration::from_secs(5),
            held: &mut held,
        };
        let v4: SocketAddr = "10.0.4.2:67".parse().expect("addr");
        assert_eq!(
            holding.send(3, v4, v4, Bytes::new()),
            Err(StackError::NoSuchAdapter(3))
        );
        assert!(held.is_empty());
    }
}
