//! Where in `bde-network-unlock.ini` a decision comes from: the line numbers of a certificate's
//! section header, of its `DISABLED` line and of the subnets it lists, and of those subnets'
//! definitions in `[SUBNETS]`. The policy itself (what is allowed) is `unlock_server::policy`'s;
//! this only finds lines to cite, with the same case-insensitive names and `;` comments.

use nkpu::Thumbprint;

/// The lines of the file that bear on one certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SectionLines {
    /// The `[thumbprint]` header.
    pub header: Option<usize>,
    /// A `DISABLED` line inside the section.
    pub disabled: Option<usize>,
    /// Subnet names listed in the section, with their line.
    pub listed: Vec<(usize, String)>,
    /// Definitions in `[SUBNETS]` of the names listed: line, the line's text.
    pub definitions: Vec<(usize, String)>,
}

fn content(line: &str) -> &str {
    line.split(';').next().unwrap_or_default().trim()
}

/// The lines of `text` about `thumbprint`.
pub fn section_lines(text: &str, thumbprint: &Thumbprint) -> SectionLines {
    let wanted = thumbprint.to_string();
    let mut lines = SectionLines::default();
    let mut in_section = false;
    let mut subnet_defs: Vec<(usize, String, String)> = Vec::new();
    let mut in_subnets = false;
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = content(raw);
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            in_subnets = name.eq_ignore_ascii_case("SUBNETS");
            in_section = name.eq_ignore_ascii_case(&wanted);
            if in_section && lines.header.is_none() {
                lines.header = Some(number);
            }
            continue;
        }
        if in_subnets {
            if let Some((name, _)) = line.split_once('=') {
                subnet_defs.push((
                    number,
                    name.trim().to_ascii_uppercase(),
                    raw.trim().to_string(),
                ));
            }
        } else if in_section {
            if line.eq_ignore_ascii_case("DISABLED") {
                lines.disabled.get_or_insert(number);
            } else {
                lines.listed.push((number, line.to_string()));
            }
        }
    }
    for (_, name) in &lines.listed {
        let upper = name.to_ascii_uppercase();
        for (number, def, raw) in &subnet_defs {
            if *def == upper {
                lines.definitions.push((*number, raw.clone()));
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_section_its_disabled_line_and_the_definitions_it_names() {
        let t: Thumbprint = "f0f0685c46b9486d6de55b7a46f3a384ccd361a3"
            .parse()
            .expect("hex");
        let text = "[SUBNETS]\nCORP = 10.0.4.0/24 ; lan\nBRANCH=10.0.9.0/24\n\n\
                    [F0F0685C46B9486D6DE55B7A46F3A384CCD361A3]\nbranch\n;CORP\nDISABLED\n";
        let lines = section_lines(text, &t);
        assert_eq!(lines.header, Some(5));
        assert_eq!(lines.disabled, Some(8));
        assert_eq!(lines.listed, vec![(6, "branch".to_string())]);
        assert_eq!(
            lines.definitions,
            vec![(3, "BRANCH=10.0.9.0/24".to_string())]
        );
        let other = Thumbprint::from_bytes([1; 20]);
        assert_eq!(section_lines(text, &other).header, None);
    }
}
