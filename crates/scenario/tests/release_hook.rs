//! The runner hands freed memory back once the world is built and once the simulation is
//! dropped, through the hook the binary sets (`scenario::run::set_release_freed_memory`). Its own
//! test binary: the hook is set once per process.

use std::sync::atomic::{AtomicUsize, Ordering};

static CALLS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn the_runner_calls_the_release_hook_after_building_and_after_the_simulation() {
    scenario::run::set_release_freed_memory(|| {
        CALLS.fetch_add(1, Ordering::SeqCst);
    });
    let loaded = scenario::load_catalogue("happy-path-ipv4").expect("a catalogue scenario");
    let result = scenario::run(&loaded, None).expect("runs");
    assert_eq!(CALLS.load(Ordering::SeqCst), 2, "two calls for one run");
    // The views come after the hook, from what the run kept: the packets were decoded.
    assert!(result.packets().next().is_some());
}
