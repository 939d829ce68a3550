//! Any bytes as the body of a request to the recovery service (an agent's escrow, a helpdesk
//! recovery request), decoded and validated as the service does before the store sees it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recovery_service::wire::{EscrowBody, RecoverBody};

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = serde_json::from_slice::<EscrowBody>(data) {
        for record in body.records {
            if let Ok(record) = record.into_record() {
                let _ = record.validate();
            }
        }
    }
    let _ = serde_json::from_slice::<RecoverBody>(data);
});
