//! `nulab volume create|protectors|unlock` and `nulab recovery-password new|check`: build a
//! BitLocker-style volume image by hand, add protectors, and unlock it, as a teacher would show
//! with `manage-bde`. The simulated TPM lives in a state file (`IMAGE.tpm.json` by default) so
//! that it keeps its PCRs, sealed keys and failure counter between invocations; `--tpm TCTI`
//! seals to, and unlocks with, a real TPM 2.0 instead (swtpm, `/dev/tpmrm0`: feature
//! `real-tpm`), which keeps its own state. [`TpmChoice`] is the one grammar of `--tpm` for
//! `volume create`, `volume unlock` and `nulab client`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRngCore, SeedableRng};
use tpm::{PcrSelection, SimulatedTpm, Tpm};
use volume::{
    BITLOCKER_STRETCH_ITERATIONS, ProtectorKind, RecoveryPassword, StartupKey, UnlockWith, Volume,
};

use crate::args;
use crate::output::{self, errln, out, outln};

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
        /// Simulated TPM state file. Default IMAGE.tpm.json, made if missing; a file named here
        /// must exist unless --new-tpm is given
        #[arg(long)]
        tpm_state: Option<PathBuf>,
        /// Manufacture a new simulated TPM into the --tpm-state file (refuses an existing one
        /// unless --force)
        #[arg(long)]
        new_tpm: bool,
        /// Replace an existing image (and, with --new-tpm, TPM state or .BEK file)
        #[arg(long)]
        force: bool,
        /// Add a TPM-only protector (sealed to PCRs 7 and 11). With a value, the TPM every
        /// TPM-sealed protector goes to: `simulated` (the default) or a TCTI string for a real
        /// TPM 2.0 (`swtpm:host=127.0.0.1,port=2321`, `device:/dev/tpmrm0`; feature
        /// `real-tpm`). BitLocker keeps one TPM protector: with --tpm-pin it is TPM+PIN
        #[arg(long, num_args = 0..=1, default_missing_value = "simulated",
              value_name = "simulated|TCTI", value_parser = TpmChoice::parse)]
        tpm: Option<TpmChoice>,
        /// Add a TPM+PIN protector with this PIN (4 to 20 digits, see --min-pin-length)
        #[arg(long)]
        tpm_pin: Option<String>,
        /// The "minimum PIN length for startup" policy: PINs shorter than this are refused
        #[arg(long, default_value_t = MIN_PIN_DIGITS, value_parser = clap::value_parser!(u8).range(4..=20))]
        min_pin_length: u8,
        /// Add a Network (Certificate Based) protector for this certificate (.cer or PEM, or `-`
        /// for standard input)
        #[arg(long)]
        network_unlock_cert: Option<PathBuf>,
        /// Add a recovery password protector (printed)
        #[arg(long)]
        recovery_password: bool,
        /// Add a startup key protector and write its .BEK file into this folder (created if
        /// missing)
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
        /// The image, or `-` for standard input
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
        /// The startup key's .BEK file, or `-` for standard input
        #[arg(long)]
        key: Option<PathBuf>,
        /// Simulated TPM state file (default IMAGE.tpm.json); a file named here must exist
        #[arg(long)]
        tpm_state: Option<PathBuf>,
        /// The TPM the volume's TPM protectors were sealed on: `simulated` or a TCTI string
        /// (see `volume create --tpm`)
        #[arg(long, default_value = "simulated", value_name = "simulated|TCTI",
              value_parser = TpmChoice::parse)]
        tpm: TpmChoice,
        #[arg(long)]
        json: bool,
    },
}

/// The TPM a command uses: the simulated one (a state file) or a real TPM 2.0 reached by a TCTI
/// string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TpmChoice {
    Simulated,
    /// A TCTI string: `swtpm:host=..,port=..` or `device:/dev/tpmrm0`.
    Real(String),
}

