//! A real TPM 2.0 through tss-esapi 7.7 (feature `real-tpm`): swtpm for tests and teaching, or
//! `/dev/tpmrm0` on a machine with a TPM.
//!
//! Sealing is TPM2_Create of a sealed-data (keyed-hash) object under a primary storage key
//! (ECC P-256, re-created from its template for every operation and flushed after it, so no
//! handle outlives a call), with `userWithAuth` clear so that only a policy session authorizes
//! the unseal. The policy is TPM2_PolicyPCR over the selected SHA-256 PCRs, then
//! TPM2_PolicyAuthValue when a PIN is required; its digest is computed in a trial session.
//! The sealed blob is `'R' | version | PCR bitmap u32 LE | flags | TPM2B_PUBLIC | TPM2B_PRIVATE`
//! (each with a u16 LE length).
//!
//! tss-esapi 7.7 lacks TPM2_DictionaryAttackParameters and TPM2_DictionaryAttackLockReset
//! ("Missing function" in its source), so those two commands are marshalled by hand
//! ([`raw_lockout_command`]) and sent on a separate connection: to swtpm's server port while the
//! ESAPI context is closed (swtpm serves one connection at a time), or to the device file.
//! A restart (power cycle) needs a platform: swtpm's control channel (CMD_INIT), so it is
//! available only when the control address is known.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::str::FromStr;
use std::time::Duration;

