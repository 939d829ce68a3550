//! `nulab volume create|protectors|unlock` and `nulab recovery-password new|check`: build a
//! BitLocker-style volume image by hand, add protectors, and unlock it, as a teacher would show
//! with `manage-bde`. The simulated TPM lives in a state file (`IMAGE.tpm.json` by default) so
//! that it keeps its PCRs, sealed keys and failure counter between invocations.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRngCore, SeedableRng};
use tpm::{PcrSelection, SimulatedTpm};
use volume::{
    BITLOCKER_STRETCH_ITERATIONS, ProtectorKind, RecoveryPassword, StartupKey, UnlockWith, Volume,
};

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create an encrypted volume image (AES-256-XTS) with the protectors asked for
    Create {
        image: PathBuf,
        /// Size of the data area in bytes
        #[arg(long, default_value_t = 1 << 20)]
        size: u64,
        #[arg(long, default_value = "NULAB")]
        label: String,
        /// Simulated TPM state file (created if missing)
        #[arg(long)]
        tpm_state: Option<PathBuf>,
        /// Add a TPM-only protector (sealed to PCRs 7 and 11)
        #[arg(long)]
        tpm: bool,
        /// Add a TPM+PIN protector with this PIN
        #[arg(long)]
        tpm_pin: Option<String>,
        /// Add a Network (Certificate Based) protector for this certificate (.cer or PEM)
        #[arg(long)]
        network_unlock_cert: Option<PathBuf>,
        /// Add a recovery password protector (printed)
        #[arg(long)]
        recovery_password: bool,
        /// Add a startup key protector and write its .BEK file into this folder
        #[arg(long)]
        startup_key_out: Option<PathBuf>,
        /// Seed every key from this number (same seed, same image)
        #[arg(long)]
        seed: Option<u64>,
        /// SHA-256 stretching iterations for the recovery password (BitLocker uses 1048576)
        #[arg(long, default_value_t = BITLOCKER_STRETCH_ITERATIONS)]
        iterations: u32,
        #[arg(long)]
        json: bool,
    },
    /// List the protectors, like `manage-bde -protectors -get`
    Protectors {
        image: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Unlock with one protector: really decrypts the data and prints the volume label
    Unlock {
        image: PathBuf,
        /// tpm, tpm-and-pin, recovery-password or startup-key
        #[arg(long = "with")]
        with: ProtectorKind,
        #[arg(long)]
        pin: Option<String>,
        /// The 48-digit recovery password (hyphens optional)
        #[arg(long)]
        password: Option<String>,
        /// The startup key's .BEK file
        #[arg(long)]
        key: Option<PathBuf>,
        #[arg(long)]
        tpm_state: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RecoveryPasswordCommand {
    /// A new recovery password, formatted as BitLocker does
    New {
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Check a recovery password: exit 0 if valid, 1 naming the bad group if not
    Check {
        password: String,
        #[arg(long)]
        json: bool,
    },
}

fn rng(seed: Option<u64>) -> Box<dyn CryptoRngCore> {
    match seed {
        Some(seed) => Box::new(ChaCha20Rng::seed_from_u64(seed)),
        None => Box::new(rand_core::OsRng),
    }
}

fn tpm_state_path(image: &Path, given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        let mut name = image.as_os_str().to_owned();
        name.push(".tpm.json");
        PathBuf::from(name)
    })
}

fn load_tpm(path: &Path, rng: &mut dyn CryptoRngCore) -> Result<SimulatedTpm> {
    match std::fs::read_to_string(path) {
        Ok(text) => SimulatedTpm::from_json(&text)
            .with_context(|| format!("{}: not a simulated TPM state", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            rng.fill_bytes(&mut seed);
            Ok(SimulatedTpm::manufacture(
                &mut ChaCha20Rng::from_seed(seed),
                Default::default(),
            ))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn save_tpm(path: &Path, tpm: &SimulatedTpm) -> Result<()> {
    std::fs::write(path, tpm.to_json()).with_context(|| format!("cannot write {}", path.display()))
}

pub fn run_volume(cmd: VolumeCommand) -> Result<ExitCode> {
    match cmd {
        VolumeCommand::Create {
            image,
            size,
            label,
            tpm_state,
            tpm: with_tpm,
            tpm_pin,
            network_unlock_cert,
            recovery_password,
            startup_key_out,
            seed,
            iterations,
            json,
        } => {
            let mut rng = rng(seed);
            let state = tpm_state_path(&image, tpm_state);
            let mut tpm = load_tpm(&state, &mut *rng)?;
            let (mut volume, keys) = Volume::create(size, &label, &mut *rng)?;
            let pcrs = PcrSelection::SECURE_BOOT;
            if with_tpm {
                volume.add_tpm_protector(&keys, &mut tpm, pcrs, &mut *rng)?;
            }
            if let Some(pin) = &tpm_pin {
                volume.add_tpm_and_pin_protector(&keys, &mut tpm, pcrs, pin, &mut *rng)?;
            }
            if let Some(path) = &network_unlock_cert {
                let cert = certificates::files::load_certificate(path)?;
                let cert = volume::policy::NetworkUnlockCertificate::from_der(cert.der())
                    .with_context(|| format!("{}", path.display()))?;
                volume.add_network_unlock_protector(&keys, &mut tpm, pcrs, &cert, &mut *rng)?;
            }
            let password = if recovery_password {
                Some(
                    volume
                        .add_recovery_password_protector(&keys, None, iterations, &mut *rng)?
                        .1,
                )
            } else {
                None
            };
            let startup_key = match &startup_key_out {
                Some(dir) => {
                    let key = volume.add_startup_key_protector(&keys, &mut *rng)?;
                    let path = dir.join(key.file_name());
                    std::fs::write(&path, key.to_bytes())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    Some(path)
                }
                None => None,
            };
            volume.save(&image)?;
            save_tpm(&state, &tpm)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "image": image.display().to_string(),
                        "tpm_state": state.display().to_string(),
                        "recovery_password": password.as_ref().map(ToString::to_string),
                        "startup_key": startup_key.as_ref().map(|p| p.display().to_string()),
                        "protectors": volume.protector_views(Some(&keys)),
                    })
                );
            } else {
                print!(
                    "{}",
                    volume.protectors_table(&image.display().to_string(), Some(&keys))
                );
                if let Some(path) = startup_key {
                    println!("startup key written to {}", path.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        VolumeCommand::Protectors { image, json } => {
            let volume = Volume::open(&image)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&volume.protector_views(None))?
                );
            } else {
                print!(
                    "{}",
                    volume.protectors_table(&image.display().to_string(), None)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        VolumeCommand::Unlock {
            image,
            with,
            pin,
            password,
            key,
            tpm_state,
            json,
        } => {
            let volume = Volume::open(&image)?;
            let state = tpm_state_path(&image, tpm_state);
            let mut tpm = load_tpm(&state, &mut rand_core::OsRng)?;
            let password = password
                .map(|p| p.parse::<RecoveryPassword>())
                .transpose()
                .context("--password")?;
            let startup_key = match &key {
                Some(path) => Some(
                    StartupKey::from_bytes(
                        &std::fs::read(path)
                            .with_context(|| format!("cannot read {}", path.display()))?,
                    )
                    .with_context(|| format!("{}", path.display()))?,
                ),
                None => None,
            };
            let unlock_with = match with {
                ProtectorKind::Tpm => UnlockWith::Tpm,
                ProtectorKind::TpmAndPin => {
                    UnlockWith::TpmAndPin(pin.as_deref().context("--with tpm-and-pin needs --pin")?)
                }
                ProtectorKind::RecoveryPassword => UnlockWith::RecoveryPassword(
                    password
                        .as_ref()
                        .context("--with recovery-password needs --password")?,
                ),
                ProtectorKind::StartupKey => UnlockWith::StartupKey(
                    startup_key
                        .as_ref()
                        .context("--with startup-key needs --key")?,
                ),
                other => bail!(
                    "{other:?} cannot be used by hand: Network Unlock needs the server's reply \
                     (see `nulab demo` and the scenarios)"
                ),
            };
            let result = volume.unlock(&unlock_with, &mut tpm, Duration::ZERO);
            // The TPM's failure counter may have changed either way.
            save_tpm(&state, &tpm)?;
            match result {
                Ok(keys) => {
                    let label = volume.label(&keys)?;
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({ "unlocked": true, "label": label, "protectors": volume.protector_views(Some(&keys)) })
                        );
                    } else {
                        println!("unlocked: volume label {label:?}");
                        print!(
                            "{}",
                            volume.protectors_table(&image.display().to_string(), Some(&keys))
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({ "unlocked": false, "error": err.to_string() })
                        );
                    } else {
                        eprintln!("nulab: not unlocked: {err}");
                    }
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

pub fn run_recovery_password(cmd: RecoveryPasswordCommand) -> Result<ExitCode> {
    match cmd {
        RecoveryPasswordCommand::New { seed, json } => {
            let password = RecoveryPassword::generate(&mut rng(seed));
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "recovery_password": password.to_string() })
                );
            } else {
                println!("{password}");
            }
            Ok(ExitCode::SUCCESS)
        }
        RecoveryPasswordCommand::Check { password, json } => {
            match password.parse::<RecoveryPassword>() {
                Ok(parsed) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({ "valid": true, "recovery_password": parsed.to_string() })
                        );
                    } else {
                        println!("valid: {parsed}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({ "valid": false, "group": err.group(), "error": err.to_string() })
                        );
                    } else {
                        eprintln!("nulab: invalid recovery password: {err}");
                    }
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
