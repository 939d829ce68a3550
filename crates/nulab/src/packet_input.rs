//! Reading packets from what an admin has at hand: a pcap or pcapng file, a hex dump (plain hex,
//! or Wireshark / `xxd` / `hexdump -C` style with offsets), or raw bytes.
//!
//! The result is a list of byte strings, one per packet; [`nkpu::frame::locate`] then finds the
//! DHCP payload whatever layer each starts at (Ethernet, IP or bare DHCP).

use std::io::Cursor;

use anyhow::{Context, Result, bail};
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};

/// One packet read from the input, with where it came from for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputPacket {
    /// `packet 3` of a capture, or `line 12` of a hex dump.
    pub origin: String,
    pub bytes: Vec<u8>,
}

/// What the input was recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Pcap,
    PcapNg,
    Hex,
    Raw,
}

/// Splits `data` (named `name` in messages) into packets.
pub fn read_packets(name: &str, data: &[u8]) -> Result<(InputKind, Vec<InputPacket>)> {
    if data.is_empty() {
        bail!("{name}: empty input");
    }
    let magic = data.get(..4).unwrap_or_default();
    let packets = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0xc3, 0xd4]
        | [0x4d, 0x3c, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0x3c, 0x4d] => (InputKind::Pcap, read_pcap(name, data)?),
        [0x0a, 0x0d, 0x0d, 0x0a] => (InputKind::PcapNg, read_pcapng(name, data)?),
        _ if looks_like_text(data) => (InputKind::Hex, read_hex(name, data)?),
        _ => (
            InputKind::Raw,
            vec![InputPacket {
                origin: "raw bytes".into(),
                bytes: data.to_vec(),
            }],
        ),
    };
    if packets.1.is_empty() {
        bail!("{name}: no packets found");
    }
    Ok(packets)
}

fn read_pcap(name: &str, data: &[u8]) -> Result<Vec<InputPacket>> {
    let mut reader =
        PcapReader::new(Cursor::new(data)).with_context(|| format!("{name}: bad pcap header"))?;
    let mut packets = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let index = packets.len() + 1;
        let packet = packet.with_context(|| format!("{name}: pcap packet {index} is damaged"))?;
        packets.push(InputPacket {
            origin: format!("packet {index}"),
            bytes: packet.data.into_owned(),
        });
    }
    Ok(packets)
}

fn read_pcapng(name: &str, data: &[u8]) -> Result<Vec<InputPacket>> {
    let mut reader = PcapNgReader::new(Cursor::new(data))
        .with_context(|| format!("{name}: bad pcapng section header"))?;
    let mut packets = Vec::new();
    let mut block_index = 0;
    while let Some(block) = reader.next_block() {
        block_index += 1;
        let block =
            block.with_context(|| format!("{name}: pcapng block {block_index} is damaged"))?;
        let bytes = match block {
            Block::EnhancedPacket(epb) => epb.data.into_owned(),
            Block::SimplePacket(spb) => spb.data.into_owned(),
            Block::Packet(pb) => pb.data.into_owned(),
            _ => continue,
        };
        packets.push(InputPacket {
            origin: format!("packet {}", packets.len() + 1),
            bytes,
        });
    }
    Ok(packets)
}

fn looks_like_text(data: &[u8]) -> bool {
    data.iter()
        .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace())
}

/// Hex dumps. Each line is either plain hex (any spacing), or an offset followed by up to 16
/// byte columns (2 hex digits each, or `xxd`'s groups of 4) and an optional ASCII column. A
/// blank line, or an offset that goes back to 0, starts a new packet.
fn read_hex(name: &str, data: &[u8]) -> Result<Vec<InputPacket>> {
    let text = std::str::from_utf8(data).with_context(|| format!("{name}: not UTF-8 text"))?;
    let mut packets = Vec::new();
    let mut current: Option<InputPacket> = None;
    for (number, line) in text.lines().enumerate() {
        let number = number + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            packets.extend(current.take());
            continue;
        }
        let (offset, bytes) = parse_hex_line(line)
            .with_context(|| format!("{name}:{number}: not a hex dump line: {line:?}"))?;
        if offset == Some(0) {
            packets.extend(current.take());
        }
        if let (Some(offset), Some(packet)) = (offset, &current)
            && offset != packet.bytes.len()
        {
            bail!(
                "{name}:{number}: offset {offset:#x} does not follow the {} bytes read so far",
                packet.bytes.len()
            );
        }
        current
            .get_or_insert_with(|| InputPacket {
                origin: format!("line {number}"),
                bytes: Vec::new(),
            })
            .bytes
            .extend(bytes);
    }
    packets.extend(current);
    Ok(packets)
}