use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::{
    CapabilityType, PropertyTag, SessionType, StartupType, Tss2ResponseCodeKind,
};
use tss_esapi::handles::{KeyHandle, ObjectHandle, PcrHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Auth, CapabilityData, Digest, DigestValues, EccPoint, KeyedHashScheme, PcrSelectionList,
    PcrSelectionListBuilder, PcrSlot, Private, Public, PublicBuilder, PublicEccParametersBuilder,
    PublicKeyedHashParameters, SensitiveData, SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::{Context, Error as EsapiError, WrapperErrorKind};
use zeroize::Zeroizing;

use crate::{
    AuthValue, DictionaryAttackPolicy, LockoutStatus, PcrIndex, PcrSelection, PcrValue, SealPolicy,
    SealedBlob, Tpm, TpmError,
};

const BLOB_TAG: u8 = b'R';
/// Version 2: the primary became `noDA` (see [`create_primary`]), which changes its name and key,
/// so version-1 blobs no longer load and are refused by version instead.
const BLOB_VERSION: u8 = 2;
const FLAG_AUTH: u8 = 1;
const TPM2_CC_DA_LOCK_RESET: u32 = 0x0000_0139;
const TPM2_CC_DA_PARAMETERS: u32 = 0x0000_013A;

/// Where raw commands go when ESAPI has no call for them.
#[derive(Clone, Debug)]
enum RawTransport {
    /// swtpm's server port: the ESAPI connection must be closed first.
    Swtpm(SocketAddr),
    /// A device file (`/dev/tpmrm0`): a second open is fine.
    Device(String),
}

/// A real TPM reached through a TCTI string.
pub struct RealTpm {
    tcti: String,
    context: Option<Context>,
    raw: RawTransport,
    /// swtpm's control channel, for power cycles.
    control: Option<SocketAddr>,
}

impl RealTpm {
    /// Connects to `tcti` (`swtpm:host=127.0.0.1,port=2321` or `device:/dev/tpmrm0`);
    /// `control` is swtpm's control-channel address, which makes [`Tpm::restart`] possible.
    pub fn connect(tcti: &str, control: Option<SocketAddr>) -> Result<Self, TpmError> {
        let raw = raw_transport(tcti)?;
        let mut tpm = Self {
            tcti: tcti.to_owned(),
            context: None,
            raw,
            control,
        };
        tpm.context()?;
        Ok(tpm)
    }

    fn context(&mut self) -> Result<&mut Context, TpmError> {
        if self.context.is_none() {
            let conf = TctiNameConf::from_str(&self.tcti)
                .map_err(|e| TpmError::Device(format!("TCTI `{}`: {e}", self.tcti)))?;
            let context = Context::new(conf).map_err(|e| self.why_no_context(e))?;
            self.context = Some(context);
        }
        Ok(self.context.as_mut().expect("set just above"))
    }

    /// Why ESAPI could not open the TPM, said for people: the TSS reports a swtpm that is not
    /// listening as an unrecognised response code, so the address is tried once more here and a
    /// refused connection named as such.
    fn why_no_context(&self, error: EsapiError) -> TpmError {
        if let RawTransport::Swtpm(address) = &self.raw
            && let Err(e) = TcpStream::connect_timeout(address, Duration::from_secs(1))
        {
            return TpmError::Device(format!(
                "nothing answers at {address} ({e}): is swtpm running there?"
            ));
        }
        device(error)
    }

    /// Sends a hand-marshalled command outside ESAPI and returns its response code, sending it
    /// again while the TPM answers that it wants it again, as ESAPI does for its own commands.
    fn raw_command(&mut self, command: &[u8]) -> Result<u32, TpmError> {
        let mut rc = self.raw_command_once(command)?;
        for _ in 1..MAX_SUBMISSIONS {
            if !asks_for_resubmission(rc) {
                break;
            }
            rc = self.raw_command_once(command)?;
        }
        Ok(rc)
    }

    fn raw_command_once(&mut self, command: &[u8]) -> Result<u32, TpmError> {
        let mut response = [0u8; 10];
        match self.raw.clone() {
            RawTransport::Swtpm(address) => {
                // swtpm serves one connection at a time: close ESAPI's first.
                self.context = None;
                let mut stream = TcpStream::connect(address).map_err(io)?;
                stream.write_all(command).map_err(io)?;
                stream.read_exact(&mut response).map_err(io)?;
            }
            RawTransport::Device(path) => {
                let mut device = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(io)?;
                device.write_all(command).map_err(io)?;
                let n = device.read(&mut response).map_err(io)?;
                if n < response.len() {
                    return Err(TpmError::Device("short response from the TPM".into()));
                }
            }
        }
        Ok(u32::from_be_bytes([
            response[6],
            response[7],
            response[8],
            response[9],
        ]))
    }

    /// The dictionary-attack properties, read from the TPM now (see [`read_lockout_properties`]).
    fn lockout_properties(&mut self) -> Result<LockoutProperties, TpmError> {
        read_lockout_properties(self.context()?)
    }
}

/// TPM_PT_LOCKOUT_COUNTER and the three properties after it, as one TPM2_GetCapability returns
/// them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LockoutProperties {
    /// TPM_PT_LOCKOUT_COUNTER (`failedTries`).
    failed_tries: u32,
    /// TPM_PT_MAX_AUTH_FAIL (`maxTries`).
    max_tries: u32,
    /// TPM_PT_LOCKOUT_INTERVAL (`recoveryTime`, seconds).
    recovery_time: Duration,
}

