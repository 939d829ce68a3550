//! Every scenario of the catalogue (`scenarios/*.toml` at the workspace root) is one test, under
//! `cargo test` and nextest alike (a libtest-mimic harness): the scenario runs twice with its
//! seed, every output file must be byte-identical between the two runs, every expectation must
//! hold, and the transcript must equal the golden one kept beside the file
//! (`scenarios/NAME.golden`; `cargo xtask scenario bless` refreshes it after review). A failure
//! prints the seed and the command that replays it.

use std::path::{Path, PathBuf};

use libtest_mimic::{Arguments, Failed, Trial};

/// The workspace root: scenario paths are shown relative to it, as a user types them.
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .unwrap_or(manifest)
        .to_path_buf()
}

fn check(path: &Path) -> Result<(), Failed> {
    let loaded = scenario::load(path).map_err(|err| err.to_string())?;
    let seed = loaded.scenario.seed;
    let replay = scenario::replay_command(&loaded, seed);
    let first = scenario::run(&loaded, None).map_err(|err| err.to_string())?;
    let second = scenario::run(&loaded, None).map_err(|err| err.to_string())?;
    let (a, b) = (scenario::outputs(&first), scenario::outputs(&second));
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        if x != y {
            return Err(format!(
                "{name} differs between two runs with seed {seed}: replay with `{replay}`"
            )
            .into());
        }
    }
    if a.len() != b.len() {
        return Err(format!("the two runs wrote different files (seed {seed})").into());
    }
    let transcript = scenario::views::transcript(&first);
    if !first.passed() {
        return Err(format!(
            "expectations not met (seed {seed}); replay with `{replay}`\n\n{transcript}"
        )
        .into());
    }
    let golden_path = scenario::golden_path(path);
    if std::env::var_os("NULAB_BLESS").is_some() {
        std::fs::write(&golden_path, &transcript).map_err(|err| err.to_string())?;
        return Ok(());
    }
    let golden = std::fs::read_to_string(&golden_path).map_err(|err| {
        format!(
            "{}: {err}: run `cargo xtask scenario bless {}` and review the transcript",
            golden_path.display(),
            path.display()
        )
    })?;
    if golden != transcript {
        let diff = first_difference(&golden, &transcript);
        return Err(format!(
            "the transcript differs from {} (seed {seed}) at {diff}; if the change is intended, \
             run `cargo xtask scenario bless {}` and review it",
            golden_path.display(),
            path.display()
        )
        .into());
    }
    Ok(())
}

fn first_difference(golden: &str, actual: &str) -> String {
    for (i, (g, a)) in golden.lines().zip(actual.lines()).enumerate() {
        if g != a {
            return format!("line {}:\n  golden: {g}\n  actual: {a}", i + 1);
        }
    }
    format!(
        "the end ({} lines golden, {} lines now)",
        golden.lines().count(),
        actual.lines().count()
    )
}

fn main() {
    let args = Arguments::from_args();
    // Relative paths (`scenarios/NAME.toml`) read well in failure messages.
    if std::env::set_current_dir(workspace_root()).is_err() {
        eprintln!("cannot change to the workspace root");
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir("scenarios")
        .map(|dir| {
            dir.filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    if files.is_empty() {
        eprintln!("the catalogue (scenarios/*.toml) is empty or missing: zero tests would pass");
        std::process::exit(2);
    }
    let on_disk: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    let inside = Trial::test("the-binary-carries-the-catalogue", move || {
        let names = scenario::catalogue::names();
        if names == on_disk {
            Ok(())
        } else {
            Err(format!("inside the binary: {names:?}\non disk: {on_disk:?}").into())
        }
    });
    let trials = std::iter::once(inside)
        .chain(files.into_iter().map(|path| {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            Trial::test(name, move || check(&path))
        }))
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
