//! Any bytes as a volume image (header, metadata and its protectors) and as a startup key's
//! `.BEK` file; an image that reads is listed as `nulab volume protectors` lists it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use volume::{StartupKey, Volume};

fuzz_target!(|data: &[u8]| {
    if let Ok(volume) = Volume::from_bytes(data) {
        let _ = volume.protector_views(None);
        let _ = volume.protectors_table("fuzz.img", None);
        let _ = volume.to_bytes();
    }
    let _ = StartupKey::from_bytes(data);
});
