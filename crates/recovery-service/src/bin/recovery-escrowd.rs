//! A stand-alone recovery service process: the crash test `kill -9`s it and restarts it on the
//! same database, and `nulab recovery serve` does what it does through the same library call.
//!
//! Usage: `recovery-escrowd --db PATH --cert PEM --cert-key PEM --https ADDR [--http ADDR]
//! [--key-file PATH | --unencrypted]`. Prints `https=ADDR` (and `http=ADDR`) once listening.

use std::net::SocketAddr;
use std::path::PathBuf;

use recovery_service::server::{ServiceConfig, load_pem, start};

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("recovery-escrowd: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (mut db, mut cert, mut cert_key, mut key_file) = (None, None, None, None);
    let (mut https, mut http, mut unencrypted) = (None, None, false);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--db" => db = Some(PathBuf::from(value()?)),
            "--cert" => cert = Some(PathBuf::from(value()?)),
            "--cert-key" => cert_key = Some(PathBuf::from(value()?)),
            "--key-file" => key_file = Some(PathBuf::from(value()?)),
            "--https" => https = Some(parse_addr(&value()?)?),
            "--http" => http = Some(parse_addr(&value()?)?),
            "--unencrypted" => unencrypted = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let db = db.ok_or("--db is required")?;
    let (chain, key) = load_pem(
        &cert.ok_or("--cert is required")?,
        &cert_key.ok_or("--cert-key is required")?,
    )
    .map_err(|e| e.to_string())?;
    if key_file.is_none() && !unencrypted {
        return Err("give --key-file, or --unencrypted for the comparison mode".into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let running = start(ServiceConfig {
            database: db,
            key_file,
            cert_chain: chain,
            cert_key: key,
            https: https.ok_or("--https is required")?,
            http,
            limits: Default::default(),
        })
        .await
        .map_err(|e| e.to_string())?;
        println!("https={}", running.https);
        if let Some(h) = running.http {
            println!("http={h}");
        }
        std::future::pending::<()>().await;
        Ok(())
    })
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|e| format!("{s:?}: {e}"))
}
