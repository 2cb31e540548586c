//! The house stays as drawn: the domain's modules form layers (leaves,
//! entities and rules, the planner, the operations), each using only those
//! before it, with no circle; the domain names no protocol, store or
//! metrics crate; and the configuration reads into the subsystems' own
//! settings types, never the other way round. Read from the `use` lines of
//! the sources (tests aside), so that a change that breaks the layering
//! fails here, naming the import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each domain module's layer, as `src/domain/mod.rs` describes them.
const LAYERS: &[(&str, u8)] = &[
    ("object", 1),
    ("kinds", 1),
    ("conditions", 1),
    ("names", 1),
    ("cursor", 1),
    ("durations", 1),
    ("change", 1),
    ("istio", 1),
    ("authz", 2),
    ("error", 2),
    ("traffic", 2),
    ("strategy", 2),
    ("mesh", 2),
    ("deployment", 2),
    ("release", 2),
    ("phase", 2),
    ("status", 2),
    ("validation", 2),
    ("plan", 3),
    ("progress", 3),
    ("ports", 4),
    ("service", 4),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The source of a file without its tests.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// Every `use` statement of `code`, whole (over several lines).
fn uses(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in code.lines() {
        let trimmed = line.trim();
        if current.is_none() && (trimmed.starts_with("use ") || trimmed.starts_with("pub use ")) {
            current = Some(String::new());
        }
        if let Some(statement) = current.as_mut() {
            statement.push_str(trimmed);
            statement.push(' ');
            if trimmed.ends_with(';') {
                out.push(current.take().unwrap());
            }
        }
    }
    out
}

/// The first segments of the paths a `use` names after `prefix`
/// (`super::` or `crate::domain::`), braces opened at their top level.
fn names_after(statement: &str, prefix: &str) -> Vec<String> {
    let Some(at) = statement.find(prefix) else {
        return Vec::new();
    };
    let rest = &statement[at + prefix.len()..];
    let rest = rest.trim_end_matches([';', ' ']);
    if let Some(group) = rest.strip_prefix('{') {
        // Top-level items of the group.
        let mut depth = 0;
        let mut item = String::new();
        let mut items = Vec::new();
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(std::mem::take(&mut item));
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        items.push(item);
        items
            .iter()
            .filter_map(|i| first_segment(i.trim()))
            .collect()
    } else {
        first_segment(rest).into_iter().collect()
    }
}

fn first_segment(path: &str) -> Option<String> {
    let segment: String = path
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!segment.is_empty() && segment != "self").then_some(segment)
}

/// The domain's module graph: each module and the modules it uses.
fn domain_graph() -> BTreeMap<String, BTreeMap<String, String>> {
    let domain = src().join("domain");
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut files: Vec<(String, PathBuf, bool)> = Vec::new();
    for entry in std::fs::read_dir(&domain).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if path.is_dir() {
            for inner in std::fs::read_dir(&path).unwrap() {
                let inner = inner.unwrap().path();
                let top = inner.file_stem().unwrap() == "mod";
                files.push((name.clone(), inner, top));
            }
        } else if name != "mod" {
            files.push((name, path, true));
        }
    }
    let known: BTreeSet<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
    for (module, path, top) in files {
        let edges = graph.entry(module.clone()).or_default();
        for statement in uses(&code_of(&path)) {
            let mut targets = names_after(&statement, "crate::domain::");
            // In a module's own file, `super::` is the domain; in a file
            // of a module's folder, it is the module itself.
            if top && !statement.contains("super::super::") {
                targets.extend(names_after(&statement, "super::"));
            }
            for target in targets {
                if target != module && known.contains(target.as_str()) {
                    edges.entry(target).or_insert_with(|| statement.clone());
                }
            }
        }
    }
    graph
}

#[test]
fn every_domain_module_has_a_layer() {
    let graph = domain_graph();
    let layered: BTreeSet<&str> = LAYERS.iter().map(|(m, _)| *m).collect();
    let found: BTreeSet<&str> = graph.keys().map(String::as_str).collect();
    assert_eq!(
        found, layered,
        "a domain module without a layer (or a layer without a module): say where it sits in LAYERS and in src/domain/mod.rs"
    );
}

#[test]
fn each_domain_module_uses_only_modules_of_its_layer_or_below_and_no_circle() {
    let graph = domain_graph();
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    for (module, edges) in &graph {
        for (target, statement) in edges {
            assert!(
                layer[target.as_str()] <= layer[module.as_str()],
                "domain::{module} (layer {}) uses domain::{target} (layer {}), a layer above it: `{statement}`",
                layer[module.as_str()],
                layer[target.as_str()]
            );
        }
    }
    // No circle, within a layer either: a topological order exists.
    let mut left: BTreeMap<&str, BTreeSet<&str>> = graph
        .iter()
        .map(|(m, e)| (m.as_str(), e.keys().map(String::as_str).collect()))
        .collect();
    while !left.is_empty() {
        let free: Vec<&str> = left
            .iter()
            .filter(|(_, uses)| uses.is_empty())
            .map(|(m, _)| *m)
            .collect();
        assert!(
            !free.is_empty(),
            "the domain's modules use each other in a circle: {left:?}"
        );
        for m in &free {
            left.remove(m);
        }
        for uses in left.values_mut() {
            for m in &free {
                uses.remove(m);
            }
        }
    }
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

#[test]
fn the_domain_names_no_protocol_store_or_metrics() {
    for path in sources(&src().join("domain")) {
        for statement in uses(&code_of(&path)) {
            for outside in [
                "tonic",
                "axum",
                "prost",
                "rusqlite",
                "tokio_postgres",
                "deadpool",
                "prometheus_client",
                "kube",
                "crate::metrics",
                "crate::store",
                "crate::api",
                "crate::http",
                "crate::transcode",
                "crate::driver",
                "crate::configuration",
                "crate::pb",
            ] {
                let names = statement
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                    .any(|word| word == outside || word.starts_with(&format!("{outside}::")));
                assert!(!names, "{} uses {outside}: `{statement}`", path.display());
            }
        }
    }
}

#[test]
fn the_configuration_reads_into_the_subsystems_never_the_other_way() {
    for path in sources(&src()) {
        if path.starts_with(src().join("configuration"))
            || path.ends_with("main.rs")
            || path.ends_with("startup.rs")
            || path.ends_with("reload.rs")
        {
            continue;
        }
        for statement in uses(&code_of(&path)) {
            assert!(
                !statement.contains("crate::configuration"),
                "{} uses the configuration (it should own its settings type, which the configuration reads into): `{statement}`",
                path.display()
            );
        }
    }
}