/// One hex dump line: its offset (if it has one) and its bytes.
fn parse_hex_line(line: &str) -> Option<(Option<usize>, Vec<u8>)> {
    let compact: String = line.split_whitespace().collect();
    let is_plain = compact.len().is_multiple_of(2)
        && compact.bytes().all(|b| b.is_ascii_hexdigit())
        && !has_offset_column(line);
    if is_plain {
        return Some((None, hex::decode(compact).ok()?));
    }
    let mut tokens = line.split_whitespace();
    let offset_token = tokens.next()?.trim_end_matches(':');
    let offset = usize::from_str_radix(offset_token, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for token in tokens {
        let is_hex = token.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hex || !(token.len() == 2 || token.len() == 4) || bytes.len() >= 16 {
            break;
        }
        bytes.extend(hex::decode(token).ok()?);
    }
    (!bytes.is_empty()).then_some((Some(offset), bytes))
}

/// Offsets are 4 to 8 hex digits followed by `:` (xxd) or by two or more spaces (Wireshark,
/// hexdump -C), while plain hex has no such first column.
fn has_offset_column(line: &str) -> bool {
    let Some(first) = line.split_whitespace().next() else {
        return false;
    };
    let digits = first.trim_end_matches(':');
    let is_offset_shaped =
        (4..=8).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_hexdigit());
    is_offset_shaped && (first.ends_with(':') || line[first.len()..].starts_with("  "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_hex_in_one_or_many_lines() {
        let (kind, packets) = read_packets("t", b"ffff 0016\n3e01\n").unwrap();
        assert_eq!(kind, InputKind::Hex);
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0].bytes, [0xff, 0xff, 0x00, 0x16, 0x3e, 0x01]);
    }

    #[test]
    fn wireshark_style_with_offsets_and_ascii() {
        let dump = "0000   ff ff ff ff ff ff 00 16 3e 01 11 22 08 00 45 00   ........>..\"..E.\n\
                    0010   02 73                                             .s\n";
        let (_, packets) = read_packets("t", dump.as_bytes()).unwrap();
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0].bytes.len(), 18);
        assert_eq!(&packets[0].bytes[16..], &[0x02, 0x73]);
    }

    #[test]
    fn xxd_style_groups_and_several_packets() {
        let dump = "00000000: ffff ffff ffff 0016 3e01 1122 0800 4500  ..........\n\
                    \n\
                    00000000: 0102 0304                                ....\n";
        let (_, packets) = read_packets("t", dump.as_bytes()).unwrap();
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[0].bytes.len(), 16);
        assert_eq!(packets[1].bytes, [1, 2, 3, 4]);
    }

    #[test]
    fn a_gap_in_the_offsets_names_the_line() {
        let dump = "0000  01 02\n0010  03 04\n";
        let err = read_packets("dump.txt", dump.as_bytes()).unwrap_err();
        assert!(format!("{err:#}").contains("dump.txt:2"), "{err:#}");
    }

    #[test]
    fn garbage_text_names_the_line() {
        let err = read_packets("x.hex", b"ffff\nhello world\n").unwrap_err();
        assert!(format!("{err:#}").contains("x.hex:2"), "{err:#}");
    }

    #[test]
    fn binary_that_is_not_a_capture_is_raw() {
        let (kind, packets) = read_packets("t", &[0x01, 0x00, 0xff, 0x80]).unwrap();
        assert_eq!(kind, InputKind::Raw);
        assert_eq!(packets[0].bytes, [0x01, 0x00, 0xff, 0x80]);
    }

    #[test]
    fn a_damaged_pcap_is_an_error_not_a_panic() {
        let mut pcap = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/windows-captures/windows10-nkpu-request-v4.pcap"
        ))
        .unwrap();
        pcap.truncate(50);
        assert!(read_packets("t.pcap", &pcap).is_err());
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = read_packets("p", &data);
        }

        #[test]
        fn never_panics_on_text(text in "[0-9a-fA-F: .|\n]{0,300}") {
            let _ = read_packets("p", text.as_bytes());
        }
    }
}
