//! The README's command reference (section "The `nulab` command line") matches `nulab --help`.
//!
//! The checkable form: every command that takes no subcommand has one list item in that section
//! starting with its name in backticks (`` - `nulab volume create IMAGE …` ``); the item names
//! every long flag the command has (`--tpm-pin`), and no flag it does not have. Items for
//! commands that do not exist fail too. The command tree and the flags are read from `-h`, as a
//! user sees them.

// Test code may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Command;

/// `nulab ARGS -h`.
fn help(path: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nulab"))
        .args(path)
        .arg("-h")
        .output()
        .unwrap();
    assert!(out.status.success(), "{path:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The lines of a help section (`Commands:`, `Options:`), up to the next blank line.
fn section<'a>(help: &'a str, title: &str) -> Vec<&'a str> {
    help.lines()
        .skip_while(|l| *l != title)
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect()
}

/// Every leaf command (as `nulab a b`) with its long flags, `--help` and `--version` left out.
fn command_tree() -> BTreeMap<String, Vec<String>> {
    let mut leaves = BTreeMap::new();
    let mut pending: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(path) = pending.pop() {
        let text = help(&path);
        let subcommands: Vec<String> = section(&text, "Commands:")
            .iter()
            // A command's name starts in column 2; wrapped descriptions are indented further.
            .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|name| *name != "help")
            .map(str::to_owned)
            .collect();
        if !subcommands.is_empty() {
            for name in subcommands {
                let mut child = path.clone();
                child.push(name);
                pending.push(child);
            }
            continue;
        }
        let flags = section(&text, "Options:")
            .iter()
            // A flag starts in column 2 or 6; wrapped descriptions are indented further.
            .filter(|l| l.len() - l.trim_start().len() <= 6)
            .filter_map(|l| {
                let l = l.trim_start();
                let l = l
                    .strip_prefix('-')
                    .filter(|r| !r.starts_with('-'))
                    .map_or(l, |r| r.split_once(", ").map_or(l, |(_, long)| long));
                l.strip_prefix("--")
                    .and_then(|r| r.split([' ', '=', '[', '<', '.']).next())
                    .map(|name| format!("--{name}"))
            })
            .filter(|f| f != "--help" && f != "--version")
            .collect();
        leaves.insert(format!("nulab {}", path.join(" ")), flags);
    }
    leaves
}

/// The README section's list items, keyed by the command each starts with.
fn readme_items() -> BTreeMap<String, String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("## The `nulab` command line"))
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .collect();
    let mut items = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in section {
        if let Some(rest) = line.strip_prefix("- `nulab ") {
            items.extend(current.take());
            // The command is the words before the first argument, flag or backtick.
            let words: Vec<&str> = rest
                .split(['`', ' '])
                .take_while(|w| {
                    !w.is_empty()
                        && w.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                        && !w.starts_with('-')
                })
                .collect();
            current = Some((format!("nulab {}", words.join(" ")), line.to_owned()));
        } else if let Some((_, text)) = &mut current {
            if line.starts_with("  ") {
                text.push(' ');
                text.push_str(line.trim());
            } else {
                items.extend(current.take());
            }
        }
    }
    items.extend(current);
    items
}

/// The long flags an item names.
fn flags_named(text: &str) -> Vec<String> {
    let mut flags = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("--") {
        rest = &rest[at + 2..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        if !name.is_empty() && name.starts_with(|c: char| c.is_ascii_lowercase()) {
            flags.push(format!("--{name}"));
        }
    }
    flags
}

#[test]
fn the_readme_command_reference_matches_help() {
    let tree = command_tree();
    let items = readme_items();
    let mut problems = Vec::new();
    for (command, flags) in &tree {
        let Some(item) = items.get(command) else {
            problems.push(format!("{command}: no README item `- \\`{command} …\\``"));
            continue;
        };
        let named = flags_named(item);
        for flag in flags {
            if !named.contains(flag) {
                problems.push(format!("{command}: the README does not name {flag}"));
            }
        }
        for flag in named {
            if !flags.contains(&flag) && flag != "--help" {
                problems.push(format!(
                    "{command}: the README names {flag}, which it does not have"
                ));
            }
        }
    }
    for command in items.keys() {
        if !tree.contains_key(command) {
            problems.push(format!(
                "the README describes `{command}`, which is not a command"
            ));
        }
    }
    let synopses: Vec<String> = tree
        .iter()
        .map(|(command, flags)| format!("{command}: {}", flags.join(" ")))
        .collect();
    assert!(
        problems.is_empty(),
        "README.md's nulab section disagrees with --help:\n  {}\n\nThe commands and their flags:\n  {}",
        problems.join("\n  "),
        synopses.join("\n  ")
    );
}

#[test]
fn the_tree_reader_sees_known_commands_and_flags() {
    let tree = command_tree();
    assert!(
        tree["nulab volume create"].contains(&"--tpm-pin".to_owned()),
        "{tree:?}"
    );
    assert!(
        tree["nulab packet decode"].contains(&"--json".to_owned()),
        "{tree:?}"
    );
    assert!(tree.contains_key("nulab man"), "{tree:?}");
    assert!(!tree.contains_key("nulab volume"), "{tree:?}");
}
