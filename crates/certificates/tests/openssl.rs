//! The certificates against real OpenSSL 3: what it reads in our `.cer` and `.pfx` files, and
//! that what it makes (`req -x509`, `pkcs12 -export`) imports and validates here. Each test
//! calls `testkit::require_tool("openssl")`: skipped locally without it, failed under CI.

use std::path::Path;
use std::process::Command;

use certificates::{
    CertificateBundle, ProviderCertificate, Thumbprint, files, fixture, import, oid,
};

/// Runs openssl with `args`, asserting success, and returns stdout.
fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("openssl prints text")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// `SHA1 Fingerprint=4A:D0:...` as a thumbprint.
fn openssl_thumbprint(args: &[&str]) -> Thumbprint {
    let out = openssl(args);
    let hex = out
        .trim()
        .split_once('=')
        .expect("openssl prints NAME=FINGERPRINT")
        .1
        .replace(':', "");
    hex.parse().expect("openssl prints 40 hex digits")
}

#[test]
fn openssl_reads_the_cer_as_the_seed_describes() {
    if !testkit::require_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture::network_unlock(1);
    let cer = dir.path().join("BitLocker-NetworkUnlock.cer");
    files::save_cer(&cer, &bundle.certificate).unwrap();

    let text = openssl(&[
        "x509",
        "-inform",
        "DER",
        "-in",
        path(&cer),
        "-text",
        "-noout",
    ]);
    assert!(text.contains("X509v3 Key Usage: critical"), "{text}");
    let ku_line = text
        .lines()
        .skip_while(|l| !l.contains("X509v3 Key Usage"))
        .nth(1)
        .unwrap();
    assert_eq!(ku_line.trim(), "Key Encipherment");
    assert!(text.contains("X509v3 Extended Key Usage"), "{text}");
    assert!(text.contains(oid::NETWORK_UNLOCK), "{text}");
    assert!(text.contains(oid::APPLICATION_POLICIES), "{text}");
    assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
    assert!(text.contains("sha512WithRSAEncryption"), "{text}");
    assert!(
        text.contains("Subject: CN = BitLocker Network Unlock certificate"),
        "{text}"
    );

    let thumbprint = openssl_thumbprint(&[
        "x509",
        "-inform",
        "DER",
        "-in",
        path(&cer),
        "-noout",
        "-fingerprint",
        "-sha1",
    ]);
    assert_eq!(thumbprint, bundle.thumbprint());
}

#[test]
fn openssl_parses_the_application_policies_der() {
    if !testkit::require_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cer = dir.path().join("c.cer");
    files::save_cer(&cer, &fixture::network_unlock(1).certificate).unwrap();
    // asn1parse walks every extension's DER; -strparse into the extension value proves it is a
    // SEQUENCE OF SEQUENCE { OID }.
    let dump = openssl(&["asn1parse", "-inform", "DER", "-in", path(&cer)]);
    let offset = dump
        .lines()
        .skip_while(|l| !l.contains(":1.3.6.1.4.1.311.21.10"))
        .nth(1)
        .and_then(|l| l.split(':').next())
        .map(|o| o.trim().to_owned())
        .expect("the application policies extension is present");
    let inner = openssl(&[
        "asn1parse",
        "-inform",
        "DER",
        "-in",
        path(&cer),
        "-strparse",
        &offset,
    ]);
    let lines: Vec<&str> = inner.lines().collect();
    assert_eq!(lines.len(), 3, "{inner}");
    assert!(lines[0].contains("cons: SEQUENCE"), "{inner}");
    assert!(lines[1].contains("cons: SEQUENCE"), "{inner}");
    assert!(
        lines[2].contains("OBJECT") && lines[2].contains(oid::NETWORK_UNLOCK),
        "{inner}"
    );
}

#[test]
fn openssl_reads_the_pfx_with_its_password() {
    if !testkit::require_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = fixture::network_unlock(1);
    let written = files::save_cer_and_pfx(dir.path(), "nu", &bundle, "P").unwrap();
    let pfx = path(&written.pfx);

    let info = Command::new("openssl")
        .args([
            "pkcs12", "-info", "-in", pfx, "-nokeys", "-passin", "pass:P",
        ])
        .output()
        .unwrap();
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    // -info writes the structure to stderr: PBES2 with AES-256 and a SHA-256 MAC.
    let structure = String::from_utf8_lossy(&info.stderr);
    assert!(structure.contains("MAC: sha256"), "{structure}");
    assert!(
        structure.contains("PBES2") && structure.contains("AES-256-CBC"),
        "{structure}"
    );
    let certs = import::from_pem(&info.stdout).unwrap();
    assert_eq!(certs.certificate, bundle.certificate);
    assert_eq!(certs.private_key, None);

    let with_key = openssl(&["pkcs12", "-in", pfx, "-nodes", "-passin", "pass:P"]);
    let read = import::from_pem(with_key.as_bytes()).unwrap();
    assert_eq!(
        read,
        CertificateBundle::new(bundle.certificate.clone(), bundle.private_key.clone())
    );

    let wrong = Command::new("openssl")
        .args([
            "pkcs12",
            "-info",
            "-in",
            pfx,
            "-nokeys",
            "-passin",
            "pass:wrong",
        ])
        .output()
        .unwrap();
    assert!(!wrong.status.success());
}

