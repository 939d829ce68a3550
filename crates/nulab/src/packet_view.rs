//! What `nulab packet decode` shows of one packet: the layers around it, every DHCP field and
//! option, and the Network Unlock parts decoded. One serializable view, printed as text or as a
//! JSON line.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use nkpu::frame::{self, Family, Located};
use nkpu::{Message, options};
use serde::Serialize;

/// The whole view of one packet.
#[derive(Debug, Serialize)]
pub struct PacketView {
    pub index: usize,
    pub origin: String,
    pub family: &'static str,
    /// `ethernet`, `ip` or `bare`.
    pub layer: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ethernet: Option<EthernetView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp: Option<UdpView>,
    pub dhcp: DhcpView,
    /// The Network Unlock parts, when the message is one.
    pub nkpu: Option<NkpuView>,
    /// Why the message is not a (well-formed) Network Unlock message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nkpu_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EthernetView {
    pub source: String,
    pub destination: String,
}

#[derive(Debug, Serialize)]
pub struct UdpView {
    pub source: String,
    pub destination: String,
}

/// Every DHCP header field and option.
#[derive(Debug, Serialize)]
pub struct DhcpView {
    /// Header fields in wire order, as (name, value) pairs rendered as text.
    pub header: Vec<(String, String)>,
    pub options: Vec<OptionView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct OptionView {
    pub code: u16,
    pub name: &'static str,
    pub length: usize,
    /// A readable value for the options nulab knows (addresses, times, strings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub hex: String,
}

#[derive(Debug, Serialize)]
pub struct NkpuView {
    /// `request` or `reply`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_protector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
}

/// Why a packet holds no DHCP message.
#[derive(Debug)]
pub enum NotDhcp {
    /// No DHCP payload was found at any layer.
    Frame(frame::FrameError),
    /// Bare bytes whose first byte is a DHCPv6 message type but whose options do not fit: the
    /// bytes are something else (the message says what they may be).
    NotDhcpv6(String),
}

impl std::fmt::Display for NotDhcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Frame(err) => err.fmt(f),
            Self::NotDhcpv6(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for NotDhcp {}

impl From<frame::FrameError> for NotDhcp {
    fn from(err: frame::FrameError) -> Self {
        Self::Frame(err)
    }
}

/// Builds the view of one packet; an error says why no DHCP payload was found at all.
pub fn view(index: usize, origin: &str, bytes: &[u8]) -> Result<PacketView, NotDhcp> {
    let located = frame::locate(bytes)?;
    if located.outer == frame::Outer::Bare && located.family == Family::V6 {
        check_bare_dhcpv6(located.payload)?;
    }
    let dhcp = match located.family {
        Family::V4 => dhcpv4_view(located.payload),
        Family::V6 => dhcpv6_view(located.payload),
    };
    let (nkpu, nkpu_error) = match frame::decode(&located) {
        Ok(message) => (Some(nkpu_view(&message)), None),
        Err(err) => (None, Some(err.to_string())),
    };
    Ok(PacketView {
        index,
        origin: origin.to_owned(),
        family: located.family.as_str(),
        layer: match located.outer {
            frame::Outer::Ethernet => "ethernet",
            frame::Outer::Ip => "ip",
            frame::Outer::Bare => "bare",
        },
        ethernet: located.macs.map(|(src, dst)| EthernetView {
            source: mac(&src),
            destination: mac(&dst),
        }),
        udp: udp_view(&located),
        dhcp,
        nkpu,
        nkpu_error,
    })
}

/// Bare bytes are taken for DHCPv6 on their first byte alone (a message type, 1 to 13); they
/// are one only if the options after the header walk to the end. Otherwise, e.g. for the body of
/// a reply's option 43 (`02 3c` + 60 bytes, which starts like an Advertise), say what it is.
fn check_bare_dhcpv6(payload: &[u8]) -> Result<(), NotDhcp> {
    let header = match payload.first() {
        Some(12 | 13) => 34,
        _ => 4,
    };
    let walked = payload.get(header..).map(options::walk_v6);
    if let Some(Ok(_)) = walked {
        return Ok(());
    }
    let why = match walked {
        Some(Err(err)) => err.to_string(),
        _ => "it ends in the header".to_owned(),
    };
    let hint = match payload {
        [2, 60, rest @ ..] if rest.len() == nkpu::KPR_LEN => {
            " (it looks like the body of option 43 of a Network Unlock reply, sub-option 2 of 60 \
             bytes: `nulab reply open --session-key SK HEX` opens it)"
        }
        _ => "",
    };
    Err(NotDhcp::NotDhcpv6(format!(
        "not a DHCPv6 message: {why}{hint}"
    )))
}

fn udp_view(located: &Located<'_>) -> Option<UdpView> {
    located.udp.map(|(src, dst)| UdpView {
        source: src.to_string(),
        destination: dst.to_string(),
    })
}

fn nkpu_view(message: &Message) -> NkpuView {
    NkpuView {
        kind: if message.is_request() {
            "request"
        } else {
            "reply"
        },
        thumbprint: message.thumbprint().map(ToString::to_string),
        key_protector: message.key_protector().map(|kp| hex::encode(kp.as_bytes())),
        reply: message.reply().map(|r| hex::encode(r.as_bytes())),
    }
}

fn mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn ipv4_at(bytes: &[u8], at: usize) -> String {
    bytes
        .get(at..at + 4)
        .map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string())
        .unwrap_or_else(|| "(truncated)".into())
}

fn dhcpv4_view(payload: &[u8]) -> DhcpView {
    let mut header = Vec::new();
    let mut field = |name: &str, value: String| header.push((name.to_owned(), value));
    let byte = |at: usize| payload.get(at).copied();
    let be16 = |at: usize| {
        payload
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let op = byte(0).map_or("(truncated)".into(), |op| match op {
        1 => "1 (BOOTREQUEST)".to_owned(),
        2 => "2 (BOOTREPLY)".to_owned(),
        other => other.to_string(),
    });
    field("op", op);
    field(
        "htype",
        byte(1).map_or("(truncated)".into(), |v| v.to_string()),
    );
    field(
        "hlen",
        byte(2).map_or("(truncated)".into(), |v| v.to_string()),
    );
    field(
        "hops",
        byte(3).map_or("(truncated)".into(), |v| v.to_string()),
    );
    field(
        "xid",
        payload
            .get(4..8)
            .map_or("(truncated)".into(), |b| format!("0x{}", hex::encode(b))),
    );
    field(
        "secs",
        be16(8).map_or("(truncated)".into(), |v| v.to_string()),
    );
    field(
        "flags",
        be16(10).map_or("(truncated)".into(), |v| {
            format!(
                "0x{v:04x}{}",
                if v & 0x8000 != 0 { " (broadcast)" } else { "" }
            )
        }),
    );
    field("ciaddr", ipv4_at(payload, 12));
    field("yiaddr", ipv4_at(payload, 16));
    field("siaddr", ipv4_at(payload, 20));
    field("giaddr", ipv4_at(payload, 24));
    let hlen = usize::from(byte(2).unwrap_or(6)).min(16);
    field(
        "chaddr",
        payload.get(28..28 + hlen).map_or("(truncated)".into(), mac),
    );
    field("sname", cstring(payload.get(44..108)));
    field("file", cstring(payload.get(108..236)));
    field(
        "magic cookie",
        payload
            .get(236..240)
            .map_or("(truncated)".into(), hex::encode),
    );
    let (options, options_error) = match payload.get(240..).map(options::walk_v4) {
        Some(Ok(opts)) => (opts.iter().map(|o| option_view(o, true)).collect(), None),
        Some(Err(err)) => (Vec::new(), Some(err.to_string())),
        None => (
            Vec::new(),
            Some("no options: the packet ends in the header".into()),
        ),
    };
    DhcpView {
        header,
        options,
        options_error,
    }
}

fn cstring(bytes: Option<&[u8]>) -> String {
    match bytes {
        None => "(truncated)".into(),
        Some(b) => {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            if end == 0 {
                "(empty)".into()
            } else {
                format!("{:?}", String::from_utf8_lossy(&b[..end]))
            }
        }
    }
}

fn dhcpv6_view(payload: &[u8]) -> DhcpView {
    let mut header = Vec::new();
    let msg_type = payload.first().map_or("(truncated)".into(), |t| {
        let name = match t {
            1 => "Solicit",
            2 => "Advertise",
            3 => "Request",
            7 => "Reply",
            11 => "Information-Request",
            12 => "Relay-forw",
            13 => "Relay-repl",
            _ => "other",
        };
        format!("{t} ({name})")
    });
    header.push(("msg-type".to_owned(), msg_type));
    header.push((
        "transaction-id".to_owned(),
        payload
            .get(1..4)
            .map_or("(truncated)".into(), |b| format!("0x{}", hex::encode(b))),
    ));
    let (options, options_error) = match payload.get(4..).map(options::walk_v6) {
        Some(Ok(opts)) => (opts.iter().map(|o| option_view(o, false)).collect(), None),
        Some(Err(err)) => (Vec::new(), Some(err.to_string())),
        None => (Vec::new(), Some("the packet ends in the header".into())),
    };
    DhcpView {
        header,
        options,
        options_error,
    }
}

fn option_view(option: &options::RawOption<'_>, v4: bool) -> OptionView {
    let data = option.data;
    let value = if v4 {
        v4_value(option.code, data)
    } else {
        v6_value(option.code, data)
    };
    OptionView {
        code: option.code,
        name: if v4 {
            options::v4_name(option.code)
        } else {
            options::v6_name(option.code)
        },
        length: data.len(),
        value,
        hex: hex::encode(data),
    }
}

fn v4_value(code: u16, data: &[u8]) -> Option<String> {
    let addresses = || {
        (!data.is_empty() && data.len().is_multiple_of(4)).then(|| {
            data.chunks(4)
                .map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        })
    };
    let seconds = || {
        <[u8; 4]>::try_from(data)
            .ok()
            .map(|b| format!("{} s", u32::from_be_bytes(b)))
    };
    match code {
        1 | 3 | 6 | 28 | 50 | 54 => addresses(),
        51 | 58 | 59 => seconds(),
        12 | 15 | 60 => Some(format!("{:?}", String::from_utf8_lossy(data))),
        53 => data.first().map(|t| format!("{t}")),
        43 => Some(suboptions_text(data, 1)),
        125 => (data.len() >= 5).then(|| {
            let enterprise = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            format!(
                "enterprise {enterprise}, data length {}: {}",
                data[4],
                suboptions_text(&data[5..], 1)
            )
        }),
        _ => None,
    }
}

fn v6_value(code: u16, data: &[u8]) -> Option<String> {
    match code {
        6 => Some(
            data.chunks(2)
                .map(|c| match c {
                    [hi, lo] => u16::from_be_bytes([*hi, *lo]).to_string(),
                    _ => "?".into(),
                })
                .collect::<Vec<_>>()
                .join(", "),
        ),
        8 => <[u8; 2]>::try_from(data)
            .ok()
            .map(|b| format!("{} cs", u16::from_be_bytes(b))),
        16 => (data.len() >= 6).then(|| {
            let enterprise = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            format!(
                "enterprise {enterprise}, {:?}",
                String::from_utf8_lossy(&data[6..])
            )
        }),
        17 => (data.len() >= 4).then(|| {
            let enterprise = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            format!(
                "enterprise {enterprise}: {}",
                suboptions_text(&data[4..], 2)
            )
        }),
        _ => None,
    }
}

/// `sub-option 1 (20 bytes), sub-option 2 (128 bytes)`, for a quick look at a vendor option.
fn suboptions_text(mut data: &[u8], width: usize) -> String {
    let mut parts = Vec::new();
    while data.len() >= 2 * width {
        let (code, len) = if width == 1 {
            (usize::from(data[0]), usize::from(data[1]))
        } else {
            (
                usize::from(u16::from_be_bytes([data[0], data[1]])),
                usize::from(u16::from_be_bytes([data[2], data[3]])),
            )
        };
        let body = &data[2 * width..];
        if body.len() < len {
            parts.push(format!("sub-option {code} (truncated)"));
            return parts.join(", ");
        }
        parts.push(format!("sub-option {code} ({len} bytes)"));
        data = &body[len..];
    }
    if !data.is_empty() {
        parts.push(format!("{} trailing bytes", data.len()));
    }
    parts.join(", ")
}

impl PacketView {
    /// The human-readable rendering.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let family = if self.family == "dhcpv4" {
            "DHCPv4"
        } else {
            "DHCPv6"
        };
        if self.origin == format!("packet {}", self.index) {
            let _ = writeln!(out, "── packet {} ── {family} ──", self.index);
        } else {
            let _ = writeln!(
                out,
                "── packet {} ({}) ── {family} ──",
                self.index, self.origin
            );
        }
        if let Some(eth) = &self.ethernet {
            let _ = writeln!(out, "Ethernet  {} -> {}", eth.source, eth.destination);
        }
        if let Some(udp) = &self.udp {
            let _ = writeln!(out, "UDP       {} -> {}", udp.source, udp.destination);
        }
        for (name, value) in &self.dhcp.header {
            let _ = writeln!(out, "  {name:<14} {value}");
        }
        for option in &self.dhcp.options {
            let _ = write!(
                out,
                "  option {:>3}  {} ({} bytes)",
                option.code, option.name, option.length
            );
            match &option.value {
                Some(value) => {
                    let _ = writeln!(out, ": {value}");
                }
                None if option.length <= 32 => {
                    let _ = writeln!(out, ": {}", option.hex);
                }
                None => {
                    let _ = writeln!(out);
                }
            }
        }
        if let Some(err) = &self.dhcp.options_error {
            let _ = writeln!(out, "  options: {err}");
        }
        match (&self.nkpu, &self.nkpu_error) {
            (Some(nkpu), _) => {
                let _ = writeln!(out, "Network Unlock {}", nkpu.kind);
                if let Some(t) = &nkpu.thumbprint {
                    let _ = writeln!(out, "  certificate thumbprint  {t}");
                }
                if let Some(kp) = &nkpu.key_protector {
                    let _ = writeln!(out, "  key protector (256 bytes, RSA-2048 of CK‖SK)");
                    for line in kp.as_bytes().chunks(64) {
                        let _ = writeln!(out, "    {}", String::from_utf8_lossy(line));
                    }
                }
                if let Some(reply) = &nkpu.reply {
                    let _ = writeln!(
                        out,
                        "  key protector reply (60 bytes: CCM tag ‖ ciphertext)"
                    );
                    for line in reply.as_bytes().chunks(64) {
                        let _ = writeln!(out, "    {}", String::from_utf8_lossy(line));
                    }
                }
            }
            (None, Some(err)) => {
                let _ = writeln!(out, "Not a Network Unlock message: {err}");
            }
            (None, None) => {}
        }
        out
    }
}
