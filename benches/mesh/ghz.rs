//! ghz, the gRPC load tool (from the Go module proxy), against `Infer`: a
//! second opinion on scenario 1 from a load generator that is not ours.

use std::{net::SocketAddr, path::Path, process::Command};

/// What ghz measured.
pub struct Ghz {
    /// Calls completed per second.
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Calls that did not end OK: those in flight when ghz's duration ends
    /// are cancelled by ghz itself and count here.
    pub not_ok: u64,
}

/// ghz (`program`) against `Infer` on `addr` with `clients` concurrent calls
/// over 4 connections for `duration`; None when ghz is missing or failed.
pub async fn run(program: &Path, addr: SocketAddr, clients: usize, duration: &str) -> Option<Ghz> {
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    eprintln!("  ghz against {addr} for {duration}");
    let mut command = Command::new(program);
    command
        .args(["--insecure", "--import-paths", proto])
        .args(["--proto", "horoscoper/v1/horoscoper.proto"])
        .args(["--call", "horoscoper.v1.Horoscoper/Infer"])
        .args(["--data", r#"{"prefix":"ghz {{.RequestNumber}}"}"#])
        .args(["--concurrency", &clients.to_string(), "--connections", "4"])
        .args(["--duration", duration, "--format", "json"])
        .arg(addr.to_string());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("ghz's waiter does not panic");
    let output = match output {
        Ok(output) if output.status.success() => output,
        Ok(output) => {
            eprintln!("  ghz failed: {}", String::from_utf8_lossy(&output.stderr));
            return None;
        }
        Err(error) => {
            eprintln!(
                "  ghz not run ({}: {error}); `just bench` installs it",
                program.display()
            );
            return None;
        }
    };
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let percentile = |p: u64| {
        report["latencyDistribution"]
            .as_array()?
            .iter()
            .find(|d| d["percentage"].as_u64() == Some(p))?["latency"]
            .as_f64()
            .map(|ns| ns / 1e6)
    };
    let errors: u64 = report["statusCodeDistribution"]
        .as_object()
        .map(|codes| {
            codes
                .iter()
                .filter(|(code, _)| code.as_str() != "OK")
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0);
    if errors > 0 {
        eprintln!(
            "  ghz: {errors} calls did not end OK (those in flight at its end are cut): {}",
            report["statusCodeDistribution"]
        );
    }
    Some(Ghz {
        rps: report["rps"].as_f64()?,
        p50_ms: percentile(50)?,
        p99_ms: percentile(99)?,
        not_ok: errors,
    })
}
