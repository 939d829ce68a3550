//! Sub-options inside a vendor option: read in a fixed order with fixed lengths, or written.
//!
//! DHCPv4 option 43 and option 125 use one-byte sub-option codes and lengths; DHCPv6 option 17
//! uses two-byte ones (PROTOCOL.md). Network Unlock fixes both the order and the lengths, so the
//! reader checks a list of expectations rather than building a map.

use crate::DecodeError;

/// The width of a sub-option's code and length fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Width {
    /// One-byte code, one-byte length (DHCPv4).
    One,
    /// Two-byte code, two-byte length, big-endian (DHCPv6).
    Two,
}

impl Width {
    fn header_len(self) -> usize {
        match self {
            Width::One => 2,
            Width::Two => 4,
        }
    }
}

/// Reads the sub-options `expected` = [(code, length)] in that order from `data`, which must
/// hold exactly those; returns their bodies.
pub(crate) fn read_exact<const N: usize>(
    option: u16,
    width: Width,
    data: &[u8],
    expected: [(u16, usize); N],
) -> Result<[&[u8]; N], DecodeError> {
    let mut bodies: [&[u8]; N] = [&[]; N];
    let mut rest = data;
    for (slot, (want_code, want_len)) in bodies.iter_mut().zip(expected) {
        let header_len = width.header_len();
        if rest.len() < header_len {
            return Err(DecodeError::SubOptionTruncated { option });
        }
        let (code, len) = match width {
            Width::One => (u16::from(rest[0]), usize::from(rest[1])),
            Width::Two => (
                u16::from_be_bytes([rest[0], rest[1]]),
                usize::from(u16::from_be_bytes([rest[2], rest[3]])),
            ),
        };
        if code != want_code {
            return Err(DecodeError::SubOptionOrder {
                option,
                expected: want_code,
                found: code,
            });
        }
        if len != want_len {
            return Err(DecodeError::SubOptionLength {
                option,
                sub: code,
                expected: want_len,
                found: len,
            });
        }
        let body = &rest[header_len..];
        if body.len() < len {
            return Err(DecodeError::SubOptionTruncated { option });
        }
        *slot = &body[..len];
        rest = &body[len..];
    }
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            option,
            count: rest.len(),
        });
    }
    Ok(bodies)
}

/// Appends one sub-option. Lengths are bounded by the protocol's fixed sizes (at most 256).
pub(crate) fn write(out: &mut Vec<u8>, width: Width, code: u16, body: &[u8]) {
    match width {
        Width::One => {
            out.push(u8::try_from(code).expect("DHCPv4 sub-option codes are one byte"));
            out.push(u8::try_from(body.len()).expect("DHCPv4 sub-options hold at most 255 bytes"));
        }
        Width::Two => {
            out.extend_from_slice(&code.to_be_bytes());
            out.extend_from_slice(
                &u16::try_from(body.len())
                    .expect("DHCPv6 sub-options hold at most 65535 bytes")
                    .to_be_bytes(),
            );
        }
    }
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_in_order_and_checks_every_length() {
        let data = [1, 2, 0xaa, 0xbb, 2, 1, 0xcc];
        let [a, b] = read_exact(43, Width::One, &data, [(1, 2), (2, 1)]).unwrap();
        assert_eq!((a, b), (&[0xaa, 0xbb][..], &[0xcc][..]));
        assert_eq!(
            read_exact(43, Width::One, &data, [(2, 1), (1, 2)]),
            Err(DecodeError::SubOptionOrder {
                option: 43,
                expected: 2,
                found: 1
            })
        );
        assert_eq!(
            read_exact(43, Width::One, &data, [(1, 3), (2, 1)]),
            Err(DecodeError::SubOptionLength {
                option: 43,
                sub: 1,
                expected: 3,
                found: 2
            })
        );
        assert_eq!(
            read_exact(43, Width::One, &data[..6], [(1, 2), (2, 1)]),
            Err(DecodeError::SubOptionTruncated { option: 43 })
        );
        assert_eq!(
            read_exact(43, Width::One, &data, [(1, 2)]),
            Err(DecodeError::TrailingBytes {
                option: 43,
                count: 3
            })
        );
    }

    #[test]
    fn two_byte_headers_round_trip() {
        let mut out = Vec::new();
        write(&mut out, Width::Two, 2, &[9; 60]);
        assert_eq!(&out[..4], &[0, 2, 0, 60]);
        let [body] = read_exact(17, Width::Two, &out, [(2, 60)]).unwrap();
        assert_eq!(body, &[9; 60][..]);
    }
}