/// Reads the dictionary-attack properties with a fresh TPM2_GetCapability.
///
/// Not `Context::get_tpm_property`: tss-esapi 7.7 keeps every property it has read in
/// `cached_tpm_properties` for the life of the context and never asks the TPM again, which is
/// right for fixed properties (TPM_PT_MANUFACTURER) and wrong for variable ones. This was the
/// "only the first wrong PIN is counted on swtpm" puzzle: with `TSS2_LOG=tcti+trace`, a run of
/// four wrong PINs with a status read after each sent exactly one
/// `TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES, TPM_PT_LOCKOUT_COUNTER, 4)` (answer: counter 1,
/// maxTries 5, recoveryTime 3600, lockoutRecovery 1), while every `TPM2_Unseal` got
/// TPM_RC_AUTH_FAIL (0x98e), which libtpms returns only after incrementing `failedTries`
/// (`IncrementLockout` in SessionProcess.c). swtpm counted every failure; we kept reading the
/// first answer. tpm2-tools never saw it because each `tpm2_getcap` is a new process.
fn read_lockout_properties(context: &mut Context) -> Result<LockoutProperties, TpmError> {
    let (data, _) = context
        .execute_without_session(|ctx| {
            ctx.get_capability(
                CapabilityType::TpmProperties,
                PropertyTag::LockoutCounter.into(),
                3,
            )
        })
        .map_err(device)?;
    let CapabilityData::TpmProperties(properties) = data else {
        return Err(TpmError::Device(
            "TPM2_GetCapability(TPM_PROPERTIES) answered another capability".into(),
        ));
    };
    let value = |tag: PropertyTag| {
        properties
            .find(tag)
            .map(|p| p.value())
            .ok_or_else(|| TpmError::Device(format!("the TPM does not report {tag:?}")))
    };
    Ok(LockoutProperties {
        failed_tries: value(PropertyTag::LockoutCounter)?,
        max_tries: value(PropertyTag::MaxAuthFail)?,
        recovery_time: Duration::from_secs(u64::from(value(PropertyTag::LockoutInterval)?)),
    })
}

/// Re-creates the storage primary (deterministic from its template and the owner seed).
///
/// The template is the TCG Provisioning Guidance SRK's (attributes 0x00030472), `noDA`
/// included: the primary's authValue is empty and known to all, so dictionary-attack protection
/// on it guards nothing, and without `noDA` every TPM2_Create and TPM2_Load under it is a use of
/// a DA-protected authValue, which a locked-out TPM refuses (TPM_RC_LOCKOUT; `CheckAuthSession`
/// in the reference code and libtpms). Seen on swtpm: during a PIN lockout even sealing and the
/// PCR-only "TPM" protector failed. With `noDA` only the sealed object, whose authValue is the
/// PIN, is subject to lockout, as on Windows.
fn create_primary(context: &mut Context) -> Result<KeyHandle, EsapiError> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_no_da(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()?;
    let public = PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()?;
    context
        .execute_with_nullauth_session(|ctx| {
            ctx.create_primary(Hierarchy::Owner, public, None, None, None, None)
        })
        .map(|result| result.key_handle)
}

fn start_session(
    context: &mut Context,
    kind: SessionType,
) -> Result<(AuthSession, PolicySession), EsapiError> {
    let session = context
        .start_auth_session(
            None,
            None,
            None,
            kind,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )?
        .ok_or(EsapiError::WrapperError(
            WrapperErrorKind::WrongValueFromTpm,
        ))?;
    Ok((session, PolicySession::try_from(session)?))
}

/// Runs TPM2_PolicyPCR (and TPM2_PolicyAuthValue) in `session`.
fn apply_policy(
    context: &mut Context,
    session: PolicySession,
    pcrs: PcrSelection,
    with_auth: bool,
) -> Result<(), EsapiError> {
    if !pcrs.is_empty() {
        context.policy_pcr(session, Digest::default(), selection_list(pcrs)?)?;
    }
    if with_auth {
        context.policy_auth_value(session)?;
    }
    Ok(())
}

fn flush(context: &mut Context, handle: ObjectHandle) {
    // Best effort: a handle the TPM already dropped (a spent session) is not an error here.
    let _ = context.flush_context(handle);
}

fn flush_session(context: &mut Context, session: AuthSession) {
    flush(context, SessionHandle::from(session).into());
}

fn policy_digest(context: &mut Context, policy: &SealPolicy) -> Result<Digest, EsapiError> {
    let (trial, trial_policy) = start_session(context, SessionType::Trial)?;
    let digest = apply_policy(context, trial_policy, policy.pcrs, policy.auth.is_some())
        .and_then(|()| context.policy_get_digest(trial_policy));
    flush_session(context, trial);
    digest
}

