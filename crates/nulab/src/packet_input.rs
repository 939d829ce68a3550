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

/// The largest packet a hex dump may describe (a squeeze line `*` repeats bytes up to the next
/// offset: a mistyped offset must not fill memory). Far above any Ethernet frame.
const MAX_DUMP_PACKET: usize = 1 << 20;

/// Hex dumps. Each line is either plain hex (any spacing), or an offset followed by up to 16
/// byte columns (2 hex digits each, or `xxd`'s groups of 4) and an optional ASCII column. A
/// blank line, or an offset that goes back to 0, starts a new packet. In a dump with offsets,
/// `*` (`hexdump -C`, `xxd -a`) stands for the line before it repeated up to the next offset,
/// and a line holding only an offset (`hexdump`'s last line) is the length of the packet.
fn read_hex(name: &str, data: &[u8]) -> Result<Vec<InputPacket>> {
    let text = std::str::from_utf8(data).with_context(|| format!("{name}: not UTF-8 text"))?;
    let mut packets = Vec::new();
    let mut current: Option<DumpPacket> = None;
    for (number, line) in text.lines().enumerate() {
        let number = number + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            packets.extend(current.take().map(DumpPacket::finish));
            continue;
        }
        if line == "*" {
            match &mut current {
                Some(packet) if packet.with_offsets && !packet.last_line.is_empty() => {
                    packet.squeezed = true;
                }
                _ => {
                    bail!("{name}:{number}: `*` repeats a line, but no offset line comes before it")
                }
            }
            continue;
        }
        if let Some(packet) = &mut current
            && packet.with_offsets
            && let Some(end) = lone_offset(line)
        {
            packet
                .reach(end)
                .with_context(|| format!("{name}:{number}"))?;
            if end != packet.bytes.len() {
                bail!(
                    "{name}:{number}: the dump ends at offset {end:#x}, but {} bytes were read",
                    packet.bytes.len()
                );
            }
            packets.extend(current.take().map(DumpPacket::finish));
            continue;
        }
        let (offset, bytes) = parse_hex_line(line)
            .with_context(|| format!("{name}:{number}: not a hex dump line: {line:?}"))?;
        if offset == Some(0) {
            packets.extend(current.take().map(DumpPacket::finish));
        }
        if let (Some(offset), Some(packet)) = (offset, &mut current) {
            packet
                .reach(offset)
                .with_context(|| format!("{name}:{number}"))?;
            if offset != packet.bytes.len() {
                bail!(
                    "{name}:{number}: offset {offset:#x} does not follow the {} bytes read so far",
                    packet.bytes.len()
                );
            }
        }
        let packet = current.get_or_insert_with(|| DumpPacket {
            origin: format!("line {number}"),
            bytes: Vec::new(),
            with_offsets: offset.is_some(),
            last_line: Vec::new(),
            squeezed: false,
        });
        packet.bytes.extend_from_slice(&bytes);
        if packet.bytes.len() > MAX_DUMP_PACKET {
            bail!("{name}:{number}: a packet of more than {MAX_DUMP_PACKET} bytes");
        }
        packet.last_line = bytes;
    }
    if let Some(packet) = &current
        && packet.squeezed
    {
        bail!("{name}: the dump ends with `*`: the offset that ends the repeat is missing");
    }
    packets.extend(current.map(DumpPacket::finish));
    Ok(packets)
}

/// A packet being read from a hex dump.
struct DumpPacket {
    origin: String,
    bytes: Vec<u8>,
    /// Whether its lines start with offsets (only those may be squeezed).
    with_offsets: bool,
    /// The bytes of the last line read, which a `*` repeats.
    last_line: Vec<u8>,
    /// A `*` was read: the last line repeats up to the next offset.
    squeezed: bool,
}

impl DumpPacket {
    /// After a `*`, repeats the last line until the packet is `offset` bytes long.
    fn reach(&mut self, offset: usize) -> Result<()> {
        if !std::mem::take(&mut self.squeezed) {
            return Ok(());
        }
        let gap = offset.saturating_sub(self.bytes.len());
        let line = self.last_line.len();
        if gap == 0 || line == 0 || !gap.is_multiple_of(line) {
            bail!(
                "`*` repeats a {line}-byte line from offset {:#x}, which cannot reach offset {offset:#x}",
                self.bytes.len()
            );
        }
        if offset > MAX_DUMP_PACKET {
            bail!("`*` up to offset {offset:#x}: a packet of more than {MAX_DUMP_PACKET} bytes");
        }
        for _ in 0..gap / line {
            self.bytes.extend_from_slice(&self.last_line);
        }
        Ok(())
    }

    fn finish(self) -> InputPacket {
        InputPacket {
            origin: self.origin,
            bytes: self.bytes,
        }
    }
}

