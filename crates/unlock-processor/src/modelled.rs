//! The simulator's model of the WDS server's processor ([`ServerCpu`]): each private-key
//! operation occupies one of its cores for `decrypt_time` of simulated time, requests wait for
//! a free core (and, with a bounded queue, are shed and counted when it is full, as the real
//! shell does), and the reply is due when the operation ends. The operation itself runs on a
//! [`DecryptPool`] thread as soon as the request arrives, so while the simulator goes on with
//! other hosts' events the machine's cores work through a storm's RSA in parallel. Nothing of
//! the wall clock reaches the run: the reply's time comes from the model, its bytes from the
//! job, so a run with the pool is byte-identical to one without.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use unlock_server::provider::{DecryptJob, Decrypted};
use unlock_server::service::{Due, Processor};

use crate::DecryptPool;

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

/// The results of a [`ModelledCpu`]'s jobs, filled by the pool's threads: one map and one
/// condition variable for every job (a channel per job was a kilobyte of each of a 100,000-client
/// storm's requests in flight). `None`: the job was lost (its worker panicked).
#[derive(Default)]
struct Results {
    shelf: Mutex<Shelf>,
    ready: Condvar,
}

#[derive(Default)]
struct Shelf {
    done: BTreeMap<u64, Option<Decrypted>>,
    /// The job the simulator waits for, if it waits: only its result wakes it (a storm's
    /// workers finish thousands of others meanwhile, and a wake is a system call and a
    /// context switch).
    awaited: Option<u64>,
}

impl Results {
    fn put(&self, token: u64, result: Option<Decrypted>) {
        let wake = match self.shelf.lock() {
            Ok(mut shelf) => {
                shelf.done.insert(token, result);
                shelf.awaited == Some(token)
            }
            // A poisoned lock: wake the waiter, whose own lock then fails and ends its wait.
            Err(_) => true,
        };
        if wake {
            self.ready.notify_all();
        }
    }

    /// Forgets `token`'s result, if any: the job did not go to the pool after all (its
    /// dropped [`Delivery`] put a `None` that nothing would take).
    fn discard(&self, token: u64) {
        if let Ok(mut shelf) = self.shelf.lock() {
            shelf.done.remove(&token);
        }
    }

    /// Takes `token`'s result. If it is not in yet, waits until it is and until `then`'s is
    /// too (a later job on the pool, or `token` itself): the simulator, faster than the pool,
    /// would otherwise sleep and be woken for every result in turn, a system call and a context
    /// switch on both sides each time, where one wake now covers the results up to `then`.
    fn take(&self, token: u64, then: u64) -> Option<Decrypted> {
        let mut shelf = self.shelf.lock().ok()?;
        if !shelf.done.contains_key(&token) {
            // `then` first: the pool takes jobs in order, so `token` is in by then (if it is
            // not, the second round waits for it alone).
            for wanted in [then, token] {
                while !shelf.done.contains_key(&wanted) {
                    shelf.awaited = Some(wanted);
                    shelf = self.ready.wait(shelf).ok()?;
                }
            }
            shelf.awaited = None;
        }
        shelf.done.remove(&token).flatten()
    }
}

/// How many results one wake of a waiting simulator covers at most (the one it needs and the
/// next jobs on the pool after it).
const WAKE_BATCH: usize = 16;

/// A job's way back to [`Results`]: puts its result, or `None` if it is dropped unsent (the
/// worker panicked), so `finish` never waits for a result that cannot come.
struct Delivery {
    token: u64,
    results: Arc<Results>,
    sent: bool,
}

impl Delivery {
    fn send(mut self, decrypted: Decrypted) {
        self.sent = true;
        self.results.put(self.token, Some(decrypted));
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if !self.sent {
            self.results.put(self.token, None);
        }
    }
}

/// A [`ServerCpu`] of one service instance (a restart starts idle), its operations run on a
/// shared [`DecryptPool`].
pub struct ModelledCpu {
    cpu: ServerCpu,
    pool: Arc<DecryptPool>,
    /// When each core is next free.
    free_at: Vec<Duration>,
    /// Accepted operations whose result has not been collected yet: `true` when it is on the
    /// pool (its result comes through `results`).
    pending: BTreeMap<u64, bool>,
    /// Results of operations that ran at once (a full pool queue).
    ran_here: BTreeMap<u64, Decrypted>,
    results: Arc<Results>,
}

