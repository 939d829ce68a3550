//! The `nulab` command line. Work in progress.
fn main() {}
