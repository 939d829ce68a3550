//! `nulab wireshark install`: puts the Network Unlock dissector (`wireshark/nkpu.lua`, carried
//! inside this binary so the command works from any folder) into Wireshark's personal Lua
//! plugin folder (`~/.local/lib/wireshark/plugins` on Linux, or `--dir`), so that Wireshark and
//! tshark show Network Unlock's fields in every capture. A different file already there (an
//! older dissector, or the user's own edit) is never replaced without `--force`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use crate::output::{self, outln};

/// The dissector, as shipped in the repository's `wireshark/` folder.
pub const DISSECTOR: &str = include_str!("../../../wireshark/nkpu.lua");
/// Its file name in the plugin folder.
pub const FILE_NAME: &str = "nkpu.lua";

#[derive(Debug, Subcommand)]
pub enum WiresharkCommand {
    /// Install the Network Unlock dissector (nkpu.lua) into Wireshark's personal plugin folder
    Install {
        /// The plugin folder (default: ~/.local/lib/wireshark/plugins, Wireshark's personal
        /// Lua plugins folder on Linux; created if missing)
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Replace a different nkpu.lua already there
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
}

/// What the install did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Installed {
    /// There was no dissector: it is there now.
    New,
    /// The same dissector was already there: nothing written.
    AlreadyThere,
    /// A different file was replaced (`--force`).
    Replaced,
}

impl Installed {
    fn label(self) -> &'static str {
        match self {
            Installed::New => "installed",
            Installed::AlreadyThere => "already-installed",
            Installed::Replaced => "replaced",
        }
    }
}

/// Wireshark's personal Lua plugin folder on Linux: `$HOME/.local/lib/wireshark/plugins`.
fn personal_plugin_dir() -> Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("HOME is not set: name the plugin folder with --dir")?;
    Ok(Path::new(&home).join(".local/lib/wireshark/plugins"))
}

/// Writes the dissector into `dir` (created if missing), refusing to replace a different file
/// unless `force`.
fn install(dir: &Path, force: bool) -> Result<(PathBuf, Installed)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(FILE_NAME);
    let installed = match std::fs::read(&path) {
        Ok(existing) if existing == DISSECTOR.as_bytes() => {
            return Ok((path, Installed::AlreadyThere));
        }
        Ok(_) if !force => bail!(
            "{}: a different {FILE_NAME} is already there (another version, or edited); \
             --force replaces it",
            path.display()
        ),
        Ok(_) => Installed::Replaced,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Installed::New,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    std::fs::write(&path, DISSECTOR).with_context(|| format!("cannot write {}", path.display()))?;
    Ok((path, installed))
}

pub fn run(command: WiresharkCommand) -> Result<ExitCode> {
    let WiresharkCommand::Install { dir, force, json } = command;
    let dir = match dir {
        Some(dir) => dir,
        None => personal_plugin_dir()?,
    };
    let (path, installed) = install(&dir, force)?;
    if json {
        output::json_line(&serde_json::json!({
            "path": path.display().to_string(),
            "result": installed.label(),
        }))?;
    } else {
        match installed {
            Installed::New => outln!("installed the Network Unlock dissector: {}", path.display())?,
            Installed::AlreadyThere => {
                outln!(
                    "the Network Unlock dissector is already installed: {}",
                    path.display()
                )?;
            }
            Installed::Replaced => outln!(
                "replaced {} with this nulab's Network Unlock dissector",
                path.display()
            )?,
        }
        outln!(
            "Wireshark and tshark load it at their next start (Help > About > Plugins lists it). \
             To see each exchange's session key, give it a run's key log: Edit > Preferences > \
             Protocols > NKPU > Key log file, or tshark -o nkpu.keylog:nulab-out/NAME/nkpu-keys.log"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_once_keeps_a_different_file_and_replaces_it_when_forced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plugins = dir.path().join("wireshark/plugins");
        let (path, first) = install(&plugins, false).expect("install");
        assert_eq!(first, Installed::New);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), DISSECTOR);
        assert_eq!(
            install(&plugins, false).expect("again").1,
            Installed::AlreadyThere
        );

        std::fs::write(&path, "-- my own edit\n").expect("edit");
        let err = install(&plugins, false).expect_err("a different file is kept");
        assert!(format!("{err:#}").contains("--force"), "{err:#}");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "-- my own edit\n"
        );
        assert_eq!(
            install(&plugins, true).expect("forced").1,
            Installed::Replaced
        );
        assert_eq!(std::fs::read_to_string(&path).expect("read"), DISSECTOR);
    }

    #[test]
    fn the_binary_carries_the_shipped_dissector() {
        assert!(DISSECTOR.contains("register_postdissector(nkpu)"));
    }
}
