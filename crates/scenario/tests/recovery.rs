//! The recovery sections of a scenario: references checked at their `FILE:LINE`, and a small
//! scenario run end to end (escrow of the boot's own volume, the helpdesk, rotation).

// Test code may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use scenario::model::recovery::present;
use scenario::{Loaded, ScenarioError};

fn parse(text: &str) -> Result<Loaded, ScenarioError> {
    scenario::model::parse(Path::new("r.toml"), text.to_string())
}

const BASE: &str = "title = \"t\"\n\
[[segment]]\nname = \"corp\"\nsubnet = \"10.0.4.0/24\"\n\
[[management_point]]\nname = \"mp1.contoso.com\"\nface = \"https\"\n";

/// Runs `text`, which must parse and meet every expectation.
fn run_passing(text: &str) -> scenario::RunResult {
    let loaded = parse(text).expect("parses");
    let result = scenario::run(&loaded, None).expect("runs");
    let failed: Vec<String> = result
        .checks
        .iter()
        .filter(|c| !c.met)
        .map(ToString::to_string)
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    result
}

fn client(extra: &str) -> String {
    format!(
        "[[client]]\nname = \"pc1\"\nprotectors = [\"tpm\", \"recovery-password\"]\n{extra}\n\
         [[client.adapter]]\nsegment = \"corp\"\n"
    )
}

#[test]
fn an_unknown_management_point_is_reported_at_its_line() {
    let text = format!(
        "{BASE}{}",
        client("management_points = [\"mp1.contoso.com\", \"mp9.contoso.com\"]")
    );
    let err = parse(&text).expect_err("unknown MP");
    assert_eq!(err.line, 11, "{err}");
    assert!(
        err.message
            .contains("no management point \"mp9.contoso.com\""),
        "{err}"
    );
    assert!(err.to_string().starts_with("r.toml:11:"), "{err}");
}

#[test]
fn unknown_keys_faces_roles_and_clients_are_refused_where_they_are() {
    let err = parse(&format!("{BASE}fase = \"http\"\n")).expect_err("unknown key");
    assert_eq!(err.line, 8, "{err}");
    assert!(err.message.contains("fase"), "{err}");

    let err = parse(&BASE.replace("\"https\"", "\"ftp\"")).expect_err("unknown face");
    assert_eq!(err.line, 7, "{err}");

    let with_agent = format!(
        "{BASE}{}",
        client("management_points = [\"mp1.contoso.com\"]")
    );
    let err = parse(&format!(
        "{with_agent}[[helpdesk]]\nat = \"1m\"\noperator = \"op\"\nrole = \"janitor\"\nclient = \"pc1\"\nreason = \"r\"\n"
    ))
    .expect_err("unknown role");
    assert_eq!(err.line, 17, "{err}");
    assert!(err.message.contains("janitor"), "{err}");

    let err = parse(&format!(
        "{with_agent}[[expect_escrow]]\nclient = \"pc2\"\nescrowed = true\n"
    ))
    .expect_err("unknown client");
    assert_eq!(err.line, 15, "{err}");

    let err = parse(&format!(
        "{with_agent}[[event]]\nat = \"1s\"\nhost = \"mp1.contoso.com\"\naction = \"explode\"\n"
    ))
    .expect_err("unknown action");
    assert_eq!(err.line, 17, "{err}");
    assert!(err.message.contains("https, http, down"), "{err}");
}

#[test]
fn an_agent_needs_a_recovery_password_and_one_machine() {
    let text = format!(
        "{BASE}[[client]]\nname = \"pc1\"\nprotectors = [\"tpm\"]\nmanagement_points = [\"mp1.contoso.com\"]\n\
         [[client.adapter]]\nsegment = \"corp\"\n"
    );
    let err = parse(&text).expect_err("no recovery password");
    assert!(err.message.contains("recovery-password"), "{err}");
    assert_eq!(err.line, 9, "{err}");
    let storm = format!(
        "{BASE}{}",
        client("count = 2\nmanagement_points = [\"mp1.contoso.com\"]")
    );
    assert!(
        parse(&storm)
            .expect_err("storm")
            .message
            .contains("count = 1")
    );
    let clash = format!(
        "{BASE}[[wds]]\nname = \"mp1.contoso.com\"\nsegment = \"corp\"\naddress = \"10.0.4.10/24\"\n"
    );
    assert!(
        parse(&clash)
            .expect_err("clash")
            .message
            .contains("two hosts")
    );
}

#[test]
fn a_scenario_without_recovery_sections_has_no_lab() {
    let loaded = parse(&format!(
        "title = \"t\"\nexpect_nothing = true\n[[segment]]\nname = \"corp\"\nsubnet = \"10.0.4.0/24\"\n{}",
        client("")
    ))
    .expect("parses");
    assert!(!present(&loaded.scenario));
    let result = scenario::run(&loaded, None).expect("runs");
    assert!(result.recovery.is_none());
    assert!(scenario::recovery_views::outputs(result.recovery.as_ref()).is_empty());
    assert!(scenario::recovery_views::transcript_section(result.recovery.as_ref()).is_empty());
}