/// A line holding only an offset (4 to 8 hex digits, optionally with xxd's `:`).
fn lone_offset(line: &str) -> Option<usize> {
    let digits = line.trim_end_matches(':');
    let shaped = (4..=8).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_hexdigit());
    if !shaped || line.contains(char::is_whitespace) {
        return None;
    }
    usize::from_str_radix(digits, 16).ok()
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

    /// `hexdump -C` of 111 bytes whose lines 3 to 6 are zeros, squeezed into `*`, ending with
    /// the length line.
    const SQUEEZED: &str = "\
00000000  68 65 6c 6c 6f 20 77 6f  72 6c 64 20 74 68 69 73  |hello world this|
00000010  20 69 73 20 61 20 74 65  73 74 20 00 00 00 00 00  | is a test .....|
00000020  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|
*
00000060  00 00 00 00 00 00 00 00  00 00 00 74 61 69 6c     |...........tail|
0000006f
";

    #[test]
    fn hexdump_c_squeezed_lines_are_repeated() {
        let (kind, packets) = read_packets("t", SQUEEZED.as_bytes()).unwrap();
        assert_eq!(kind, InputKind::Hex);
        assert_eq!(packets.len(), 1);
        let mut expected = b"hello world this is a test ".to_vec();
        expected.resize(0x6b, 0);
        expected.extend_from_slice(b"tail");
        assert_eq!(packets[0].bytes, expected);
    }

    #[test]
    fn xxd_a_squeezed_lines_are_repeated() {
        let dump = "00000000: 0102 0304 0506 0708 090a 0b0c 0d0e 0f10  ................\n\
                    *\n\
                    00000030: ffff                                     ..\n";
        let (_, packets) = read_packets("t", dump.as_bytes()).unwrap();
        assert_eq!(packets[0].bytes.len(), 0x32);
        assert_eq!(&packets[0].bytes[0x20..0x30], &packets[0].bytes[..0x10]);
    }

    #[test]
    fn a_squeeze_that_cannot_reach_its_offset_names_the_line() {
        let dump = "0000  01 02 03\n*\n0010  04\n";
        let err = read_packets("d.hex", dump.as_bytes()).unwrap_err();
        assert!(format!("{err:#}").contains("d.hex:3"), "{err:#}");
        let err = read_packets("d.hex", b"*\n").unwrap_err();
        assert!(format!("{err:#}").contains("d.hex:1"), "{err:#}");
        let err = read_packets("d.hex", b"0000  01 02\n*\n").unwrap_err();
        assert!(format!("{err:#}").contains("ends with `*`"), "{err:#}");
    }

    #[test]
    fn a_huge_squeeze_is_refused() {
        let err = read_packets("d.hex", b"0000  01 02\n*\nfffffffe  03\n").unwrap_err();
        assert!(format!("{err:#}").contains("more than"), "{err:#}");
    }

    #[test]
    fn a_wrong_length_line_is_refused() {
        let dump = "00000000  01 02 03 04\n00000010\n";
        let err = read_packets("d.hex", dump.as_bytes()).unwrap_err();
        assert!(format!("{err:#}").contains("d.hex:2"), "{err:#}");
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

    /// `bytes` as `hexdump -C` prints them: repeated 16-byte lines squeezed into `*`, and a last
    /// line with the length.
    fn hexdump_c(bytes: &[u8]) -> String {
        let mut dump = String::new();
        let mut previous: Option<&[u8]> = None;
        let mut squeezing = false;
        for (i, line) in bytes.chunks(16).enumerate() {
            if previous == Some(line) {
                if !squeezing {
                    dump.push_str("*\n");
                    squeezing = true;
                }
                continue;
            }
            squeezing = false;
            previous = Some(line);
            let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
            let (left, right) = hex.split_at(hex.len().min(8));
            dump.push_str(&format!(
                "{:08x}  {}  {}  |{}|\n",
                i * 16,
                left.join(" "),
                right.join(" "),
                ".".repeat(line.len())
            ));
        }
        dump.push_str(&format!("{:08x}\n", bytes.len()));
        dump
    }

    proptest! {
        #[test]
        fn hexdump_c_round_trips(
            runs in proptest::collection::vec((any::<u8>(), 1usize..70), 1..8),
        ) {
            // Runs of one byte value make squeezed lines likely.
            let bytes: Vec<u8> = runs.iter().flat_map(|&(b, n)| std::iter::repeat_n(b, n)).collect();
            let dump = hexdump_c(&bytes);
            let (kind, packets) = read_packets("t", dump.as_bytes()).unwrap();
            prop_assert_eq!(kind, InputKind::Hex);
            prop_assert_eq!(packets.len(), 1, "{}", dump);
            prop_assert_eq!(&packets[0].bytes, &bytes, "{}", dump);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = read_packets("p", &data);
        }

        #[test]
        fn never_panics_on_text(text in "[0-9a-fA-F: .|*\n]{0,300}") {
            let _ = read_packets("p", text.as_bytes());
        }
    }
}
