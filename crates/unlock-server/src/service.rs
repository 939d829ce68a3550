//! The provider as a [`netsim::Service`]: the WDS server's UDP 67 and 547 listeners in front of
//! [`Provider`]. The same service runs in the simulator and, through the real-socket shell that
//! offers the same [`HostStack`], on a real network.
//!
//! The [`Provider`] is shared (`Rc<RefCell<_>>`) with whoever built the service, so a scenario
//! reads its counters and log after the run; a crash or a stopped WDS service drops the
//! listener (nothing answers), while the certificate store and the policy file, which live on
//! disk on a real server, survive it.
//!
//! By default a request is answered the instant it arrives. With a [`ServerCpu`], the service
//! models the server's processor instead: each private-key operation occupies one of its cores
//! for `decrypt_time` of simulated time, requests wait for a free core (and, with a bounded
//! queue, are shed and counted when it is full, as the real-network shell does), and the reply
//! leaves when the operation ends. The operation itself runs on a [`DecryptPool`] thread as soon
//! as the request arrives, so while the simulator goes on with other hosts' events the machine's
//! cores work through a storm's RSA in parallel. Nothing of the wall clock reaches the run: the
//! reply's time comes from the model, the reply's bytes from the job, so a run with the pool is
//! byte-identical to one without.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use netsim::{Bytes, Datagram, HostStack, Service, SimTime};

use crate::provider::{Classified, DecryptJob, Decrypted, Outcome, Provider, Received, Transmit};

/// The DHCPv4 server port the provider listens on.
pub const DHCPV4_SERVER_PORT: u16 = 67;
/// The DHCPv6 server port the provider listens on.
pub const DHCPV6_SERVER_PORT: u16 = 547;

/// The WDS server's processor, as the simulator models it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerCpu {
    /// Private-key operations that run at once.
    pub cores: u16,
    /// Simulated time one operation (RSA-2048 decryption and the reply) takes.
    pub decrypt_time: Duration,
    /// Requests that may wait for a core; `None`: no bound.
    pub queue: Option<usize>,
}

/// Threads that run [`DecryptJob`]s for every [`UnlockService`] of a run. Which thread runs a
/// job, and when, changes nothing but the wall-clock time: a job's result depends only on the
/// job.
pub struct DecryptPool {
    work: Option<mpsc::Sender<Work>>,
    workers: Vec<JoinHandle<()>>,
}

type Work = (Box<DecryptJob>, mpsc::SyncSender<Decrypted>);

impl DecryptPool {
    /// A pool of `threads` workers (at least one).
    pub fn new(threads: usize) -> Arc<DecryptPool> {
        let (work, queue) = mpsc::channel::<Work>();
        let queue = Arc::new(Mutex::new(queue));
        let workers = (0..threads.max(1))
            .filter_map(|i| {
                let queue = Arc::clone(&queue);
                std::thread::Builder::new()
                    .name(format!("decrypt-{i}"))
                    .spawn(move || {
                        loop {
                            // The lock is held only to take the next job, not to run it.
                            let next = match queue.lock() {
                                Ok(receiver) => receiver.recv(),
                                Err(_) => return,
                            };
                            let Ok((job, done)) = next else { return };
                            // The service may be gone (its host crashed): nobody waits then.
                            let _ = done.send(job.run());
                        }
                    })
                    .ok()
            })
            .collect();
        Arc::new(DecryptPool {
            work: Some(work),
            workers,
        })
    }

    /// A pool with one worker per core of this machine.
    pub fn per_core() -> Arc<DecryptPool> {
        DecryptPool::new(std::thread::available_parallelism().map_or(1, usize::from))
    }

    /// Starts `job`; its result arrives on the receiver.
    fn submit(&self, job: Box<DecryptJob>) -> InFlight {
        if self.workers.is_empty() {
            // No thread could be started: run it here, at the same simulated instant.
            return InFlight::Done(job.run());
        }
        let (done, result) = mpsc::sync_channel(1);
        match self.work.as_ref().map(|work| work.send((job, done))) {
            Some(Ok(())) => InFlight::Running(result),
            Some(Err(mpsc::SendError((job, _)))) => InFlight::Done(job.run()),
            None => InFlight::Lost,
        }
    }
}

