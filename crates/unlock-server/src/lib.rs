//! The WDS Network Unlock provider (`Nkpprov.dll`'s role), sans-IO.
//!
//! - [`policy`]: the subnet policy file `bde-network-unlock.ini`, every rule of the seed, a linter
//!   that names the line of every problem (which Windows never tells you), and the decision for a
//!   certificate and a client address.
//! - [`provider`]: the certificate store, the processing order, a counter and a log line per
//!   drop (lines are kept as what happened, `LogMessage`, and worded when shown); split into cheap classification and a `Send` decrypt job so that a shell can spread
//!   the RSA work over every core and shed what it cannot queue (`drop.overloaded`).
//! - [`service`]: the provider as a `host_contract::Service`, run unchanged by both shells; its
//!   private-key operations run inline or on a [`service::Processor`] (`crates/unlock-processor`
//!   holds the threaded ones, so this core owns no thread).

pub mod policy;
pub mod provider;
pub mod service;
