//! The shape of the code, checked: no two modules of a crate depend on each
//! other (directly or around a circle), the services never import each
//! other, and `horoscoper-proto` (what a client links) depends on none of
//! the services' weight: no web framework, flag parser, exporter or
//! allocator.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
    process::Command,
};

const CRATES: [&str; 6] = [
    "proto/src",
    "runtime/src",
    "gateway/src",
    "batcher/src",
    "worker/src",
    "src",
];

/// A crate's modules (its top-level files) and the modules each names
/// through `crate::`, in code (not in comments, not in its tests).
fn module_graph(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let module = name.strip_suffix(".rs")?.to_owned();
            (module != "lib" && module != "main").then_some(module)
        })
        .collect();
    modules
        .iter()
        .map(|module| {
            let text = fs::read_to_string(dir.join(format!("{module}.rs"))).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            let mut uses = BTreeSet::new();
            let mut in_crate_block = false;
            for line in code.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
                if line.starts_with("use crate::{") {
                    in_crate_block = !line.ends_with("};");
                }
                let named = |word: &str| modules.contains(word) && word != module;
                if line.starts_with("use crate::{") || in_crate_block {
                    let words = line.split(|c: char| !(c.is_alphanumeric() || c == '_'));
                    uses.extend(words.filter(|w| named(w)).map(str::to_owned));
                    if line.ends_with("};") {
                        in_crate_block = false;
                    }
                }
                for rest in line.split("crate::").skip(1) {
                    let word: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if named(&word) {
                        uses.insert(word);
                    }
                }
            }
            (module.clone(), uses)
        })
        .collect()
}

/// A circle of modules, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut circle = path[at..].to_vec();
            circle.push(module.to_owned());
            return Some(circle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_owned());
        for next in &graph[module] {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(module.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|module| visit(module, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_depends_on_itself_through_others() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in CRATES {
        let graph = module_graph(&root.join(dir));
        assert!(graph.len() > 1 || dir == "src", "{dir} has modules");
        assert_eq!(cycle(&graph), None, "{dir}: a circle of imports");
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let graph = BTreeMap::from([
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["c".to_owned()])),
        ("c".to_owned(), BTreeSet::from(["a".to_owned()])),
        ("d".to_owned(), BTreeSet::new()),
    ]);
    assert_eq!(cycle(&graph).unwrap().len(), 4);
}

#[test]
fn the_services_never_import_each_other() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for service in ["gateway", "batcher", "worker"] {
        let manifest = fs::read_to_string(root.join(service).join("Cargo.toml")).unwrap();
        for other in ["gateway", "batcher", "worker"] {
            assert!(
                service == other || !manifest.contains(&format!("horoscoper-{other}")),
                "{service} depends on {other}"
            );
        }
    }
}

#[test]
fn the_wire_crate_carries_none_of_the_services_weight() {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-p",
            "horoscoper-proto",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    let tree = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success() && tree.contains("tonic"), "{tree}");
    for heavy in [
        "axum ",
        "clap ",
        "opentelemetry-otlp ",
        "opentelemetry_sdk ",
        "tikv-jemallocator ",
        "tracing-subscriber ",
        "prometheus-client ",
    ] {
        assert!(
            !tree.lines().any(|line| line.starts_with(heavy)),
            "horoscoper-proto depends on {heavy}"
        );
    }
}
