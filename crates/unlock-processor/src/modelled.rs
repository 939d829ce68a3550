//! The simulator's model of the WDS server's processor ([`ServerCpu`]): each private-key
//! operation occupies one of its cores for `decrypt_time` of simulated time, requests wait for
//! a free core (and, with a bounded queue, are shed and counted when it is full, as the real
//! shell does), and the reply is due when the operation ends. The operation itself runs on a
//! [`DecryptPool`] thread as soon as the request arrives, so while the simulator goes on with
//! other hosts' events the machine's cores work through a storm's RSA in parallel. Nothing of
//! the wall clock reaches the run: the reply's time comes from the model, its bytes from the
//! job, so a run with the pool is byte-identical to one without.

use std::collections::BTreeMap;
use std::sync::{Arc, mpsc};
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

enum InFlight {
    Running(mpsc::Receiver<Decrypted>),
    Done(Decrypted),
}

/// A [`ServerCpu`] of one service instance (a restart starts idle), its operations run on a
/// shared [`DecryptPool`].
pub struct ModelledCpu {
    cpu: ServerCpu,
    pool: Arc<DecryptPool>,
    /// When each core is next free.
    free_at: Vec<Duration>,
    /// Accepted operations whose result has not been collected yet.
    pending: BTreeMap<u64, InFlight>,
}

impl ModelledCpu {
    pub fn new(cpu: ServerCpu, pool: Arc<DecryptPool>) -> ModelledCpu {
        ModelledCpu {
            cpu,
            pool,
            free_at: vec![Duration::ZERO; usize::from(cpu.cores.max(1))],
            pending: BTreeMap::new(),
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
        let (done, result) = mpsc::sync_channel(1);
        let in_flight = match self.pool.try_submit(job, move |decrypted| {
            // The service may be gone (its host crashed): nobody waits then.
            let _ = done.send(decrypted);
        }) {
            Ok(()) => InFlight::Running(result),
            // A bounded pool that is full: run it here, at the same simulated instant (the
            // model, not the pool, decides what is shed).
            Err(job) => InFlight::Done(job.run()),
        };
        self.pending.insert(token, in_flight);
        Ok(Due::At(done_at))
    }

    fn finish(&mut self, token: u64) -> Option<Decrypted> {
        match self.pending.remove(&token)? {
            InFlight::Done(done) => Some(done),
            // The one place the simulator waits for a worker: the reply is due now.
            InFlight::Running(result) => result.recv().ok(),
        }
    }
}
