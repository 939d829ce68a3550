//! The scenarios hold their expectations, and the same seed gives the same outputs.

use super::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

#[test]
fn every_scenario_holds_its_expectations() {
    for scenario in Scenario::ALL {
        let report = run(scenario, 7).unwrap_or_else(|e| panic!("{}: {e}", scenario.name()));
        let failed: Vec<&Expectation> = report.expectations.iter().filter(|e| !e.held).collect();
        assert!(
            failed.is_empty(),
            "{}: {failed:#?}\n{report:#?}",
            scenario.name()
        );
        assert!(!report.expectations.is_empty());
        assert_eq!(Scenario::from_name(scenario.name()), Some(scenario));
    }
}

#[test]
fn the_same_seed_gives_the_same_outputs_and_another_seed_differs() {
    for scenario in Scenario::ALL {
        let a = run(scenario, 11).expect("run a");
        let b = run(scenario, 11).expect("run b");
        assert_eq!(a, b, "{}", scenario.name());
        let json_a = serde_json::to_string(&a).expect("json");
        let json_b = serde_json::to_string(&b).expect("json");
        assert_eq!(json_a, json_b);
    }
    let a = run(Scenario::EscrowWhenBitLockerEnabled, 1).expect("a");
    let b = run(Scenario::EscrowWhenBitLockerEnabled, 2).expect("b");
    assert_ne!(a.databases, b.databases);
}

#[test]
fn the_handler_log_reads_like_the_real_one_with_simulated_time() {
    let report = run(Scenario::HttpsDownFailoverToHttp, 3).expect("run");
    let first = report.handler_log.first().expect("a line");
    // 2021-04-05 08:00:00.000 UTC plus the lab's own steps: no wall clock.
    assert!(
        first.starts_with(
            "<![LOG[Checking for Recovery Service at https://mp1.contoso.com/SMS_MP_MBAM/CoreService.svc]LOG]!><time=\"08:00:00.000+000\" date=\"04-05-2021\""
        ),
        "{first}"
    );
    assert!(first.contains("thread=\"4120\""));
    assert!(
        report
            .handler_log
            .iter()
            .any(|l| l.contains("Checking for Recovery Service at http://mp2.contoso.com/"))
    );
    let last = report.handler_log.last().expect("last");
    assert!(
        last.contains("failed over to an HTTP management point"),
        "{last}"
    );
    assert!(last.contains("type=\"3\""));
    // Two timeouts of 5 s and backoffs of 2 s and 4 s before the third attempt times out.
    assert!(
        report
            .handler_log
            .iter()
            .any(|l| l.contains("time=\"08:00:21.") && l.contains("http://mp2")),
        "{:#?}",
        report.handler_log
    );
}

#[test]
fn helpdesk_refusals_are_audited_in_the_lab() {
    let mut lab = RecoveryLab::new(LabConfig::default()).expect("lab");
    let mp = lab
        .add_management_point("mp1.contoso.com", MpFace::Https)
        .expect("mp");
    lab.add_device("PC1", std::slice::from_ref(&mp), Trust::OrganisationRoot)
        .expect("device");
    lab.add_operator("CONTOSO\\auditor1", HelpdeskRole::Auditor)
        .expect("operator");
    let enabled = lab.enable_bitlocker("PC1").expect("bitlocker");
    assert!(lab.escrow("PC1").expect("escrow").escrowed);
    let answer = lab
        .helpdesk_recover(
            "CONTOSO\\auditor1",
            RecoverBody {
                key_id: enabled.key_id.short().into(),
                kind: crate::record::MaterialKind::RecoveryPassword,
                role: None,
                reason: "curious".into(),
                device: None,
                volume: None,
            },
        )
        .expect("lab");
    assert!(
        matches!(&answer, Err(HelpdeskRefusal::Refused { status: 403, error, .. }) if error == "role-not-allowed"),
        "{answer:?}"
    );
    let audit = lab.audit_log().expect("audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].outcome, "refused-role");
    assert_eq!(audit[0].at, lab.now_ms());
    // A device that was never given BitLocker cannot escrow.
    lab.add_device("PC2", &[mp], Trust::OrganisationRoot)
        .expect("device");
    assert!(matches!(lab.escrow("PC2"), Err(SimError::NoBitLocker(_))));
    assert!(matches!(lab.escrow("PC3"), Err(SimError::UnknownDevice(_))));
}

#[test]
fn an_adopted_volume_is_escrowed_with_its_own_recovery_password() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let (mut vol, keys) = volume::Volume::create(4096, "OSDisk", &mut rng).expect("volume");
    let (id, password) = vol
        .add_recovery_password_protector(&keys, None, 16, &mut rng)
        .expect("recovery password");
    let mut lab = RecoveryLab::new(LabConfig::default()).expect("lab");
    let mp = lab
        .add_management_point("mp1.contoso.com", MpFace::Https)
        .expect("mp");
    lab.add_device("pc1", &[mp], Trust::OrganisationRoot)
        .expect("device");
    lab.add_operator("CONTOSO\\helpdesk1", HelpdeskRole::Helpdesk)
        .expect("operator");
    let adopted = lab
        .adopt_bitlocker("pc1", vol.clone(), keys, Some("owner-auth".into()))
        .expect("adopt");
    assert_eq!(adopted.key_id, KeyId::new(id.to_string()).expect("a GUID"));
    assert_eq!(adopted.recovery_password, password.to_string());
    assert_eq!(
        lab.recovery_key_ids("pc1").expect("ids"),
        vec![adopted.key_id.clone()]
    );
    let summary = lab.escrow("pc1").expect("escrow");
    assert!(summary.escrowed);
    let kinds: Vec<&str> = summary
        .acknowledged
        .iter()
        .map(|(kind, _, outcome)| {
            assert_eq!(outcome, "inserted");
            kind.as_str()
        })
        .collect();
    assert_eq!(
        kinds,
        ["recovery-password", "key-package", "tpm-owner-auth"]
    );
    let answer = lab
        .helpdesk_recover(
            "CONTOSO\\helpdesk1",
            RecoverBody {
                key_id: adopted.key_id.short().into(),
                kind: crate::record::MaterialKind::RecoveryPassword,
                role: None,
                reason: "test".into(),
                device: None,
                volume: None,
            },
        )
        .expect("lab")
        .expect("disclosed");
    assert_eq!(answer.text.as_deref(), Some(password.to_string().as_str()));
    assert!(
        lab.unlock_with_recovery_password("pc1", &password.to_string())
            .expect("unlock")
    );

    // A volume without a recovery password has nothing to escrow.
    let (bare, bare_keys) = volume::Volume::create(4096, "OSDisk", &mut rng).expect("volume");
    lab.add_device("pc2", &[], Trust::OrganisationRoot)
        .expect("device");
    assert!(matches!(
        lab.adopt_bitlocker("pc2", bare, bare_keys, None),
        Err(SimError::NoRecoveryPassword(_))
    ));
}

