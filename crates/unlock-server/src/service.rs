//! The provider as a [`Service`] of the host contract: the WDS server's UDP 67 and 547
//! listeners in front of [`Provider`], written once and run unchanged by both shells (the
//! simulator, and `realnet`'s driver on real interfaces).
//!
//! The [`Provider`] is shared (`Rc<RefCell<_>>`) with whoever built the service, so a scenario
//! reads its counters and log after the run, and `nulab server` reloads its certificates and
//! policy on SIGHUP; a crash or a stopped WDS service drops the listener (nothing answers),
//! while the certificate store and the policy file, which live on disk on a real server,
//! survive it.
//!
//! By default a request is answered the instant it arrives, decrypted inline. With a
//! [`Processor`], the private-key operation is handed off instead: the processor either sheds
//! the request (counted as `drop.overloaded`) or accepts it and says when its result is due.
//! The service owns no thread and reads no clock: the processors live outside the core, in
//! `crates/unlock-processor` (a pool of decrypt threads both shells use, the simulator's
//! modelled server CPU `ServerCpu`, and the real shell's wake-on-completion).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use host_contract::{Bytes, Datagram, HostStack, HostTime, Service};

use crate::provider::{Classified, DecryptJob, Decrypted, Outcome, Provider, Received, Transmit};

/// The DHCPv4 server port the provider listens on.
pub const DHCPV4_SERVER_PORT: u16 = 67;
/// The DHCPv6 server port the provider listens on.
pub const DHCPV6_SERVER_PORT: u16 = 547;

/// When an accepted private-key operation's result is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// At this time: the service sets a timer with the job's token and collects the result
    /// then (a modelled processor: the time comes from the model, never from the threads).
    At(Duration),
    /// When the operation ends: the processor's shell calls [`Service::on_timer`] with the
    /// job's token once the result is ready (the real shell's wake-on-completion).
    WhenDone,
}

/// Where the service's private-key operations run. Implementations live outside this sans-IO
/// core (`crates/unlock-processor`); the service only hands jobs over and collects results.
pub trait Processor {
    /// Take `job` (arrived at `now`, identified by `token`), or hand it back to be shed when
    /// there is no room for it.
    fn accept(
        &mut self,
        now: Duration,
        token: u64,
        job: Box<DecryptJob>,
    ) -> Result<Due, Box<DecryptJob>>;
    /// The result of the job accepted under `token`, called when it is due. `None` when there
    /// is none (the job was lost: a worker stopped); the service logs that.
    fn finish(&mut self, token: u64) -> Option<Decrypted>;
}

/// A request whose private-key operation is under way on the processor.
struct PendingReply {
    adapter: usize,
}

/// Token numbers the service hands its processor start here, far from any other timer token.
const FIRST_TOKEN: u64 = 1;

/// The WDS server's Network Unlock listener.
pub struct UnlockService {
    provider: Rc<RefCell<Provider>>,
    processor: Option<Box<dyn Processor>>,
    pending: BTreeMap<u64, PendingReply>,
    next_token: u64,
}

impl UnlockService {
    /// A listener that answers each request the instant it arrives.
    pub fn new(provider: Rc<RefCell<Provider>>) -> Self {
        Self {
            provider,
            processor: None,
            pending: BTreeMap::new(),
            next_token: FIRST_TOKEN,
        }
    }

    /// A listener whose private-key operations run on `processor`.
    pub fn with_processor(provider: Rc<RefCell<Provider>>, processor: Box<dyn Processor>) -> Self {
        Self {
            processor: Some(processor),
            ..Self::new(provider)
        }
    }

    /// Sends `transmit` from the address the request reached, on the same adapter.
    fn send_reply(
        &self,
        stack: &mut dyn HostStack,
        now: Duration,
        adapter_index: usize,
        transmit: Transmit,
    ) {
        let Some(adapter) = stack.adapters().get(adapter_index) else {
            return;
        };
        let source = match transmit.destination {
            SocketAddr::V4(_) => adapter
                .ipv4
                .map(|net| SocketAddr::new(IpAddr::V4(net.addr()), DHCPV4_SERVER_PORT)),
            SocketAddr::V6(_) => Some(SocketAddr::new(
                IpAddr::V6(adapter.ipv6_link_local),
                DHCPV6_SERVER_PORT,
            )),
        };
        let Some(source) = source else {
            self.provider.borrow_mut().note_error(
                now,
                format!(
                    "adapter {} has no IPv4 address to answer from",
                    adapter.name
                ),
            );
            return;
        };
        if let Err(err) = stack.send(
            adapter_index,
            source,
            transmit.destination,
            Bytes::from(transmit.payload),
        ) {
            self.provider
                .borrow_mut()
                .note_error(now, format!("cannot send the reply: {err}"));
        }
    }
}

impl Service for UnlockService {
    fn on_start(&mut self, stack: &mut dyn HostStack) {
        let now = stack.now().since_start();
        let mut provider = self.provider.borrow_mut();
        for port in [DHCPV4_SERVER_PORT, DHCPV6_SERVER_PORT] {
            if let Err(err) = stack.bind(port) {
                provider.note_error(now, format!("cannot listen on UDP {port}: {err}"));
            }
        }
        provider.note_info(
            now,
            format!("WDS service listening on {}", stack.host_name()),
        );
    }

    fn on_datagram(&mut self, stack: &mut dyn HostStack, datagram: Datagram) {
        let now = stack.now().since_start();
        let received = Received {
            source: datagram.src,
            payload: &datagram.payload,
        };
        let Some(processor) = self.processor.as_mut() else {
            let outcome = self.provider.borrow_mut().handle(now, received);
            if let Outcome::Replied { transmit, .. } = outcome {
                self.send_reply(stack, now, datagram.adapter, transmit);
            }
            return;
        };
        let job = match self.provider.borrow_mut().classify(now, received) {
            Classified::Dropped(_) => return,
            Classified::Decrypt(job) => job,
        };
        let token = self.next_token;
        match processor.accept(now, token, job) {
            Err(job) => {
                self.provider.borrow_mut().shed(now, &job);
            }
            Ok(due) => {
                self.next_token += 1;
                self.pending.insert(
                    token,
                    PendingReply {
                        adapter: datagram.adapter,
                    },
                );
                if let Due::At(at) = due {
                    stack.set_timer(HostTime::ZERO.saturating_add(at), token);
                }
            }
        }
    }

    fn on_timer(&mut self, stack: &mut dyn HostStack, token: u64) {
        let now = stack.now().since_start();
        let Some(pending) = self.pending.remove(&token) else {
            return;
        };
        let Some(done) = self.processor.as_mut().and_then(|p| p.finish(token)) else {
            self.provider
                .borrow_mut()
                .note_error(now, "a decryption worker stopped".into());
            return;
        };
        let outcome = self.provider.borrow_mut().complete(now, done);
        if let Outcome::Replied { transmit, .. } = outcome {
            self.send_reply(stack, now, pending.adapter, transmit);
        }
    }
}
