//! Network Unlock certificates: the X.509 certificate whose RSA-2048 public key a client uses
//! to wrap its key protector, and whose private key the WDS provider decrypts with.
//!
//! ```text
//!  CertificateRequest ─ self_signed / issued_by (RNG or seed) ─┐
//!  .cer / .pfx / PEM bytes ─ import::read ──────────────────────┼─▶ CertificateBundle
//!                                                               │   (certificate, key?, chain)
//!         ┌────────────────────────┬───────────────────────────┼──────────────┐
//!         ▼                        ▼                           ▼              ▼
//!  NetworkUnlockCertificate   ProviderCertificate        CertificateView   .cer / .pfx / PEM
//!  (client: thumbprint,       (server: + PKCS#8 key      (`cert show`,     (pfx::to_pfx,
//!   RsaPublicKey)              for aws-lc-rs)             text or JSON)     files::save_*)
//! ```
//!
//! Pure functions over bytes, seeds and dates: only [`files`] touches the file system, no
//! function reads a clock, and randomness is injected (one exception, stated in [`pfx`]: the
//! salts inside a `.pfx`).
//!
//! For `nulab cert new --out DIR [--name NAME] [--subject CN] [--seed N] [--password P]`:
//! [`CertificateRequest::network_unlock`] with [`Validity::fixture`] (seeded) or
//! [`Validity::years_from`] (now), [`CertificateRequest::with_subject`],
//! [`CertificateRequest::self_signed_from_seed`] or [`CertificateRequest::self_signed`], then
//! [`files::save_cer_and_pfx`]. For `nulab cert show FILE [--password P] [--json]`:
//! [`files::load_bundle`] then [`CertificateView::of_bundle`]; with `--template`,
//! [`template::judge`], the seed's certificate template step by step.

pub mod certificate;
pub mod error;
pub mod files;
pub mod fitness;
pub mod fixture;
pub mod generate;
pub mod import;
pub mod oid;
pub mod pfx;
mod purposes;
pub mod template;
pub mod view;

pub use certificate::{Certificate, CertificateBundle, KeyUsage, PrivateKey};
pub use error::{ExportError, FileError, GenerateError, ImportError};
pub use fitness::{NetworkUnlockCertificate, ProviderCertificate, Unfit, UnfitReason};
pub use generate::{CertificateAuthority, CertificateRequest, Validity};
/// The SHA-1 certificate thumbprint: one type for the wire, the policy file and this crate.
pub use nkpu::Thumbprint;
pub use template::{TemplateJudgement, TemplateStep, Verdict};
pub use view::CertificateView;
