//! Every scenario of the catalogue (`scenarios/*.toml` at the workspace root) is one test, under
//! `cargo test` and nextest alike (a libtest-mimic harness): the scenario runs twice with its
//! seed, every output file must be byte-identical between the two runs, every expectation must
//! hold, and every text output must equal the goldens kept beside the file (the transcript in
//! `scenarios/NAME.golden`, the others in `scenarios/NAME.outputs/`; `nulab scenario bless`
//! refreshes them after review, as does this test with `NULAB_BLESS=1`). A failure
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
    if std::env::var_os("NULAB_BLESS").is_some() {
        scenario::golden::bless(path, &first).map_err(|err| err.to_string())?;
        return Ok(());
    }
    scenario::golden::compare(path, &first)?;
    Ok(())
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