fn seal_object(
    context: &mut Context,
    secret: &[u8],
    policy: &SealPolicy,
) -> Result<(Public, Private), EsapiError> {
    let digest = policy_digest(context, policy)?;
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        // Only the policy session authorizes: the PIN is checked by PolicyAuthValue.
        .with_user_with_auth(false)
        .build()?;
    let public = PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_auth_policy(digest)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Digest::default())
        .build()?;
    let auth = match &policy.auth {
        Some(value) => Some(Auth::try_from(value.as_bytes().to_vec())?),
        None => None,
    };
    let data = SensitiveData::try_from(secret.to_vec())?;
    let primary = create_primary(context)?;
    let created = context.execute_with_nullauth_session(|ctx| {
        ctx.create(primary, public, auth, Some(data), None, None)
    });
    flush(context, primary.into());
    let created = created?;
    Ok((created.out_public, created.out_private))
}

fn unseal_object(
    context: &mut Context,
    pcrs: PcrSelection,
    needs_auth: bool,
    public: Public,
    private: Private,
    auth: Option<&AuthValue>,
) -> Result<Zeroizing<Vec<u8>>, EsapiError> {
    let primary = create_primary(context)?;
    let loaded = context.execute_with_nullauth_session(|ctx| ctx.load(primary, private, public));
    flush(context, primary.into());
    let object = loaded?;
    let result = (|| {
        let (session, policy) = start_session(context, SessionType::Policy)?;
        let outcome = (|| {
            apply_policy(context, policy, pcrs, needs_auth)?;
            let value = auth.map_or(Vec::new(), |a| a.as_bytes().to_vec());
            context.tr_set_auth(object.into(), Auth::try_from(value)?)?;
            context.execute_with_session(Some(session), |ctx| ctx.unseal(object.into()))
        })();
        flush_session(context, session);
        outcome.map(|data| Zeroizing::new(data.value().to_vec()))
    })();
    flush(context, object.into());
    result
}

impl Drop for RealTpm {
    fn drop(&mut self) {
        // Close the ESAPI connection before anything else (swtpm) is torn down.
        self.context = None;
    }
}

impl Tpm for RealTpm {
    fn pcr_read(&mut self, pcr: PcrIndex) -> Result<PcrValue, TpmError> {
        let list = selection_list(PcrSelection::of(&[pcr.get()])?).map_err(device)?;
        let (_, _, digests) = self.context()?.pcr_read(list).map_err(device)?;
        let digest = digests
            .value()
            .first()
            .ok_or_else(|| TpmError::Device("no PCR value returned".into()))?;
        let bytes = <[u8; 32]>::try_from(digest.value())
            .map_err(|_| TpmError::Device("a SHA-256 PCR of the wrong size".into()))?;
        Ok(PcrValue(bytes))
    }

    fn pcr_extend(&mut self, pcr: PcrIndex, digest: &[u8; 32]) -> Result<(), TpmError> {
        // ESYS_TR_PCR0..31 are the numbers 0..31.
        let handle = PcrHandle::try_from(u32::from(pcr.get())).map_err(device)?;
        let mut values = DigestValues::new();
        values.set(
            HashingAlgorithm::Sha256,
            Digest::try_from(digest.to_vec()).map_err(device)?,
        );
        self.context()?
            .execute_with_nullauth_session(|ctx| ctx.pcr_extend(handle, values))
            .map_err(device)
    }

    fn seal(&mut self, secret: &[u8], policy: &SealPolicy) -> Result<SealedBlob, TpmError> {
        crate::check_sealable(secret, policy)?;
        let (public, private) = seal_object(self.context()?, secret, policy).map_err(device)?;
        let public = public.marshall().map_err(device)?;
        let mut blob = vec![BLOB_TAG, BLOB_VERSION];
        blob.extend_from_slice(&policy.pcrs.bitmap().to_le_bytes());
        blob.push(if policy.auth.is_some() { FLAG_AUTH } else { 0 });
        for part in [public.as_slice(), private.value()] {
            let len = u16::try_from(part.len()).expect("TPM2B buffers are below 64 KiB");
            blob.extend_from_slice(&len.to_le_bytes());
            blob.extend_from_slice(part);
        }
        Ok(SealedBlob::from_bytes(blob))
    }

