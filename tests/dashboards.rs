//! The Grafana dashboards in deploy/: their JSON parses, every panel queries
//! something, and every Horoscoper metric a panel queries exists in a live
//! `/metrics` of the mesh.

mod common;

use common::{client, http_get, infer, mesh};
use serde_json::Value;
use std::collections::BTreeSet;

fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut found = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(panel) = stack.pop() {
        stack.extend(panel["panels"].as_array().into_iter().flatten()); // rows
        if panel["type"] != "row" {
            found.push(panel);
        }
    }
    found
}

/// The `horoscoper_…` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("horoscoper_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

#[tokio::test]
async fn every_metric_a_dashboard_queries_is_exported() {
    let mesh = mesh(&["--min-delay-ms", "0", "--max-delay-ms", "0"]).await;
    infer(&client(mesh.addr).await, "hello").await.unwrap();
    let exposition = http_get(mesh.addr, "/metrics").await.body;
    let exported: BTreeSet<&str> = exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| line.split(['{', ' ']).next().unwrap())
        .collect();

    let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/dashboards");
    let mut dashboards = 0;
    for file in std::fs::read_dir(folder).unwrap() {
        let path = file.unwrap().path();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|error| panic!("{} does not parse: {error}", path.display()));
        dashboards += 1;
        assert!(
            dashboard["uid"].is_string() && dashboard["title"].is_string(),
            "{}",
            path.display()
        );
        let panels = panels(&dashboard);
        assert!(!panels.is_empty(), "{} has no panels", path.display());
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or_default();
            let targets = panel["targets"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            assert!(
                !targets.is_empty(),
                "{}: panel {title:?} queries nothing",
                path.display()
            );
            for target in targets {
                let expr = target["expr"].as_str().unwrap_or_default();
                let names = metric_names(expr);
                assert!(
                    !names.is_empty(),
                    "{}: {title:?} queries no Horoscoper metric: {expr}",
                    path.display()
                );
                for name in names {
                    assert!(
                        exported.contains(name.as_str()),
                        "{}: {title:?} queries {name}, which /metrics does not export",
                        path.display()
                    );
                }
            }
        }
    }
    assert_eq!(dashboards, 2, "the API and batching dashboards");
}
