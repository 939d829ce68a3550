//! Runs one of the recovery-escrow scenarios in the simulator and prints its report as JSON:
//! `cargo run -p recovery-service --example scenario -- helpdesk-recovery-rotates 7`.

use recovery_service::sim::{Scenario, run};

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let name = args
        .next()
        .unwrap_or_else(|| "escrow-when-bitlocker-enabled".into());
    let seed = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let Some(scenario) = Scenario::from_name(&name) else {
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        eprintln!("unknown scenario {name:?}; one of {}", names.join(", "));
        return std::process::ExitCode::FAILURE;
    };
    match run(scenario, seed) {
        Ok(report) => {
            match serde_json::to_string_pretty(&report) {
                Ok(json) => println!("{json}"),
                Err(e) => eprintln!("{e}"),
            }
            if report.all_held() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