    fn unseal(
        &mut self,
        blob: &SealedBlob,
        auth: Option<&AuthValue>,
        _now: Duration,
    ) -> Result<Zeroizing<Vec<u8>>, TpmError> {
        let (pcrs, needs_auth, public, private) = parse_blob(blob.as_bytes())?;
        let result = unseal_object(self.context()?, pcrs, needs_auth, public, private, auth);
        match result {
            Ok(secret) => Ok(secret),
            Err(EsapiError::Tss2Error(rc)) => match rc.kind() {
                Some(Tss2ResponseCodeKind::PolicyFail) => Err(TpmError::PolicyMismatch),
                Some(Tss2ResponseCodeKind::AuthFail | Tss2ResponseCodeKind::BadAuth) => {
                    let da = self.lockout_properties()?;
                    Err(TpmError::BadAuthorization {
                        remaining: da.max_tries.saturating_sub(da.failed_tries),
                    })
                }
                Some(Tss2ResponseCodeKind::Lockout) => Err(TpmError::Lockout {
                    recovery_time: self.lockout_properties()?.recovery_time,
                }),
                _ => Err(TpmError::Device(rc.to_string())),
            },
            Err(other) => Err(device(other)),
        }
    }

    fn get_random(&mut self, len: usize) -> Result<Vec<u8>, TpmError> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            // TPM2_GetRandom returns at most one digest's worth per call.
            let chunk = (len - out.len()).min(32);
            let digest = self.context()?.get_random(chunk).map_err(device)?;
            out.extend_from_slice(digest.value());
        }
        Ok(out)
    }

    fn set_dictionary_attack_policy(
        &mut self,
        policy: DictionaryAttackPolicy,
    ) -> Result<(), TpmError> {
        let recovery = u32::try_from(policy.recovery_time.as_secs()).unwrap_or(u32::MAX);
        let mut params = Vec::with_capacity(12);
        params.extend_from_slice(&policy.max_tries.to_be_bytes());
        params.extend_from_slice(&recovery.to_be_bytes());
        // lockoutRecovery: 1 s, so a mistyped lockout password heals fast in a lab.
        params.extend_from_slice(&1u32.to_be_bytes());
        let rc = self.raw_command(&raw_lockout_command(TPM2_CC_DA_PARAMETERS, &params))?;
        check_rc("TPM2_DictionaryAttackParameters", rc)?;
        self.reset_lockout()
    }

    fn lockout_status(&mut self, _now: Duration) -> Result<LockoutStatus, TpmError> {
        let da = self.lockout_properties()?;
        Ok(LockoutStatus {
            failed_tries: da.failed_tries,
            max_tries: da.max_tries,
            recovery_time: da.recovery_time,
            locked_out: da.failed_tries >= da.max_tries,
        })
    }

    fn reset_lockout(&mut self) -> Result<(), TpmError> {
        let rc = self.raw_command(&raw_lockout_command(TPM2_CC_DA_LOCK_RESET, &[]))?;
        check_rc("TPM2_DictionaryAttackLockReset", rc)
    }

    fn restart(&mut self, _now: Duration) -> Result<(), TpmError> {
        let Some(control) = self.control else {
            return Err(TpmError::RestartUnsupported);
        };
        // An orderly shutdown first, as an OS does: otherwise the TPM counts the power loss as
        // a possible attack and adds a dictionary-attack failure.
        self.context()?
            .shutdown(StartupType::Clear)
            .map_err(device)?;
        self.context = None;
        let mut stream = TcpStream::connect(control).map_err(io)?;
        // swtpm control channel: CMD_INIT (2) with init flags 0; the answer is a TPM_RESULT.
        stream.write_all(&[0, 0, 0, 2, 0, 0, 0, 0]).map_err(io)?;
        let mut result = [0u8; 4];
        stream.read_exact(&mut result).map_err(io)?;
        // swtpm accepts no new data connection while a control connection is open.
        drop(stream);
        check_rc("swtpm CMD_INIT", u32::from_be_bytes(result))?;
        self.context()?.startup(StartupType::Clear).map_err(device)
    }
}

