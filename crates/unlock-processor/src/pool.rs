//! The decrypt pool: plain threads, because the work (an RSA-2048 private-key operation, about
//! 1 ms) is CPU-bound and must block neither the simulator's event loop nor the real shell's
//! runtime. Which thread runs a job, and when, changes nothing but the wall-clock time: a job's
//! result depends only on the job.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use unlock_server::provider::{DecryptJob, Decrypted};
use unlock_server::service::{Due, Processor};

/// What to do with a job's result, on the worker thread that produced it.
type OnDone = Box<dyn FnOnce(Decrypted) + Send>;
type Work = (Box<DecryptJob>, OnDone);

/// Threads that run [`DecryptJob`]s, fed by one queue (bounded or not). They stop once the
/// pool is dropped and the queued jobs are done.
pub struct DecryptPool {
    work: Option<crossbeam_channel::Sender<Work>>,
    workers: Vec<JoinHandle<()>>,
}

impl DecryptPool {
    /// A pool of `threads` workers (at least one) with an unbounded queue.
    pub fn new(threads: usize) -> Arc<DecryptPool> {
        Arc::new(DecryptPool::start(threads, None))
    }

    /// A pool of `threads` workers (at least one) whose queue holds at most `capacity` jobs
    /// (at least one); [`DecryptPool::try_submit`] refuses beyond that.
    pub fn bounded(threads: usize, capacity: usize) -> Arc<DecryptPool> {
        Arc::new(DecryptPool::start(threads, Some(capacity.max(1))))
    }

    /// A pool with one worker per core of this machine and an unbounded queue.
    pub fn per_core() -> Arc<DecryptPool> {
        DecryptPool::new(std::thread::available_parallelism().map_or(1, usize::from))
    }

    fn start(threads: usize, capacity: Option<usize>) -> DecryptPool {
        let (work, queue) = match capacity {
            Some(capacity) => crossbeam_channel::bounded::<Work>(capacity),
            None => crossbeam_channel::unbounded::<Work>(),
        };
        let workers = (0..threads.max(1))
            .filter_map(|i| {
                let queue = queue.clone();
                std::thread::Builder::new()
                    .name(format!("nkpu-decrypt-{i}"))
                    .spawn(move || {
                        while let Ok((job, done)) = queue.recv() {
                            done(job.run());
                        }
                    })
                    // A thread that cannot be spawned leaves fewer workers; with none at all,
                    // jobs run on the caller's thread (see `try_submit`).
                    .ok()
            })
            .collect();
        DecryptPool {
            work: Some(work),
            workers,
        }
    }

    /// A pool of one worker that takes no job until the returned gate is dropped, whose
    /// queue holds `capacity` jobs: a full queue on demand, for tests.
    #[cfg(test)]
    pub(crate) fn held(capacity: usize) -> (Arc<DecryptPool>, crossbeam_channel::Sender<()>) {
        let (work, queue) = crossbeam_channel::bounded::<Work>(capacity.max(1));
        let (gate, held) = crossbeam_channel::bounded::<()>(0);
        let worker = std::thread::spawn(move || {
            // Returns once the gate is dropped.
            let _ = held.recv();
            while let Ok((job, done)) = queue.recv() {
                done(job.run());
            }
        });
        let pool = DecryptPool {
            work: Some(work),
            workers: vec![worker],
        };
        (Arc::new(pool), gate)
    }

    /// Worker threads running.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Jobs queued and not yet taken by a worker.
    pub fn queued(&self) -> usize {
        self.work.as_ref().map_or(0, crossbeam_channel::Sender::len)
    }

    /// Queues `job`; `done` gets its result on a worker thread. Hands the job back when the
    /// queue is full (the caller sheds it). With no worker thread at all, the job runs here.
    pub fn try_submit(
        &self,
        job: Box<DecryptJob>,
        done: impl FnOnce(Decrypted) + Send + 'static,
    ) -> Result<(), Box<DecryptJob>> {
        let Some(work) = self.work.as_ref().filter(|_| !self.workers.is_empty()) else {
            done(job.run());
            return Ok(());
        };
        match work.try_send((job, Box::new(done))) {
            Ok(()) => Ok(()),
            Err(
                crossbeam_channel::TrySendError::Full((job, _))
                | crossbeam_channel::TrySendError::Disconnected((job, _)),
            ) => Err(job),
        }
    }
}

impl Drop for DecryptPool {
    fn drop(&mut self) {
        // Closing the queue ends every worker's loop once the queued jobs are done.
        self.work = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// How the real shell's driver is told that the job under a token is done: it then calls the
/// service's `on_timer` with that token (from its own thread, never the worker's).
pub type Wake = Arc<dyn Fn(u64) + Send + Sync>;

/// The real shell's processor: jobs go to a bounded [`DecryptPool`] (a full queue sheds the
/// request on the spot, counted as `drop.overloaded`), and each result wakes the service.
pub struct PoolProcessor {
    pool: Arc<DecryptPool>,
    wake: Wake,
    results: Arc<Mutex<BTreeMap<u64, Decrypted>>>,
    gauges: Arc<PoolGauges>,
}

/// What a [`PoolProcessor`] holds, readable while the service that owns it runs.
#[derive(Debug, Default)]
pub struct PoolGauges {
    /// Jobs accepted whose result has not been collected yet.
    pub outstanding: AtomicUsize,
    /// The most jobs that were ever waiting for a worker at once.
    pub peak_queue: AtomicUsize,
}

impl PoolProcessor {
    pub fn new(pool: Arc<DecryptPool>, wake: Wake) -> PoolProcessor {
        PoolProcessor {
            pool,
            wake,
            results: Arc::default(),
            gauges: Arc::default(),
        }
    }

    /// The processor's gauges, shared.
    pub fn gauges(&self) -> Arc<PoolGauges> {
        Arc::clone(&self.gauges)
    }
}

impl Processor for PoolProcessor {
    fn accept(
        &mut self,
        _now: Duration,
        token: u64,
        job: Box<DecryptJob>,
    ) -> Result<Due, Box<DecryptJob>> {
        let results = Arc::clone(&self.results);
        let wake = Arc::clone(&self.wake);
        self.pool.try_submit(job, move |done| {
            if let Ok(mut results) = results.lock() {
                results.insert(token, done);
            }
            wake(token);
        })?;
        self.gauges.outstanding.fetch_add(1, Ordering::Relaxed);
        self.gauges
            .peak_queue
            .fetch_max(self.pool.queued(), Ordering::Relaxed);
        Ok(Due::WhenDone)
    }

    fn finish(&mut self, token: u64) -> Option<Decrypted> {
        let done = self.results.lock().ok()?.remove(&token)?;
        self.gauges.outstanding.fetch_sub(1, Ordering::Relaxed);
        Some(done)
    }
}