#[test]
fn openssl_verifies_a_ca_issued_certificate_and_reads_its_chain() {
    if !testkit::require_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, leaf) = fixture::ca_issued(3, 4);
    let ca_pem = dir.path().join("ca.pem");
    let leaf_pem = dir.path().join("leaf.pem");
    std::fs::write(&ca_pem, ca.certificate().to_pem()).unwrap();
    std::fs::write(&leaf_pem, leaf.certificate.to_pem()).unwrap();
    let verified = openssl(&["verify", "-CAfile", path(&ca_pem), path(&leaf_pem)]);
    assert!(verified.trim().ends_with(": OK"), "{verified}");
    // The CA's own signature is checked too (-check_ss_sig).
    let self_verified = openssl(&[
        "verify",
        "-check_ss_sig",
        "-CAfile",
        path(&ca_pem),
        path(&ca_pem),
    ]);
    assert!(self_verified.trim().ends_with(": OK"), "{self_verified}");

    let pfx = dir.path().join("leaf.pfx");
    files::save_pfx(&pfx, &leaf, "P").unwrap();
    let certs = openssl(&["pkcs12", "-in", path(&pfx), "-nokeys", "-passin", "pass:P"]);
    assert_eq!(certs.matches("BEGIN CERTIFICATE").count(), 2, "{certs}");
}

#[test]
fn a_self_signed_certificate_verifies_under_openssl() {
    if !testkit::require_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("self.pem");
    std::fs::write(&pem, fixture::network_unlock(1).certificate.to_pem()).unwrap();
    let verified = openssl(&["verify", "-check_ss_sig", "-CAfile", path(&pem), path(&pem)]);
    assert!(verified.trim().ends_with(": OK"), "{verified}");
}

#[test]
fn an_openssl_made_certificate_imports_and_validates() {
    if !testkit::require_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let cert = dir.path().join("cert.pem");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-sha512",
        "-days",
        "365",
        "-keyout",
        path(&key),
        "-out",
        path(&cert),
        "-subj",
        "/CN=BitLocker Network Unlock certificate",
        "-addext",
        "extendedKeyUsage=1.3.6.1.4.1.311.67.1.1",
        "-addext",
        "keyUsage=critical,keyEncipherment",
    ]);
    let expected = openssl_thumbprint(&[
        "x509",
        "-in",
        path(&cert),
        "-noout",
        "-fingerprint",
        "-sha1",
    ]);

    // OpenSSL 3's default .pfx (PBES2, AES-256, SHA-256 MAC) and the 3DES/SHA-1 form older
    // Windows exports.
    let modern = dir.path().join("modern.pfx");
    let legacy = dir.path().join("legacy.pfx");
    let export = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "pkcs12",
            "-export",
            "-in",
            path(&cert),
            "-inkey",
            path(&key),
            "-out",
            path(out),
            "-passout",
            "pass:P",
        ];
        args.extend_from_slice(extra);
        openssl(&args);
    };
    export(&modern, &[]);
    export(
        &legacy,
        &[
            "-certpbe",
            "PBE-SHA1-3DES",
            "-keypbe",
            "PBE-SHA1-3DES",
            "-macalg",
            "sha1",
        ],
    );
    for pfx in [&modern, &legacy] {
        let provider: ProviderCertificate =
            files::load_provider_certificate(pfx, Some("P")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(provider.thumbprint(), expected, "{}", pfx.display());
        let key_from_pem = files::load_private_key(&key).unwrap();
        assert_eq!(provider.private_key(), &key_from_pem);
    }
    assert!(matches!(
        files::load_provider_certificate(&modern, Some("wrong")),
        Err(certificates::FileError::Import {
            source: certificates::ImportError::WrongPassword,
            ..
        })
    ));

    // And as PEM files: the certificate alone validates for a client.
    let client = files::load_network_unlock_certificate(&cert).unwrap();
    assert_eq!(client.thumbprint(), expected);
}

#[test]
fn an_openssl_certificate_without_the_eku_is_refused() {
    if !testkit::require_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let cert = dir.path().join("cert.pem");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:1024",
        "-nodes",
        "-days",
        "1",
        "-keyout",
        path(&key),
        "-out",
        path(&cert),
        "-subj",
        "/CN=not for unlock",
        "-addext",
        "keyUsage=critical,digitalSignature",
    ]);
    let err = files::load_network_unlock_certificate(&cert).unwrap_err();
    let certificates::FileError::Unfit { source, .. } = err else {
        panic!("expected Unfit, got {err:?}");
    };
    let codes: Vec<&str> = source.reasons().iter().map(|r| r.code()).collect();
    assert_eq!(
        codes,
        [
            "key-too-small",
            "missing-network-unlock-eku",
            "key-encipherment-not-allowed"
        ]
    );
}
