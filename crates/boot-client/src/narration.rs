//! The boot told as sentences: one line per [`BootEvent`] with the seed's phase (`[phase 1]` to
//! `[phase 9]`, `[fallback]`, `[unlocked]`) and the values the boot core computed (key
//! fingerprints, leases, reasons), never recomputed. This is the one wording of the boot: the
//! simulator's transcript (`scenario::views`) and `nulab client` on real interfaces both tell
//! the boot's events with [`Narrator::narrate`], and phase 9 with [`phase_9`]. What differs
//! between them is only what the reader has elsewhere: the interface names of real adapters,
//! and the certificate's full thumbprint where no setup section shows it.

use crate::boot::{BootEvent, BootTrigger, Released};
use crate::exchange::ExchangeEvent;
use dhcp::ClientEvent;
use volume::ProtectorKind;

/// How an event rates, as BitLocker's event log would have it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Information,
    Warning,
}

impl Level {
    /// `Information` or `Warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Information => "Information",
            Level::Warning => "Warning",
        }
    }
}

/// One event told: its level, the adapter (firmware index) it is about, and the sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Narration {
    pub level: Level,
    pub adapter: Option<usize>,
    pub text: String,
}

/// What the teller knows that the events do not carry.
#[derive(Clone, Copy, Debug, Default)]
pub struct Narrator<'a> {
    /// The adapters' interface names in firmware order: an adapter is told as `adapter 1
    /// (eth0)`; without a name, as `adapter 1`.
    pub adapter_names: &'a [String],
    /// Tell the certificate's whole thumbprint (where nothing else shows it), not its first
    /// eight hex digits.
    pub full_thumbprint: bool,
}