impl Drop for DecryptPool {
    fn drop(&mut self) {
        // Closing the channel ends every worker's loop once the queued jobs are done.
        self.work = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

enum InFlight {
    Running(mpsc::Receiver<Decrypted>),
    Done(Decrypted),
    Lost,
}

/// A request whose private-key operation is under way on the modelled processor.
struct PendingReply {
    adapter: usize,
    result: InFlight,
}

/// The modelled processor of one service instance (a restart starts idle).
struct Processor {
    cpu: ServerCpu,
    pool: Arc<DecryptPool>,
    /// When each core is next free.
    free_at: Vec<Duration>,
    pending: BTreeMap<u64, PendingReply>,
    next_token: u64,
}

impl Processor {
    /// The core that is free first (the lowest-numbered among equals), and when.
    fn first_free(&self) -> (usize, Duration) {
        self.free_at
            .iter()
            .enumerate()
            .min_by_key(|(i, at)| (**at, *i))
            .map_or((0, Duration::ZERO), |(i, at)| (i, *at))
    }

    /// Requests that have arrived and not yet started on a core.
    fn waiting(&self, now: Duration) -> usize {
        let busy = self.free_at.iter().filter(|at| **at > now).count();
        self.pending.len().saturating_sub(busy)
    }
}

/// The WDS server's Network Unlock listener.
pub struct UnlockService {
    provider: Rc<RefCell<Provider>>,
    processor: Option<Processor>,
}

impl UnlockService {
    /// A listener that answers each request the instant it arrives.
    pub fn new(provider: Rc<RefCell<Provider>>) -> Self {
        Self {
            provider,
            processor: None,
        }
    }

    /// A listener on a server with the processor `cpu`, whose operations run on `pool`.
    pub fn with_processor(
        provider: Rc<RefCell<Provider>>,
        cpu: ServerCpu,
        pool: Arc<DecryptPool>,
    ) -> Self {
        let cores = usize::from(cpu.cores.max(1));
        Self {
            provider,
            processor: Some(Processor {
                cpu,
                pool,
                free_at: vec![Duration::ZERO; cores],
                pending: BTreeMap::new(),
                next_token: 0,
            }),
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
        if processor
            .cpu
            .queue
            .is_some_and(|bound| processor.waiting(now) >= bound)
        {
            self.provider.borrow_mut().shed(now, job);
            return;
        }
        let (core, free_at) = processor.first_free();
        let done_at = free_at.max(now) + processor.cpu.decrypt_time;
        processor.free_at[core] = done_at;
        let token = processor.next_token;
        processor.next_token += 1;
        let result = processor.pool.submit(job);
        processor.pending.insert(
            token,
            PendingReply {
                adapter: datagram.adapter,
                result,
            },
        );
        stack.set_timer(SimTime::ZERO.saturating_add(done_at), token);
    }

    fn on_timer(&mut self, stack: &mut dyn HostStack, token: u64) {
        let now = stack.now().since_start();
        let Some(pending) = self
            .processor
            .as_mut()
            .and_then(|p| p.pending.remove(&token))
        else {
            return;
        };
        let done = match pending.result {
            InFlight::Done(done) => done,
            // The one place the simulator waits for a worker: the reply is due now.
            InFlight::Running(result) => match result.recv() {
                Ok(done) => done,
                Err(_) => {
                    self.provider
                        .borrow_mut()
                        .note_error(now, "a decryption worker stopped".into());
                    return;
                }
            },
            InFlight::Lost => {
                self.provider
                    .borrow_mut()
                    .note_error(now, "the decryption pool is closed".into());
                return;
            }
        };
        let outcome = self.provider.borrow_mut().complete(now, done);
        if let Outcome::Replied { transmit, .. } = outcome {
            self.send_reply(stack, now, pending.adapter, transmit);
        }
    }
}
