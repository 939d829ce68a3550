//! Recovery-key escrow (issue 7).
pub mod agent;
pub mod committer;
pub mod record;
pub mod seal;
pub mod server;
pub mod store;
pub mod wire;
