//! The seed's client-side troubleshooting checks, as a run's output per client
//! (`client-checks-NAME.txt`): what an admin at that client would type and read, each answer
//! computed by the component that owns it: `manage-bde -status C:` and `manage-bde
//! -protectors -get C:` from the volume (`volume::view`), the policy as GPRESULT shows it (was
//! the GPO received, was the client rebooted since) from `volume::policy::PolicyResult`, and the
//! certificate thumbprint in the FVE_NKP registry key from the client's store. The volume is as
//! the boot found it; its lock status is the boot's outcome.

use std::fmt::Write as _;

use boot_client::boot::BootResult;

use crate::run::ClientResult;

/// The file name of a client's checks.
pub fn file_name(client: &str) -> String {
    format!("client-checks-{client}.txt")
}

/// The checks of `client`, when the scenario asked for them.
pub fn text(client: &ClientResult) -> Option<String> {
    let checks = client.checks.as_ref()?;
    let unlocked = matches!(
        client.outcome.as_ref().map(|o| &o.result),
        Some(BootResult::Unlocked { .. })
    );
    let label = unlocked.then(|| client.label.clone().unwrap_or_default());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Client-side checks of the seed's troubleshooting section, on {} after the boot\n",
        client.name
    );
    let _ = writeln!(out, "C:\\> manage-bde -status C:");
    out.push_str(&checks.volume.status_text("C:", label.as_deref()));
    let _ = writeln!(out, "\nC:\\> manage-bde -protectors -get C:");
    out.push_str(&checks.volume.protectors_table("C:", None));
    let _ = writeln!(out, "\nC:\\> gpresult /scope computer /v");
    out.push_str(&checks.policy.gpresult_text(&client.name.to_uppercase()));
    let _ = writeln!(
        out,
        "\nC:\\> reg query HKLM\\Software\\Policies\\Microsoft\\SystemCertificates\\FVE_NKP\\Certificates"
    );
    out.push_str(&checks.store.registry_text());
    Some(out)
}