/// How often a hand-marshalled command is sent in all (ESAPI's `_ESYS_MAX_SUBMISSIONS`).
const MAX_SUBMISSIONS: usize = 5;

/// TPM_RC_RETRY, TPM_RC_YIELDED and TPM_RC_TESTING: warnings (TPM 2.0 Part 2, 6.6.3) after
/// which the same command may simply be sent again. libtpms answers TPM_RC_RETRY to the first
/// use of a DA-protected authorization after a startup (`USE_DA_USED`: it first records in NV
/// that DA was used); ESAPI resubmits on its own, the raw commands must do it themselves.
fn asks_for_resubmission(rc: u32) -> bool {
    matches!(rc, 0x0000_0922 | 0x0000_0908 | 0x0000_090A)
}

/// A command authorized by the lockout hierarchy with an empty password (TPM_RS_PW):
/// `tag TPM_ST_SESSIONS | size | command code | TPM_RH_LOCKOUT | auth area (9 bytes) | params`,
/// big-endian, as TPM 2.0 Part 3 lays it out.
fn raw_lockout_command(code: u32, params: &[u8]) -> Vec<u8> {
    let mut command = Vec::with_capacity(27 + params.len());
    command.extend_from_slice(&0x8002u16.to_be_bytes());
    let size = u32::try_from(27 + params.len()).expect("a dozen bytes of parameters");
    command.extend_from_slice(&size.to_be_bytes());
    command.extend_from_slice(&code.to_be_bytes());
    command.extend_from_slice(&0x4000_000Au32.to_be_bytes()); // TPM_RH_LOCKOUT
    command.extend_from_slice(&9u32.to_be_bytes()); // authorization area size
    command.extend_from_slice(&0x4000_0009u32.to_be_bytes()); // TPM_RS_PW
    command.extend_from_slice(&0u16.to_be_bytes()); // nonce: empty
    command.push(0); // session attributes
    command.extend_from_slice(&0u16.to_be_bytes()); // password: empty
    command.extend_from_slice(params);
    command
}

fn check_rc(what: &str, rc: u32) -> Result<(), TpmError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(TpmError::Device(format!("{what} returned 0x{rc:08x}")))
    }
}

fn parse_blob(bytes: &[u8]) -> Result<(PcrSelection, bool, Public, Private), TpmError> {
    let header = bytes.get(..7).ok_or(TpmError::InvalidBlob("too short"))?;
    if header[0] != BLOB_TAG {
        return Err(TpmError::InvalidBlob("sealed by another kind of TPM"));
    }
    if header[1] != BLOB_VERSION {
        return Err(TpmError::InvalidBlob("unknown version"));
    }
    let pcrs = PcrSelection::from_bitmap(u32::from_le_bytes([
        header[2], header[3], header[4], header[5],
    ]))
    .map_err(|_| TpmError::InvalidBlob("PCR selection out of range"))?;
    let needs_auth = header[6] & FLAG_AUTH != 0;
    let mut rest = &bytes[7..];
    let mut part = || -> Result<Vec<u8>, TpmError> {
        let len = rest.get(..2).ok_or(TpmError::InvalidBlob("truncated"))?;
        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        let body = rest
            .get(2..2 + len)
            .ok_or(TpmError::InvalidBlob("truncated"))?
            .to_vec();
        rest = &rest[2 + len..];
        Ok(body)
    };
    let public = Public::unmarshall(&part()?).map_err(|_| TpmError::InvalidBlob("TPM2B_PUBLIC"))?;
    let private = Private::try_from(part()?).map_err(|_| TpmError::InvalidBlob("TPM2B_PRIVATE"))?;
    Ok((pcrs, needs_auth, public, private))
}