impl Narrator<'_> {
    /// `adapter N`, or `adapter N (NAME)` when the adapter's name is known.
    fn adapter(&self, index: usize) -> String {
        match self.adapter_names.get(index) {
            Some(name) => format!("adapter {} ({name})", index + 1),
            None => format!("adapter {}", index + 1),
        }
    }

    /// One boot event as a sentence with its phase; `None` for an event not worth a line
    /// (a DHCP client's internal step such as a retransmission timer).
    pub fn narrate(&self, event: &BootEvent) -> Option<Narration> {
        use Level::{Information as Info, Warning as Warn};
        let (level, adapter, text) = match event {
            BootEvent::ProtectorsFound {
                protectors,
                trigger,
                ..
            } => (
                Info,
                None,
                format!(
                    "[phase 1] {}the boot manager finds the protectors: {}",
                    match trigger {
                        BootTrigger::PowerOn => String::new(),
                        other => format!("{other}: "),
                    },
                    protectors
                        .iter()
                        .map(|p| p.manage_bde_name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            BootEvent::NetworkUnlockReady {
                thumbprint,
                released,
                ..
            } => {
                let Released {
                    intermediate_key,
                    key_protector,
                    session_key,
                    ..
                } = &**released;
                let thumbprint = thumbprint.to_string();
                let thumbprint = if self.full_thumbprint {
                    thumbprint
                } else {
                    format!("{}…", thumbprint.chars().take(8).collect::<String>())
                };
                (
                    Info,
                    None,
                    format!(
                        "[phase 1] the TPM releases the Network Unlock secrets (PCR 7 as sealed): the intermediate key {intermediate_key}, the pre-computed key protector {key_protector} for certificate {thumbprint} and the session key SK {session_key}"
                    ),
                )
            }
            BootEvent::NetworkUnlockSkipped { reason, .. } => (
                Warn,
                None,
                format!("[phase 1] Network Unlock is skipped: {reason}"),
            ),
            BootEvent::Dhcp { adapter, event, .. } => {
                let name = self.adapter(*adapter);
                let (level, text) = match event {
                    ClientEvent::Sent { kind, attempt } => (
                        Info,
                        format!("[phase 2] {name} sends {kind} (attempt {attempt})"),
                    ),
                    ClientEvent::Offered { server, address } => (
                        Info,
                        format!("[phase 2] {name} takes the offer of {address} from {server}"),
                    ),
                    ClientEvent::Bound(lease) => (
                        Info,
                        format!(
                            "[phase 2] {name} is bound to {} (DHCP server {})",
                            lease.network(),
                            lease.server_id
                        ),
                    ),
                    ClientEvent::Failed(failure) => {
                        (Warn, format!("[phase 2] {name}: DHCP fails: {failure}"))
                    }
                    _ => return None,
                };
                (level, Some(*adapter), text)
            }
            BootEvent::EnumerationStopped {
                adapter, reason, ..
            } => (Warn, Some(*adapter), format!("[phase 2] {reason}")),
            BootEvent::Exchange { adapter, event, .. } => {
                let (level, text) = match event {
                    ExchangeEvent::Sent {
                        transport, attempt, ..
                    } => (
                        Info,
                        format!(
                            "[phase 3] {} broadcasts the Network Unlock request over {transport} (attempt {attempt}): CK and SK under the certificate's RSA-2048 key",
                            self.adapter(*adapter)
                        ),
                    ),
                    ExchangeEvent::Ignored { why, .. } => {
                        (Info, format!("[phase 6] ignores a reply: {why}"))
                    }
                    ExchangeEvent::TransportFailed {
                        transport, failure, ..
                    } => (Warn, format!("[phase 3] {transport} gives up: {failure}")),
                    ExchangeEvent::Unlocked { transport, .. } => (
                        Info,
                        format!(
                            "[phase 6] the reply over {transport} verifies under SK: the network key is back"
                        ),
                    ),
                };
                (level, Some(*adapter), text)
            }
            BootEvent::NoUnlockOnAdapter {
                adapter, reason, ..
            } => (
                Warn,
                Some(*adapter),
                format!(
                    "[phase 3] no unlock on this adapter ({reason}); any further adapter is tried next"
                ),
            ),
            BootEvent::KeysCombined {
                network_key,
                combined_key,
                ..
            } => (
                Info,
                None,
                format!(
                    "[phase 7] network key CK {network_key} combined with the TPM's local intermediate key (SHA-256 of the two: nulab's model): {combined_key}"
                ),
            ),
            BootEvent::ProtectorFailed(failure) => (
                Warn,
                None,
                format!(
                    "[fallback] {} does not unlock: {}",
                    failure.protector.manage_bde_name(),
                    failure.reason
                ),
            ),
            BootEvent::PromptShown { prompt, .. } => {
                (Info, None, format!("[fallback] shows {prompt}"))
            }
            BootEvent::Typed { prompt, what, .. } => (
                Info,
                None,
                format!("[fallback] the user types {what} at {prompt}"),
            ),
            BootEvent::Unlocked {
                protector,
                volume_master_key,
                disk_key,
                ..
            } => (
                Info,
                None,
                if *protector == ProtectorKind::NetworkUnlock {
                    format!(
                        "[phase 8] the combined key unwraps the volume master key ({volume_master_key}), which unwraps the disk key ({disk_key}); the data decrypts"
                    )
                } else {
                    format!(
                        "[unlocked] {} unwraps the volume master key; the data decrypts",
                        protector.manage_bde_name()
                    )
                },
            ),
        };
        Some(Narration {
            level,
            adapter,
            text,
        })
    }
}

/// Phase 9, once the volume unlocked: Windows boots on, and the label the boot service read
/// from the decrypted volume's sector 0 shows the data decrypts.
pub fn phase_9(label: &str) -> String {
    format!(
        "[phase 9] Windows continues the boot sequence (volume label {label:?} read from decrypted sector 0)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ready() -> BootEvent {
        BootEvent::NetworkUnlockReady {
            at: Duration::ZERO,
            thumbprint: nkpu::Thumbprint::from_bytes([0xab; 20]),
            released: Box::new(Released {
                intermediate_key: "sha256:1111".into(),
                key_protector: "sha256:2222".into(),
                session_key: "sha256:3333".into(),
                key_log: "".into(),
            }),
        }
    }

    #[test]
    fn the_thumbprint_is_short_unless_told_in_full() {
        let short = Narrator::default().narrate(&ready()).map(|n| n.text);
        let short = short.unwrap_or_default();
        assert!(short.contains("for certificate abababab… and"), "{short}");
        let names = [];
        let full = Narrator {
            adapter_names: &names,
            full_thumbprint: true,
        }
        .narrate(&ready())
        .map(|n| n.text)
        .unwrap_or_default();
        assert!(full.contains(&format!("for certificate {} and", "ab".repeat(20))));
        assert!(full.contains("session key SK sha256:3333"));
    }

    #[test]
    fn adapters_are_named_when_their_names_are_known() {
        let event = BootEvent::EnumerationStopped {
            at: Duration::ZERO,
            adapter: 1,
            reason: "r".into(),
        };
        let told = Narrator::default().narrate(&event);
        assert_eq!(
            told,
            Some(Narration {
                level: Level::Warning,
                adapter: Some(1),
                text: "[phase 2] r".into()
            })
        );
        let sent = BootEvent::Exchange {
            at: Duration::ZERO,
            adapter: 1,
            event: ExchangeEvent::Sent {
                at: Duration::ZERO,
                transport: crate::exchange::Transport::DhcpV4,
                attempt: 1,
            },
        };
        let names = ["eth0".to_string(), "eth1".to_string()];
        let named = Narrator {
            adapter_names: &names,
            full_thumbprint: false,
        };
        let text = named.narrate(&sent).map(|n| n.text).unwrap_or_default();
        assert!(
            text.starts_with("[phase 3] adapter 2 (eth1) broadcasts"),
            "{text}"
        );
        let text = Narrator::default()
            .narrate(&sent)
            .map(|n| n.text)
            .unwrap_or_default();
        assert!(text.starts_with("[phase 3] adapter 2 broadcasts"), "{text}");
    }

    #[test]
    fn phase_9_quotes_the_label() {
        assert_eq!(
            phase_9("NET\"LAB"),
            "[phase 9] Windows continues the boot sequence (volume label \"NET\\\"LAB\" read from decrypted sector 0)"
        );
    }
}
