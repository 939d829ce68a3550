//! `cargo xtask bench`: work in progress.
use anyhow::Result;
pub fn run(_args: &[String]) -> Result<()> {
    Ok(())
}
