//! Group commit: the store runs on one thread of its own; escrow requests that arrive while a
//! commit is in flight are gathered into the next transaction, so one fsync acknowledges many
//! escrows. A request's reply is sent only after `COMMIT` returned (never before: that is the
//! crate's invariant), and a failed commit fails every request of its group.
//!
//! Writes other than escrows (a disclosure's audit record and rotation mark, audited refusals,
//! enrolments) go through the same thread, each in its own transaction, because SQLite allows
//! one writer at a time anyway and the audit must not share a fate with anyone else's escrow.
//! Reads do not: the service authenticates, looks keys up and reads the audit log on a
//! [`crate::store::StoreReader`], so a look-up never holds a group commit back.

use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::record::DeviceId;
use crate::store::{
    AuditEntry, DeviceToken, Disclosure, EscrowReceipt, EscrowRequest, HelpdeskRequest, Store,
    StoreError,
};

/// Most escrow requests gathered into one transaction (bounds a group's latency).
pub const MAX_GROUP: usize = 1024;

/// Why the committer could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the group commit failed, nothing of it is durable: {0}")]
    GroupFailed(String),
    #[error("the store thread has stopped")]
    Stopped,
}

enum Command {
    Escrow(
        EscrowRequest,
        i64,
        oneshot::Sender<Result<EscrowReceipt, CommitError>>,
    ),
    Disclose(
        HelpdeskRequest,
        i64,
        oneshot::Sender<Result<Disclosure, CommitError>>,
    ),
    Enrol(
        DeviceId,
        i64,
        oneshot::Sender<Result<DeviceToken, CommitError>>,
    ),
    Audit(oneshot::Sender<Result<Vec<AuditEntry>, CommitError>>),
    /// Anything else that needs the store (authentication look-ups, operator accounts, audited
    /// refusals), run in turn on the store thread.
    Run(Box<dyn FnOnce(&mut Store) + Send>),
}

/// A handle to the store thread. Cloning it is cheap; the thread stops when every handle is
/// dropped.
#[derive(Clone)]
pub struct GroupCommitter {
    tx: mpsc::Sender<Command>,
}

impl GroupCommitter {
    /// Moves the store onto a thread of its own.
    pub fn spawn(store: Store) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("escrow-store".into())
            .spawn(move || run(store, rx))?;
        Ok(Self { tx })
    }

    /// Escrows a request; resolves once it is durable (or failed).
    pub async fn escrow(&self, req: EscrowRequest, now: i64) -> Result<EscrowReceipt, CommitError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Escrow(req, now, tx))?;
        rx.await.map_err(|_| CommitError::Stopped)?
    }

    /// A whole disclosure (look-up, audit, material) on the store thread, for tools and tests;
    /// the service looks up on its reader and only finishes here.
    pub async fn disclose(
        &self,
        req: HelpdeskRequest,
        now: i64,
    ) -> Result<Disclosure, CommitError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Disclose(req, now, tx))?;
        rx.await.map_err(|_| CommitError::Stopped)?
    }

    pub async fn enrol(&self, device: DeviceId, now: i64) -> Result<DeviceToken, CommitError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Enrol(device, now, tx))?;
        rx.await.map_err(|_| CommitError::Stopped)?
    }

    /// The audit log read on the store thread (the service reads it on its reader).
    pub async fn audit_log(&self) -> Result<Vec<AuditEntry>, CommitError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Audit(tx))?;
        rx.await.map_err(|_| CommitError::Stopped)?
    }

    /// Runs `f` on the store thread, after the requests queued before it.
    pub async fn with_store<T, F>(&self, f: F) -> Result<T, CommitError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Run(Box::new(move |store| {
            let _ = tx.send(f(store));
        })))?;
        rx.await
            .map_err(|_| CommitError::Stopped)?
            .map_err(CommitError::Store)
    }

    fn send(&self, c: Command) -> Result<(), CommitError> {
        self.tx.send(c).map_err(|_| CommitError::Stopped)
    }
}

type EscrowReply = oneshot::Sender<Result<EscrowReceipt, CommitError>>;

fn run(mut store: Store, rx: mpsc::Receiver<Command>) {
    let mut group: Vec<(EscrowRequest, EscrowReply)> = Vec::new();
    let mut others: Vec<Command> = Vec::new();
    let mut group_now = i64::MIN;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        // Gather what is already queued: that is the group.
        loop {
            match next.take() {
                Some(Command::Escrow(req, now, reply)) => {
                    group_now = group_now.max(now);
                    group.push((req, reply));
                }
                Some(other) => others.push(other),
                None => {}
            }
            if group.len() >= MAX_GROUP {
                break;
            }
            match rx.try_recv() {
                Ok(c) => next = Some(c),
                Err(_) => break,
            }
        }
        if !group.is_empty() {
            let (requests, replies): (Vec<_>, Vec<_>) =
                std::mem::take(&mut group).into_iter().unzip();
            match store.escrow_group(&requests, group_now) {
                Ok(results) => {
                    for (reply, r) in replies.into_iter().zip(results) {
                        let _ = reply.send(r.map_err(CommitError::Store));
                    }
                }
                Err(e) => {
                    let why = e.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(CommitError::GroupFailed(why.clone())));
                    }
                }
            }
            group_now = i64::MIN;
        }
        for c in others.drain(..) {
            match c {
                Command::Disclose(req, now, reply) => {
                    let _ = reply.send(store.disclose(&req, now).map_err(CommitError::Store));
                }
                Command::Enrol(device, now, reply) => {
                    let _ =
                        reply.send(store.enrol_device(&device, now).map_err(CommitError::Store));
                }
                Command::Audit(reply) => {
                    let _ = reply.send(store.audit_log().map_err(CommitError::Store));
                }
                Command::Run(f) => f(&mut store),
                Command::Escrow(..) => {} // gathered above, never queued here
            }
        }
    }
}
