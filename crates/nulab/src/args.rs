//! The one command-line grammar of every nulab command, in one place:
//!
//! - durations are written as `90s`, `500ms`, `2m` or `1h 30m` ([`duration`], humantime);
//! - `-` reads standard input wherever a file is read ([`read_input`]);
//! - an existing file is never replaced silently: [`refuse_overwrite`] unless `--force`;
//! - output folders are created ([`create_parent`], `std::fs::create_dir_all` for `--out DIR`).
//!
//! A module adopts a duration flag with
//! `#[arg(long, value_parser = crate::args::duration)] pin_after: Duration`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// A duration as `90s`, `500ms`, `2m` or `1h 30m`: clap's `value_parser` for every duration flag.
/// A bare number is refused (is `90` seconds or milliseconds?), with the way to write it.
// Its users are the modules with duration flags (client, scenario, recovery), converted next.
#[allow(dead_code)]
pub fn duration(text: &str) -> Result<Duration, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!(
            "{text:?} has no unit: write it as {text}s, {text}ms or {text}m"
        ));
    }
    humantime::parse_duration(text)
        .map_err(|err| format!("{text:?} is not a duration like 90s, 500ms or 2m ({err})"))
}

/// Reads FILE, or standard input for `-`; the name is for messages (`<stdin>` for `-`).
pub fn read_input(path: &Path) -> Result<(String, Vec<u8>)> {
    use std::io::Read;
    if path.as_os_str() == "-" {
        let mut data = Vec::new();
        std::io::stdin()
            .read_to_end(&mut data)
            .context("cannot read standard input")?;
        return Ok(("<stdin>".into(), data));
    }
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok((path.display().to_string(), data))
}

/// Refuses to replace an existing file unless `--force` was given.
pub fn refuse_overwrite(path: &Path, force: bool) -> Result<()> {
    if !force && path.exists() {
        bail!("{} already exists (--force replaces it)", path.display());
    }
    Ok(())
}

/// Creates the folder a file is about to be written into.
pub fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("1h 30m"), Ok(Duration::from_secs(5400)));
        let bare = duration("90").unwrap_err();
        assert!(bare.contains("90s"), "{bare}");
        assert!(duration("soon").is_err());
        assert!(duration("").is_err());
    }

    #[test]
    fn an_existing_file_is_kept_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        refuse_overwrite(&path, false).unwrap();
        std::fs::write(&path, b"1").unwrap();
        let err = refuse_overwrite(&path, false).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        refuse_overwrite(&path, true).unwrap();
    }

    #[test]
    fn the_parent_folder_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c.pcap");
        create_parent(&path).unwrap();
        assert!(dir.path().join("a/b").is_dir());
        create_parent(Path::new("bare-name")).unwrap();
    }
}