impl TpmChoice {
    /// `simulated`, or a TCTI string (`KIND:CONFIG`); anything else (a file name given where
    /// `--tpm` expected its value) is refused with what was expected.
    pub fn parse(text: &str) -> Result<TpmChoice, String> {
        if text == "simulated" {
            return Ok(TpmChoice::Simulated);
        }
        match text.split_once(':') {
            Some((kind, _))
                if !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_alphanumeric()) =>
            {
                Ok(TpmChoice::Real(text.to_owned()))
            }
            _ => Err(format!(
                "`{text}`: expected `simulated` or a TCTI string such as \
                 swtpm:host=127.0.0.1,port=2321 or device:/dev/tpmrm0"
            )),
        }
    }
}

impl std::fmt::Display for TpmChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TpmChoice::Simulated => f.write_str("simulated"),
            TpmChoice::Real(tcti) => f.write_str(tcti),
        }
    }
}

/// Opens the real TPM at `tcti`.
#[cfg(feature = "real-tpm")]
pub fn real_tpm(tcti: &str) -> Result<Box<dyn Tpm>> {
    let tpm = tpm::RealTpm::connect(tcti, None)
        .with_context(|| format!("cannot open the TPM at {tcti}"))?;
    Ok(Box::new(tpm))
}

/// Without the `real-tpm` feature there is no real TPM to open: says how to get one.
#[cfg(not(feature = "real-tpm"))]
pub fn real_tpm(tcti: &str) -> Result<Box<dyn Tpm>> {
    bail!(
        "--tpm {tcti}: this nulab was built without the `real-tpm` feature; use \
         --tpm simulated, or build with `--features real-tpm`"
    )
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

/// BitLocker's startup PINs: 4 to 20 digits; a policy may raise the floor
/// (`volume::policy::MinimumPinLength`, the one rule).
pub const MIN_PIN_DIGITS: u8 = volume::policy::MinimumPinLength::FLOOR;

/// Refuses a PIN BitLocker would refuse: not all digits, or outside `min_length..=20` digits.
fn check_pin(pin: &str, min_length: u8) -> Result<()> {
    // The one rule of a startup PIN: volume::policy::MinimumPinLength.
    let policy = volume::policy::MinimumPinLength::new(min_length).map_err(anyhow::Error::msg)?;
    policy.check(pin).map_err(|refusal| {
        anyhow::anyhow!(
            "--tpm-pin: {refusal}{}",
            if min_length > MIN_PIN_DIGITS {
                " (--min-pin-length)"
            } else {
                ""
            }
        )
    })
}

/// Where the TPM state lives, and whether the user named it.
struct TpmState {
    path: PathBuf,
    named: bool,
}

fn tpm_state_path(image: &Path, given: Option<PathBuf>) -> TpmState {
    match given {
        Some(path) => TpmState { path, named: true },
        None => {
            let mut name = image.as_os_str().to_owned();
            name.push(".tpm.json");
            TpmState {
                path: PathBuf::from(name),
                named: false,
            }
        }
    }
}

/// How a missing TPM state file is treated.
#[derive(Clone, Copy, PartialEq, Eq)]
enum IfMissing {
    /// An error: the user named a file that is not there (a typo must not make a new TPM).
    Fail,
    /// Manufacture a new TPM (the default state file of a new image).
    Manufacture,
}

fn load_tpm(
    path: &Path,
    if_missing: IfMissing,
    rng: &mut dyn CryptoRngCore,
) -> Result<SimulatedTpm> {
    match std::fs::read_to_string(path) {
        Ok(text) => SimulatedTpm::from_json(&text)
            .with_context(|| format!("{}: not a simulated TPM state", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match if_missing {
            IfMissing::Manufacture => Ok(manufacture_tpm(rng)),
            IfMissing::Fail => bail!(
                "{}: no such TPM state file (check the path; `volume create --new-tpm` makes one)",
                path.display()
            ),
        },
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn manufacture_tpm(rng: &mut dyn CryptoRngCore) -> SimulatedTpm {
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    SimulatedTpm::manufacture(&mut ChaCha20Rng::from_seed(seed), Default::default())
}

fn save_tpm(path: &Path, tpm: &SimulatedTpm) -> Result<()> {
    std::fs::write(path, tpm.to_json()).with_context(|| format!("cannot write {}", path.display()))
}

/// The TPM a volume command works with, open.
enum OpenTpm {
    /// The simulated TPM and the state file it is saved to.
    Simulated {
        tpm: Box<SimulatedTpm>,
        state: PathBuf,
    },
    /// A real TPM, which keeps its own state.
    Real(Box<dyn Tpm>),
}

impl OpenTpm {
    fn as_dyn(&mut self) -> &mut dyn Tpm {
        match self {
            OpenTpm::Simulated { tpm, .. } => tpm.as_mut(),
            OpenTpm::Real(tpm) => tpm.as_mut(),
        }
    }

    /// Saves a simulated TPM's state (its PCRs, sealed keys and failure counter) and says
    /// where; a real TPM has saved its own.
    fn save(&self) -> Result<Option<PathBuf>> {
        match self {
            OpenTpm::Simulated { tpm, state } => {
                save_tpm(state, tpm)?;
                Ok(Some(state.clone()))
            }
            OpenTpm::Real(_) => Ok(None),
        }
    }
}

pub fn run_volume(cmd: VolumeCommand) -> Result<ExitCode> {
    match cmd {
        VolumeCommand::Create {
            image,
            size,
            label,
            tpm_state,
            new_tpm,
            force,
            tpm: tpm_choice,
            tpm_pin,
            min_pin_length,
            network_unlock_cert,
            recovery_password,
            startup_key_out,
            seed,
            iterations,
            json,
        } => {
            if let Some(pin) = &tpm_pin {
                check_pin(pin, min_pin_length)?;
            }
            args::refuse_overwrite(&image, force)?;
            let mut rng = rng(seed);
            let mut tpm = match tpm_choice.clone().unwrap_or(TpmChoice::Simulated) {
                TpmChoice::Real(tcti) => {
                    if tpm_state.is_some() || new_tpm {
                        bail!(
                            "--tpm {tcti} is a real TPM, which keeps its own state: \
                             --tpm-state and --new-tpm are for the simulated TPM"
                        );
                    }
                    OpenTpm::Real(real_tpm(&tcti)?)
                }
                TpmChoice::Simulated => {
                    let state = tpm_state_path(&image, tpm_state);
                    let tpm = if new_tpm {
                        args::refuse_overwrite(&state.path, force)?;
                        manufacture_tpm(&mut *rng)
                    } else if state.named {
                        load_tpm(&state.path, IfMissing::Fail, &mut *rng)?
                    } else {
                        load_tpm(&state.path, IfMissing::Manufacture, &mut *rng)?
                    };
                    OpenTpm::Simulated {
                        tpm: Box::new(tpm),
                        state: state.path,
                    }
                }
            };
            let (mut volume, keys) = Volume::create(size, &label, &mut *rng)?;
            let pcrs = PcrSelection::SECURE_BOOT;
            if tpm_choice.is_some() && tpm_pin.is_none() {
                volume.add_tpm_protector(&keys, tpm.as_dyn(), pcrs, &mut *rng)?;
            }
            if let Some(pin) = &tpm_pin {
                volume.add_tpm_and_pin_protector(&keys, tpm.as_dyn(), pcrs, pin, &mut *rng)?;
            }
            if let Some(path) = &network_unlock_cert {
                let (name, data) = crate::read_input(path)?;
                let cert = certificates::import::read(&data, None)
                    .with_context(|| name.clone())?
                    .certificate;
                let cert = volume::policy::NetworkUnlockCertificate::from_der(cert.der())
                    .with_context(|| name.clone())?;
                volume.add_network_unlock_protector(&keys, tpm.as_dyn(), pcrs, &cert, &mut *rng)?;
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
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                    let path = dir.join(key.file_name());
                    args::refuse_overwrite(&path, force)?;
                    std::fs::write(&path, key.to_bytes())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    Some(path)
                }
                None => None,
            };
            volume.save(&image)?;
            let state = tpm.save()?;
            if json {
                outln!(
                    "{}",
                    serde_json::json!({
                        "image": image.display().to_string(),
                        "tpm": tpm_choice.unwrap_or(TpmChoice::Simulated).to_string(),
                        "tpm_state": state.map(|s| s.display().to_string()),
                        "recovery_password": password.as_ref().map(ToString::to_string),
                        "startup_key": startup_key.as_ref().map(|p| p.display().to_string()),
                        "protectors": volume.protector_views(Some(&keys)),
                    })
                )?;
            } else {
                out!(
                    "{}",
                    volume.protectors_table(&image.display().to_string(), Some(&keys))
                )?;
                if let Some(path) = startup_key {
                    outln!("startup key written to {}", path.display())?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        VolumeCommand::Protectors { image, json } => {
            let (name, data) = crate::read_input(&image)?;
            let volume = Volume::from_bytes(&data).with_context(|| name.clone())?;
            if json {
                output::json(&volume.protector_views(None))?;
            } else {
                out!("{}", volume.protectors_table(&name, None))?;
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
            tpm: tpm_choice,
            json,
        } => {
            let volume = Volume::open(&image)?;
            let mut tpm = match tpm_choice {
                TpmChoice::Real(tcti) => {
                    if tpm_state.is_some() {
                        bail!("--tpm {tcti} is a real TPM: --tpm-state is for the simulated TPM");
                    }
                    OpenTpm::Real(real_tpm(&tcti)?)
                }
                TpmChoice::Simulated => {
                    let state = tpm_state_path(&image, tpm_state);
                    let if_missing = if state.named {
                        IfMissing::Fail
                    } else {
                        IfMissing::Manufacture
                    };
                    OpenTpm::Simulated {
                        tpm: Box::new(load_tpm(&state.path, if_missing, &mut rand_core::OsRng)?),
                        state: state.path,
                    }
                }
            };
            let password = password
                .map(|p| p.parse::<RecoveryPassword>())
                .transpose()
                .context("--password")?;
            let startup_key = match &key {
                Some(path) => {
                    let (name, data) = crate::read_input(path)?;
                    Some(StartupKey::from_bytes(&data).with_context(|| name)?)
                }
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
            let result = volume.unlock(&unlock_with, tpm.as_dyn(), Duration::ZERO);
            // The TPM's failure counter may have changed either way.
            tpm.save()?;
            match result {
                Ok(keys) => {
                    let label = volume.label(&keys)?;
                    if json {
                        outln!(
                            "{}",
                            serde_json::json!({ "unlocked": true, "label": label, "protectors": volume.protector_views(Some(&keys)) })
                        )?;
                    } else {
                        outln!("unlocked: volume label {label:?}")?;
                        out!(
                            "{}",
                            volume.protectors_table(&image.display().to_string(), Some(&keys))
                        )?;
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    if json {
                        outln!(
                            "{}",
                            serde_json::json!({ "unlocked": false, "error": err.to_string() })
                        )?;
                    } else {
                        errln!("nulab: not unlocked: {err}");
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
                outln!(
                    "{}",
                    serde_json::json!({ "recovery_password": password.to_string() })
                )?;
            } else {
                outln!("{password}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        RecoveryPasswordCommand::Check { password, json } => {
            match password.parse::<RecoveryPassword>() {
                Ok(parsed) => {
                    if json {
                        outln!(
                            "{}",
                            serde_json::json!({ "valid": true, "recovery_password": parsed.to_string() })
                        )?;
                    } else {
                        outln!("valid: {parsed}")?;
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    if json {
                        outln!(
                            "{}",
                            serde_json::json!({ "valid": false, "group": err.group(), "error": err.to_string() })
                        )?;
                    } else {
                        errln!("nulab: invalid recovery password: {err}");
                    }
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