impl ModelledCpu {
    pub fn new(cpu: ServerCpu, pool: Arc<DecryptPool>) -> ModelledCpu {
        ModelledCpu {
            cpu,
            pool,
            free_at: vec![Duration::ZERO; usize::from(cpu.cores.max(1))],
            pending: BTreeMap::new(),
            ran_here: BTreeMap::new(),
            results: Arc::default(),
        }
    }

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

impl Processor for ModelledCpu {
    fn accept(
        &mut self,
        now: Duration,
        token: u64,
        job: Box<DecryptJob>,
    ) -> Result<Due, Box<DecryptJob>> {
        if self
            .cpu
            .queue
            .is_some_and(|bound| self.waiting(now) >= bound)
        {
            return Err(job);
        }
        let (core, free_at) = self.first_free();
        let done_at = free_at.max(now) + self.cpu.decrypt_time;
        self.free_at[core] = done_at;
        let delivery = Delivery {
            token,
            results: Arc::clone(&self.results),
            sent: false,
        };
        let on_pool = match self
            .pool
            .try_submit(job, move |decrypted| delivery.send(decrypted))
        {
            Ok(()) => true,
            // A bounded pool that is full: run it here, at the same simulated instant (the
            // model, not the pool, decides what is shed).
            Err(job) => {
                // The refused callback's `Delivery` was dropped unsent and put a `None`.
                self.results.discard(token);
                self.ran_here.insert(token, job.run());
                false
            }
        };
        self.pending.insert(token, on_pool);
        Ok(Due::At(done_at))
    }

    fn finish(&mut self, token: u64) -> Option<Decrypted> {
        if self.pending.remove(&token)? {
            // The one place the simulator waits for a worker: the reply is due now. If it
            // must wait, it waits for the next few jobs on the pool too.
            let then = self
                .pending
                .range(token..)
                .filter(|(_, on_pool)| **on_pool)
                .map(|(later, _)| *later)
                .take(WAKE_BATCH - 1)
                .last()
                .unwrap_or(token);
            self.results.take(token, then)
        } else {
            self.ran_here.remove(&token)
        }
    }
}

#[cfg(test)]
mod tests {
    // Test code may unwrap: a panic is a failed test with its message.
    #![allow(clippy::unwrap_used)]

    use std::net::{Ipv4Addr, SocketAddr};

    use nkpu::{ClientKey, KeyProtector, ProviderKey, SessionKey, Thumbprint, v4};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use rsa::pkcs8::DecodePrivateKey;
    use unlock_server::provider::{Classified, Outcome, Provider, Received};

    use super::*;

    const THUMB: Thumbprint = Thumbprint::from_bytes([0xaa; 20]);

