//! Any bytes as a certificate file (`.cer` DER, `.pfx` PKCS#12, PEM with certificates and keys)
//! into the reader `nulab cert show` and the provider use, without a password and with an empty
//! one; what reads is then viewed and checked for Network Unlock as `cert show` does.
#![no_main]

use certificates::{CertificateView, import};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for password in [None, Some("")] {
        if let Ok(bundle) = import::read(data, password) {
            let view = CertificateView::of_bundle(&bundle);
            let _ = view.to_string();
            let _ = certificates::NetworkUnlockCertificate::from_certificate(bundle.certificate);
        }
    }
    let _ = import::private_key_from_pem(data);
});
