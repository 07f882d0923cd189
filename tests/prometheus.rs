//! The Grafana dashboards against a real Prometheus (built from the Go
//! module proxy by `just prometheus`): it scrapes the one-process mesh with
//! two batchers under load, and every panel's query, evaluated by
//! Prometheus, returns a series; those that show one line per batcher show
//! two.
//!
//! Needs the binary in `PROMETHEUS_BIN`, so it is ignored by a plain
//! `cargo test`; `just test-prometheus` runs it.

mod common;

use common::{
    client, http_get, infer, mesh,
    processes::{Process, free_port, reachable},
};
use serde_json::Value;
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// How often Prometheus scrapes: often, so that a short run has rates.
const SCRAPE: &str = "1s";
/// What `$__rate_interval` becomes: several scrapes.
const RATE_INTERVAL: &str = "15s";

/// Every panel's queries in the dashboards, with the panel's title.
fn dashboard_queries() -> Vec<(String, String)> {
    let folder = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/dashboards"
    ));
    let mut queries = Vec::new();
    for file in std::fs::read_dir(folder).unwrap() {
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(file.unwrap().path()).unwrap()).unwrap();
        let mut panels: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
        while let Some(panel) = panels.pop() {
            panels.extend(panel["panels"].as_array().into_iter().flatten());
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    let title = panel["title"].as_str().unwrap_or_default().to_string();
                    queries.push((title, expr.replace("$__rate_interval", RATE_INTERVAL)));
                }
            }
        }
    }
    queries
}

/// A query's value for a URL.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The result of an instant query: its series.
async fn query(prometheus: SocketAddr, expr: &str) -> Result<Vec<Value>, String> {
    let response = http_get(prometheus, &format!("/api/v1/query?query={}", encode(expr))).await;
    let body: Value = serde_json::from_str(&response.body)
        .map_err(|error| format!("{error}: {}", response.body))?;
    if body["status"] != "success" {
        return Err(response.body);
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

fn config(folder: &Path, mesh: SocketAddr) -> PathBuf {
    let path = folder.join("prometheus.yml");
    std::fs::write(
        &path,
        format!(
            "global:\n  scrape_interval: {SCRAPE}\n  evaluation_interval: {SCRAPE}\n\
             scrape_configs:\n  - job_name: horoscoper-mesh\n    static_configs:\n      \
             - targets: [\"{mesh}\"]\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Prometheus: just test-prometheus"]
async fn every_dashboard_query_returns_a_series_in_a_real_prometheus() {
    let binary = PathBuf::from(std::env::var("PROMETHEUS_BIN").expect("PROMETHEUS_BIN is set"));
    let folder = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("prometheus");
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder).unwrap();

    let mesh = mesh(&[
        "--batchers",
        "2",
        "--min-delay-ms",
        "20",
        "--max-delay-ms",
        "80",
    ])
    .await;
    let config = config(&folder, mesh.addr);
    let prometheus = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _prometheus = Process::start(
        &binary,
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", folder.join("data").display()),
            format!("--web.listen-address={prometheus}"),
        ],
        &[],
    );
    reachable(prometheus, "Prometheus").await;

    // Load on both batchers for a while, so that every rate has samples.
    let client = client(mesh.addr).await;
    let until = Instant::now() + Duration::from_secs(12);
    let mut flows = tokio::task::JoinSet::new();
    for n in 0..6 {
        let client = client.clone();
        flows.spawn(async move {
            let mut round = 0;
            while Instant::now() < until {
                round += 1;
                infer(&client, &format!("flow {n}, request {round}"))
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(flow) = flows.join_next().await {
        flow.unwrap();
    }
    // A few scrapes after the load, so that the last rates cover it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let scrapes = query(prometheus, "count_over_time(up[1m])").await.unwrap();
    assert!(!scrapes.is_empty(), "Prometheus scraped the mesh");

    let queries = dashboard_queries();
    assert!(queries.len() >= 15, "{} queries", queries.len());
    let mut empty = Vec::new();
    for (title, expr) in &queries {
        let series = query(prometheus, expr)
            .await
            .unwrap_or_else(|error| panic!("{title:?}: {expr} failed: {error}"));
        eprintln!("prometheus: {title:?}: {} series: {expr}", series.len());
        if series.is_empty() {
            empty.push(format!("{title:?}: {expr}"));
        }
        if expr.contains("by (batcher)") {
            assert_eq!(
                series.len(),
                2,
                "{title:?}, one line per batcher: {series:?}"
            );
        }
    }
    assert!(empty.is_empty(), "queries with no series: {empty:#?}");
}
