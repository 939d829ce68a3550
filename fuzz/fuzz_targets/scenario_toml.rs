//! Any text as a scenario file into the scenario model's parser (TOML syntax, unknown keys,
//! durations, with file:line:column errors). References to other files are checked only when a
//! world is built, which this target does not do.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(err) = scenario::model::parse(Path::new("fuzz.toml"), text.to_owned()) {
        let _ = err.to_string();
    }
});
