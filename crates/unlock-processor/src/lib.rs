//! Where the Network Unlock provider's private-key operations run. The provider core
//! (`unlock_server`) is sans-IO and owns no thread: its service hands each request that passes
//! the cheap checks to a [`Processor`](unlock_server::service::Processor). This crate holds the
//! processors, on the shells' side of the contract:
//!
//! - [`DecryptPool`]: the one pool of decrypt threads (one per core by default), bounded or
//!   not, that both shells use.
//! - [`ServerCpu`] and [`ModelledCpu`]: the simulator's model of the WDS server's processor
//!   (cores, simulated time per operation, an optional queue bound that sheds). The reply's
//!   time comes from the model and its bytes from the job, never from the pool's timing, so a
//!   run stays byte-identical while the machine's cores work through a storm's RSA in parallel.
//! - [`PoolProcessor`]: the real shell's processor: a bounded queue that sheds what does not fit
//!   and wakes the service (through a callback the shell's driver gives) when a result is ready.

mod modelled;
mod pool;

pub use modelled::{ModelledCpu, ServerCpu};
pub use pool::{DecryptPool, PoolGauges, PoolProcessor, Wake};
