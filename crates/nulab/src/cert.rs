//! `nulab cert new|show`: make a Network Unlock certificate as the seed's `certreq` example
//! does, and look at one (any `.cer`, `.pfx` or PEM) the way an admin checks it before deploying.
//! Exit code of `show`: 0 when the certificate is fit for Network Unlock, 1 when it is not;
//! with `--template`, also 1 when it shows a step of the seed's certificate template missed
//! (`certificates::template`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use certificates::generate::DEFAULT_SUBJECT;
use certificates::{CertificateRequest, CertificateView, Validity, files};
use clap::Subcommand;

use crate::output::{self, errln, out, outln};

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Generate a self-signed Network Unlock certificate (RSA-2048, critical keyEncipherment,
    /// EKU 1.3.6.1.4.1.311.67.1.1); writes NAME.cer (for Group Policy) and NAME.pfx (for the
    /// WDS server) and prints the thumbprint
    New {
        /// Folder to write into (created if missing)
        #[arg(long)]
        out: PathBuf,
        /// File name without extension
        #[arg(long, default_value = files::DEFAULT_FILE_NAME)]
        name: String,
        /// Subject, e.g. "CN=BitLocker Network Unlock certificate for Contoso"
        #[arg(long, default_value = DEFAULT_SUBJECT)]
        subject: String,
        /// Generate deterministically from this seed (fixed dates 2025-01-01 to 2035-01-01),
        /// for fixtures and labs; without it, a fresh key valid for one year from now
        #[arg(long)]
        seed: Option<u64>,
        /// Password of the .pfx
        #[arg(long, default_value = "")]
        password: String,
        /// Replace an existing NAME.cer or NAME.pfx
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show a certificate: subject, issuer, validity, key size, key usage and its criticality,
    /// EKUs, SHA-1 thumbprint, and whether it is fit for Network Unlock (with every reason)
    Show {
        /// A .cer (DER), .pfx or PEM file, or `-` for standard input
        file: PathBuf,
        /// Password of a .pfx
        #[arg(long)]
        password: Option<String>,
        /// Also judge it against the seed's certificate template (purpose Encryption,
        /// exportable private key, minimum key size 2048, the BitLocker Network Unlock
        /// application policy, critical keyEncipherment) and name each step missed
        #[arg(long)]
        template: bool,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: CertCommand) -> Result<ExitCode> {
    match cmd {
        CertCommand::New {
            out,
            name,
            subject,
            seed,
            password,
            force,
            json,
        } => {
            for extension in ["cer", "pfx"] {
                crate::args::refuse_overwrite(&out.join(format!("{name}.{extension}")), force)?;
            }
            let validity = match seed {
                Some(_) => Validity::fixture(),
                None => {
                    // The CLI is a shell: it may read the clock; the crate never does.
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .context("the system clock is before 1970")?;
                    let now = i64::try_from(now.as_secs())
                        .context("the system clock is too far ahead")?;
                    Validity::years_from(now, 1)?
                }
            };
            let request = CertificateRequest::network_unlock(validity).with_subject(subject);
            let bundle = match seed {
                Some(seed) => request.self_signed_from_seed(seed)?,
                None => request.self_signed(&mut rand_core::OsRng)?,
            };
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let written = files::save_cer_and_pfx(&out, &name, &bundle, &password)?;
            if json {
                outln!(
                    "{}",
                    serde_json::json!({
                        "thumbprint": written.thumbprint.to_string(),
                        "cer": written.cer.display().to_string(),
                        "pfx": written.pfx.display().to_string(),
                    })
                )?;
            } else {
                outln!("{}", written.thumbprint)?;
                errln!(
                    "wrote {} and {}",
                    written.cer.display(),
                    written.pfx.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        CertCommand::Show {
            file,
            password,
            template,
            json,
        } => {
            let (name, data) = crate::read_input(&file)?;
            let bundle = certificates::import::read(&data, password.as_deref())
                .with_context(|| name.clone())?;
            let view = CertificateView::of_bundle(&bundle);
            let judgement = template.then(|| {
                let from_pfx = certificates::import::detect_format(&data)
                    == certificates::import::FileFormat::Pfx;
                certificates::template::judge(&bundle, from_pfx)
            });
            if json {
                match &judgement {
                    None => output::json(&view)?,
                    Some(judgement) => {
                        let mut value = serde_json::to_value(&view)?;
                        if let Some(object) = value.as_object_mut() {
                            object.insert("template".into(), serde_json::to_value(judgement)?);
                        }
                        output::json(&value)?;
                    }
                }
            } else {
                out!("{view}")?;
                if let Some(judgement) = &judgement {
                    out!("\n{judgement}")?;
                }
            }
            let template_followed = judgement.as_ref().is_none_or(|j| j.followed);
            Ok(if view.network_unlock.fit && template_followed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