fn selection_list(pcrs: PcrSelection) -> Result<PcrSelectionList, EsapiError> {
    let slots: Vec<PcrSlot> = pcrs
        .iter()
        .map(|p| PcrSlot::try_from(1u32 << p.get()))
        .collect::<Result<_, _>>()?;
    PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
}

fn raw_transport(tcti: &str) -> Result<RawTransport, TpmError> {
    if let Some(config) = tcti.strip_prefix("swtpm:") {
        let mut host = "127.0.0.1".to_owned();
        let mut port = 2321u16;
        for pair in config.split(',').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("host", value)) => value.clone_into(&mut host),
                Some(("port", value)) => {
                    port = value
                        .parse()
                        .map_err(|_| TpmError::Device(format!("TCTI `{tcti}`: bad port")))?;
                }
                _ => return Err(TpmError::Device(format!("TCTI `{tcti}`: `{pair}`?"))),
            }
        }
        let address = format!("{host}:{port}")
            .parse()
            .map_err(|_| TpmError::Device(format!("TCTI `{tcti}`: host must be an IP address")))?;
        return Ok(RawTransport::Swtpm(address));
    }
    if let Some(path) = tcti.strip_prefix("device:") {
        return Ok(RawTransport::Device(path.to_owned()));
    }
    Err(TpmError::Device(format!(
        "TCTI `{tcti}`: nulab speaks to `swtpm:host=..,port=..` or `device:/dev/tpmrm0`"
    )))
}

fn device(error: EsapiError) -> TpmError {
    TpmError::Device(error.to_string())
}

fn io(error: std::io::Error) -> TpmError {
    TpmError::Device(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_reset_command_is_marshalled_as_part_3_says() {
        let command = raw_lockout_command(TPM2_CC_DA_LOCK_RESET, &[]);
        assert_eq!(
            hex::encode(command),
            "80020000001b000001394000000a00000009400000090000000000"
        );
    }

    #[test]
    fn only_the_try_again_warnings_resubmit() {
        for rc in [0x922, 0x908, 0x90a] {
            assert!(asks_for_resubmission(rc), "0x{rc:03x}");
        }
        // Success, TPM_RC_LOCKOUT, TPM_RC_NV_RATE, TPM_RC_AUTH_FAIL in session 1.
        for rc in [0, 0x921, 0x920, 0x98e] {
            assert!(!asks_for_resubmission(rc), "0x{rc:03x}");
        }
    }

    #[test]
    fn tcti_strings_name_the_raw_transport() {
        assert!(matches!(
            raw_transport("swtpm:host=127.0.0.1,port=4000"),
            Ok(RawTransport::Swtpm(a)) if a.port() == 4000
        ));
        assert!(matches!(
            raw_transport("device:/dev/tpmrm0"),
            Ok(RawTransport::Device(_))
        ));
        assert!(raw_transport("mssim:").is_err());
    }

    #[test]
    fn a_swtpm_that_is_not_listening_is_named_as_such() {
        // A port on loopback nothing listens on: bind one, then let it go.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = probe.local_addr().expect("address").port();
        drop(probe);
        let err = RealTpm::connect(&format!("swtpm:host=127.0.0.1,port={port}"), None)
            .err()
            .expect("nothing to connect to");
        assert!(err.to_string().contains("is swtpm running there?"), "{err}");
    }

    #[test]
    fn foreign_blobs_are_refused_before_the_tpm_sees_them() {
        assert!(matches!(
            parse_blob(b"S\x01"),
            Err(TpmError::InvalidBlob(_))
        ));
        assert!(matches!(
            parse_blob(b"R\x02\x80\x00\x00\x00\x00\xff\xff"),
            Err(TpmError::InvalidBlob(_))
        ));
        assert_eq!(
            parse_blob(b"R\x01\x80\x00\x00\x00\x00\x00\x00"),
            Err(TpmError::InvalidBlob("unknown version")),
            "blobs sealed under the old, DA-protected primary"
        );
    }
}