    /// A provider holding the test key, and `n` decrypt jobs it made.
    fn jobs(n: u8) -> (Provider, Vec<DecryptJob>) {
        let der = std::fs::read(format!(
            "{}/../../fixtures/keys/test-a-rsa2048.pk8",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let public = rsa::RsaPrivateKey::from_pkcs8_der(&der)
            .unwrap()
            .to_public_key();
        let mut provider = Provider::new(vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 1]);
        provider.add_certificate(THUMB, ProviderKey::from_pkcs8_der(&der).unwrap());
        let source: SocketAddr = "10.0.4.110:68".parse().unwrap();
        let jobs = (0..n)
            .map(|i| {
                let mut rng = ChaCha20Rng::seed_from_u64(u64::from(i));
                let ck = ClientKey::random(&mut rng);
                let sk = SessionKey::random(&mut rng);
                let kp = KeyProtector::encrypt(&public, &ck, &sk, &mut rng).unwrap();
                let request = v4::Request::after_lease(
                    u32::from(i) + 1,
                    [2, 0, 0, 0, 0, i],
                    Ipv4Addr::new(10, 0, 4, 110),
                    Ipv4Addr::new(10, 0, 4, 2),
                    vec![],
                    THUMB,
                    kp,
                )
                .encode();
                let received = Received {
                    source,
                    payload: &request,
                };
                match provider.classify(Duration::ZERO, received) {
                    Classified::Decrypt(job) => *job,
                    Classified::Dropped(reason) => panic!("dropped: {reason:?}"),
                }
            })
            .collect();
        (provider, jobs)
    }

    #[test]
    fn a_job_the_full_pool_refuses_leaves_no_result_behind() {
        // One worker held at its gate and room for one queued job: the second job is refused.
        let (pool, gate) = DecryptPool::held(1);
        let cpu = ServerCpu {
            cores: 2,
            decrypt_time: Duration::from_millis(1),
            queue: None,
        };
        let mut modelled = ModelledCpu::new(cpu, pool);
        let (mut provider, jobs) = jobs(2);
        let mut jobs = jobs.into_iter();
        assert!(
            modelled
                .accept(Duration::ZERO, 1, Box::new(jobs.next().unwrap()))
                .is_ok()
        );
        assert!(
            modelled
                .accept(Duration::ZERO, 2, Box::new(jobs.next().unwrap()))
                .is_ok()
        );
        let on_pool = modelled.pending.get(&2).copied();
        let stale = modelled.results.shelf.lock().unwrap().done.contains_key(&2);
        // Let the worker go before these assertions, so a failure unwinds without waiting for
        // it (dropping the pool joins its worker).
        drop(gate);
        assert_eq!(on_pool, Some(false), "ran here, not on the pool");
        assert!(!stale, "no stale result for the job the pool refused");
        for token in [2, 1] {
            let done = modelled.finish(token).unwrap();
            let outcome = provider.complete(Duration::ZERO, done);
            assert!(matches!(outcome, Outcome::Replied { .. }), "{outcome:?}");
        }
        assert!(modelled.results.shelf.lock().unwrap().done.is_empty());
    }

    #[test]
    fn a_waiting_simulator_is_woken_once_for_the_next_jobs_too() {
        // The worker is held until the simulator waits: the first result it needs is not in,
        // so it waits for the first WAKE_BATCH jobs' results, then finds them all ready.
        let (pool, gate) = DecryptPool::held(32);
        let cpu = ServerCpu {
            cores: 1,
            decrypt_time: Duration::from_millis(1),
            queue: None,
        };
        let mut modelled = ModelledCpu::new(cpu, pool);
        let (mut provider, jobs) = jobs(20);
        for (token, job) in (1..).zip(jobs) {
            assert!(
                modelled
                    .accept(Duration::ZERO, token, Box::new(job))
                    .is_ok()
            );
        }
        let results = Arc::clone(&modelled.results);
        let opener = std::thread::spawn(move || {
            // Lets the worker go in any case after a while, so a simulator that never waits
            // (or a failure) does not hang the test.
            let give_up = std::time::Instant::now() + Duration::from_secs(10);
            let awaited = loop {
                if let Some(token) = results.shelf.lock().unwrap().awaited {
                    break Some(token);
                }
                if std::time::Instant::now() > give_up {
                    break None;
                }
                std::thread::yield_now();
            };
            drop(gate);
            awaited
        });
        let first = modelled.finish(1).unwrap();
        let awaited = opener.join().unwrap();
        assert_eq!(
            awaited,
            Some(WAKE_BATCH as u64),
            "waited for the batch's last job first"
        );
        let ready = modelled.results.shelf.lock().unwrap().done.len();
        assert!(
            ready >= WAKE_BATCH - 1,
            "{ready} results ready after one wake"
        );
        assert!(matches!(
            provider.complete(Duration::ZERO, first),
            Outcome::Replied { .. }
        ));
        for token in 2..=20 {
            let done = modelled.finish(token).unwrap();
            let outcome = provider.complete(Duration::ZERO, done);
            assert!(matches!(outcome, Outcome::Replied { .. }), "{outcome:?}");
        }
        assert!(modelled.results.shelf.lock().unwrap().done.is_empty());
    }
}
