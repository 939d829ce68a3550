//! Puts the catalogue (`scenarios/*.toml` at the workspace root, and every `policy_file` and
//! `pfx` they name) inside the crate, so that `nulab scenario list` and
//! `nulab scenario run happy-path-ipv4` work from any folder, without the source tree.
//!
//! An empty or missing catalogue stops the build: a suite of zero scenarios would pass.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dir = manifest.join("../../scenarios");
    println!("cargo::rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect(),
        Err(err) => fail(&format!("cannot read {}: {err}", dir.display())),
    };
    files.sort();
    if files.is_empty() {
        fail(&format!(
            "the scenario catalogue {} holds no scenario (*.toml)",
            dir.display()
        ));
    }
    let mut scenarios = String::new();
    let mut referenced: Vec<String> = Vec::new();
    for file in &files {
        println!("cargo::rerun-if-changed={}", file.display());
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|err| fail(&format!("cannot read {}: {err}", file.display())));
        referenced.extend(referenced_files(&text));
        let _ = writeln!(
            scenarios,
            "    ({name:?}, include_str!({:?})),",
            absolute(file).display()
        );
    }
    referenced.sort();
    referenced.dedup();
    let mut extra = String::new();
    for relative in referenced {
        let path = dir.join(&relative);
        if !path.is_file() {
            // The scenario's own loading reports it, at its line.
            continue;
        }
        println!("cargo::rerun-if-changed={}", path.display());
        let _ = writeln!(
            extra,
            "    ({relative:?}, include_bytes!({:?})),",
            absolute(&path).display()
        );
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("catalogue.rs");
    let code = format!(
        "/// The catalogue's scenarios: name and text, sorted by name.\n\
         pub static SCENARIOS: &[(&str, &str)] = &[\n{scenarios}];\n\
         /// The files they name (`policy_file`, `pfx`), by path relative to the catalogue.\n\
         pub static FILES: &[(&str, &[u8])] = &[\n{extra}];\n"
    );
    if let Err(err) = std::fs::write(&out, code) {
        fail(&format!("cannot write {}: {err}", out.display()));
    }
}

/// The values of `policy_file = "..."` and `pfx = "..."` lines: the files a scenario reads
/// beside itself.
fn referenced_files(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            let key = key.trim();
            if key != "policy_file" && key != "pfx" {
                return None;
            }
            let value = value.trim();
            let value = value.strip_prefix('"')?;
            let end = value.find('"')?;
            Some(value[..end].to_string())
        })
        .collect()
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
