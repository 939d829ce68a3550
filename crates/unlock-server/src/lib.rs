//! The WDS Network Unlock provider (`Nkpprov.dll`'s role), sans-IO.
//!
//! - [`policy`]: the subnet policy file `bde-network-unlock.ini`, every rule of the seed, a linter
//!   that names the line of every problem (which Windows never tells you), and the decision for a
//!   certificate and a client address.

pub mod policy;
pub mod provider;
pub mod service;