/// Issue 19: a management point's certificate from a public CA is trusted by a client that
/// trusts only the roots Windows ships; one from the organisation's CA is not.
#[test]
fn a_public_ca_certificate_needs_no_configuration_on_the_client() {
    let mut lab = RecoveryLab::new(LabConfig::default()).expect("lab");
    let public = lab
        .add_management_point_issued("mp1.contoso.com", MpFace::Https, CertificateIssuer::Public)
        .expect("mp1");
    let organisation = lab
        .add_management_point("mp2.contoso.com", MpFace::Https)
        .expect("mp2");
    lab.add_device("PC1", &[public], Trust::PublicRootsOnly)
        .expect("PC1");
    lab.add_device("PC2", &[organisation], Trust::PublicRootsOnly)
        .expect("PC2");
    for pc in ["PC1", "PC2"] {
        lab.enable_bitlocker(pc).expect("bitlocker");
    }
    let trusted = lab.escrow("PC1").expect("PC1 escrow");
    assert!(trusted.escrowed, "{trusted:?}");
    let untrusted = lab.escrow("PC2").expect("PC2 escrow");
    assert!(
        !untrusted.escrowed && untrusted.untrusted_certificate,
        "{untrusted:?}"
    );
}

/// Issue 19: only a device targeted by a BitLocker management policy with a Client Management
/// rule talks to the recovery service.
#[test]
fn only_a_policy_with_client_management_escrows() {
    use crate::agent::BitLockerPolicy;
    let mut lab = RecoveryLab::new(LabConfig::default()).expect("lab");
    let mp = lab
        .add_management_point("mp1.contoso.com", MpFace::Https)
        .expect("mp");
    for (pc, policy) in [
        ("PC1", BitLockerPolicy::WithClientManagement),
        ("PC2", BitLockerPolicy::WithoutClientManagement),
        ("PC3", BitLockerPolicy::NotTargeted),
    ] {
        lab.add_device(pc, std::slice::from_ref(&mp), Trust::OrganisationRoot)
            .expect("device");
        lab.set_policy(pc, policy).expect("policy");
        lab.enable_bitlocker(pc).expect("bitlocker");
    }
    let escrowed: Vec<(bool, bool)> = ["PC1", "PC2", "PC3"]
        .iter()
        .map(|pc| {
            let s = lab.escrow(pc).expect("escrow");
            (s.contacted, s.escrowed)
        })
        .collect();
    assert_eq!(escrowed, [(true, true), (false, false), (false, false)]);
    let devices: std::collections::BTreeSet<String> = lab
        .stored_rows()
        .expect("rows")
        .into_iter()
        .map(|r| r.device)
        .collect();
    assert_eq!(devices.into_iter().collect::<Vec<_>>(), ["PC1"]);
    let pc2 = lab.handler_log("PC2").expect("log");
    assert_eq!(pc2.len(), 1, "{pc2:?}");
    assert!(pc2[0].contains("no Client Management rule"));
    assert!(lab.handler_log("PC3").expect("log").is_empty());
}