#[test]
fn the_agent_escrows_the_boots_own_volume_and_rotates_after_disclosure() {
    let text = format!(
        "{BASE}{}\
         [[helpdesk]]\nat = \"10s\"\noperator = \"CONTOSO\\\\helpdesk1\"\nclient = \"pc1\"\nreason = \"locked out\"\n\
         [[expect_escrow]]\nclient = \"pc1\"\nescrowed = true\nrotated = true\ndisclosed_unlocks = true\n\
         handler_log_contains = [\"Checking for Recovery Service at https://mp1.contoso.com/\"]\n\
         [expect_database]\nplaintext = false\naudit = [\"disclosed\"]\n",
        client("management_points = [\"mp1.contoso.com\"]")
    );
    let result = run_passing(&text);
    let recovery = result.recovery.as_ref().expect("a lab");
    let agent = recovery.agent("pc1").expect("agent");
    // The escrowed password is the one the scenario's volume was built with.
    let machine_password = agent.recovery_password.clone();
    assert_eq!(machine_password.len(), 55, "{machine_password}");
    let disclosed = recovery.helpdesk[0].outcome.as_ref().expect("disclosed");
    assert_eq!(disclosed.0, agent.key_id);
    assert_eq!(disclosed.1, machine_password);
    // Cycles: at enable, then when Windows started (TPM unlocks at once), which rotates.
    assert_eq!(agent.cycles.len(), 2);
    assert_eq!(agent.cycles[1].why, "Windows started");
    assert_eq!(agent.rotations.len(), 1);
    assert!(
        !agent.rotations[0].3,
        "the old password must no longer unlock"
    );
    // The outputs exist, and the transcript names the phase with keys shortened.
    let files = scenario::outputs(&result);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"BitLockerManagementHandler-pc1.log"),
        "{names:?}"
    );
    assert!(names.contains(&"recovery-audit.log"));
    assert!(names.contains(&"recovery-database.txt"));
    let transcript = scenario::views::transcript(&result);
    assert!(transcript.contains("== Recovery service =="));
    assert!(transcript.contains(&format!("{}…", agent.key_id.short())));
    assert!(
        !transcript.contains(agent.key_id.as_str()),
        "whole key IDs are shortened"
    );
    assert!(
        !transcript.contains(&machine_password),
        "passwords are shortened"
    );
    let json: serde_json::Value =
        serde_json::from_str(&scenario::views::json(&result)).expect("json");
    assert_eq!(json["recovery"]["agents"][0]["escrowed"], true);
}

#[test]
fn a_failed_expectation_says_what_was_seen() {
    let text = format!(
        "{BASE}{}[[expect_escrow]]\nclient = \"pc1\"\nescrowed = true\nreason_contains = \"nonsense\"\n",
        client("management_points = [\"mp1.contoso.com\"]\ntrust = \"public-roots\"")
    );
    let loaded = parse(&text).expect("parses");
    let result = scenario::run(&loaded, None).expect("runs");
    let escrowed = &result.checks[0];
    assert!(!escrowed.met);
    assert!(
        escrowed
            .actual
            .as_deref()
            .is_some_and(|a| a.contains("not trusted")),
        "{escrowed}"
    );
    let reason = &result.checks[1];
    assert!(!reason.met);
    assert!(
        reason
            .actual
            .as_deref()
            .is_some_and(|a| a.contains("UnknownIssuer")),
        "{reason}"
    );
}

#[test]
fn a_client_left_at_the_recovery_screen_keeps_only_its_first_escrow() {
    let text = format!(
        "{BASE}[[client]]\nname = \"pc1\"\npcr_change = true\nmanagement_points = [\"mp1.contoso.com\"]\n\
         [[client.adapter]]\nsegment = \"corp\"\n\
         [[expect]]\nclient = \"pc1\"\nwaiting_at = \"pin\"\n\
         [[expect_escrow]]\nclient = \"pc1\"\nescrowed = true\n"
    );
    let result = run_passing(&text);
    let agent = result
        .recovery
        .as_ref()
        .and_then(|r| r.agent("pc1"))
        .expect("agent");
    assert_eq!(
        agent.cycles.len(),
        1,
        "Windows never started: no cycle after the boot"
    );
    assert_eq!(agent.cycles[0].why, "BitLocker enabled");
}

proptest::proptest! {
    #[test]
    fn arbitrary_recovery_sections_never_panic(junk in "[a-z_ =\\[\\]\"\n.0-9]{0,120}") {
        let text = format!("{BASE}{}{junk}", client("management_points = [\"mp1.contoso.com\"]"));
        if let Err(err) = parse(&text) {
            proptest::prop_assert!(err.line <= text.matches('\n').count() + 1);
        }
    }
}

#[test]
fn a_management_point_back_up_is_used_at_the_next_status_check() {
    // 20 minutes of scenario; mp1 starts down.
    let base = BASE
        .replacen("title = \"t\"\n", "title = \"t\"\nduration = \"20m\"\n", 1)
        .replace("face = \"https\"", "face = \"down\"");
    let text = format!(
        "{base}{}[recovery]\ncheck_every = \"10m\"\n\
         [[event]]\nat = \"5m\"\nhost = \"mp1.contoso.com\"\naction = \"https\"\n\
         [[expect_escrow]]\nclient = \"pc1\"\nescrowed = true\nreason_contains = \"not reachable\"\n",
        client("management_points = [\"mp1.contoso.com\"]")
    );
    let result = run_passing(&text);
    let recovery = result.recovery.as_ref().expect("lab");
    let whys: Vec<(&str, bool)> = recovery.agents[0]
        .cycles
        .iter()
        .map(|c| (c.why, c.summary.escrowed))
        .collect();
    // Enable and Windows start fail (down), the status check 10 min later escrows.
    assert_eq!(
        whys,
        [
            ("BitLocker enabled", false),
            ("Windows started", false),
            ("status check", true)
        ]
    );
    assert!(recovery.timeline.iter().any(|(at, who, text)| {
        *at == Duration::from_secs(300) && who == "mp1.contoso.com" && text.contains("HTTPS again")
    }));
    // The network simulation never saw the management point's event.
    assert!(result.events.is_empty());
}