/// Issue 19: the seed's three ways to protect the recovery service, and what each asks of a
/// client. An HTTPS management point wants a PKI client certificate; an HTTPS website on an
/// HTTP management point only the issuer's root; enhanced HTTP nothing but site assignment.
#[test]
fn each_protection_asks_its_own_of_clients() {
    let mut lab = RecoveryLab::new(LabConfig::default()).expect("lab");
    let mp1 = lab
        .add_management_point_protected(
            "mp1.contoso.com",
            MpFace::Https,
            CertificateIssuer::Organisation,
            Some(Protection::HttpsManagementPoint),
        )
        .expect("mp1");
    let mp2 = lab
        .add_management_point_protected(
            "mp2.contoso.com",
            MpFace::Https,
            CertificateIssuer::Organisation,
            Some(Protection::HttpsWebsite),
        )
        .expect("mp2");
    let mp3 = lab
        .add_management_point_protected(
            "mp3.contoso.com",
            MpFace::Https,
            CertificateIssuer::Organisation,
            Some(Protection::EnhancedHttp),
        )
        .expect("mp3");
    let devices = [
        ("PC1", &mp1, Trust::OrganisationRoot, true),
        ("PC2", &mp1, Trust::OrganisationRoot, false),
        ("PC3", &mp2, Trust::OrganisationRoot, false),
        ("PC4", &mp2, Trust::PublicRootsOnly, false),
        ("PC5", &mp3, Trust::PublicRootsOnly, false),
    ];
    for (pc, mp, trust, certificate) in devices {
        lab.add_device(pc, std::slice::from_ref(mp), trust)
            .expect("device");
        if certificate {
            lab.issue_client_certificate(pc)
                .expect("client certificate");
        }
        lab.enable_bitlocker(pc).expect("bitlocker");
    }
    let got: Vec<(&str, bool)> = devices
        .iter()
        .map(|(pc, ..)| (*pc, lab.escrow(pc).expect("escrow").escrowed))
        .collect();
    assert_eq!(
        got,
        [
            ("PC1", true),
            ("PC2", false),
            ("PC3", true),
            ("PC4", false),
            ("PC5", true)
        ]
    );
    // The helpdesk reaches the HTTPS management point with its workstation's certificate.
    lab.add_operator("CONTOSO\\helpdesk1", HelpdeskRole::Helpdesk)
        .expect("operator");
    lab.set_management_point("mp2.contoso.com", MpFace::Down)
        .expect("mp2 down");
    lab.set_management_point("mp3.contoso.com", MpFace::Down)
        .expect("mp3 down");
    let key = lab.recovery_key_ids("PC1").expect("ids")[0].clone();
    let answer = lab
        .helpdesk_recover(
            "CONTOSO\\helpdesk1",
            RecoverBody {
                key_id: key.short().into(),
                kind: crate::record::MaterialKind::RecoveryPassword,
                role: None,
                reason: "ticket 19".into(),
                device: None,
                volume: None,
            },
        )
        .expect("lab");
    assert!(answer.is_ok(), "{answer:?}");
    let pc2 = lab.handler_log("PC2").expect("log").join("\n");
    assert!(pc2.contains("CertificateRequired"), "{pc2}");
    // Recognised by the TLS alert's value, not by its text.
    let again = lab.escrow("PC2").expect("escrow");
    assert!(again.client_certificate_required, "{again:?}");
    assert!(
        !lab.escrow("PC4")
            .expect("escrow")
            .client_certificate_required
    );
    assert!(
        Protection::HttpsWebsite.since_version() > Protection::HttpsManagementPoint.since_version()
    );
    assert!(Protection::EnhancedHttp.since_version() > Protection::HttpsWebsite.since_version());
}

/// Review finding: a rotation carries the reason the service sent (here: the password was
/// stored in plaintext before database encryption was turned on, nothing was disclosed), so
/// that nothing downstream has to guess it from the helpdesk's history.
#[test]
fn a_rotation_carries_the_reason_the_service_sent() {
    use crate::protected_volume::Rotation;
    use crate::wire::RotationReason;
    let mut lab = RecoveryLab::new(LabConfig {
        encrypted: false,
        ..LabConfig::default()
    })
    .expect("lab");
    let mp = lab
        .add_management_point("mp1.contoso.com", MpFace::Https)
        .expect("mp");
    lab.add_device("PC1", std::slice::from_ref(&mp), Trust::OrganisationRoot)
        .expect("device");
    let enabled = lab.enable_bitlocker("PC1").expect("bitlocker");
    assert!(lab.escrow("PC1").expect("escrow").escrowed);
    let on = lab
        .turn_on_database_encryption()
        .expect("turn on")
        .expect("ran");
    assert_eq!(on.rotations, 1);
    lab.advance(15 * 60 * 1000);
    let next = lab.escrow("PC1").expect("escrow");
    assert!(
        matches!(
            next.rotations.as_slice(),
            [Rotation { old, reason: RotationReason::StoredInPlaintext, .. }]
                if old == &enabled.key_id
        ),
        "{:?}",
        next.rotations
    );
    let json = serde_json::to_value(&next).expect("json");
    assert_eq!(
        json["rotations"][0]["reason"],
        serde_json::json!("stored-in-plaintext")
    );
}
