//! The shape of the core, checked: components own their state and never
//! reach into the node, only `node.rs` implements `Node`, and no two
//! modules depend on each other in a circle.
//!
//! Modules are read as text: a reference is any `crate::<module>` in a
//! file of another top-level module. Test modules and the fuzzing bodies
//! are left out, since they drive the whole node on purpose.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Top-level modules and the source files of each (test code stripped).
fn modules() -> BTreeMap<String, Vec<(PathBuf, String)>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules: BTreeMap<String, Vec<(PathBuf, String)>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("core/src is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).expect("under src");
            let first = relative.components().next().expect("a file").as_os_str().to_string_lossy();
            let module = first.trim_end_matches(".rs").to_owned();
            if module == "lib" || module == "tests" || module == "fuzzing" {
                continue;
            }
            let text = fs::read_to_string(&path).expect("a readable source file");
            // Unit tests sit at the end of a file, after `#[cfg(test)]`.
            let code = match text.find("#[cfg(test)]\nmod tests") {
                Some(at) => &text[..at],
                None => &text,
            };
            // Comments name modules without depending on them.
            let code: String = code
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .map(|line| format!("{line}\n"))
                .collect();
            modules.entry(module).or_default().push((relative.to_path_buf(), code));
        }
    }
    modules
}

fn references(code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if known.contains(&name) {
            found.insert(name);
        }
    }
    // `use crate::{a, b::C}` lists.
    for (at, _) in code.match_indices("crate::{") {
        let rest = &code[at + "crate::{".len()..];
        let list = &rest[..rest.find('}').unwrap_or(0)];
        for item in list.split(',') {
            let name = item.trim().split("::").next().unwrap_or("").trim();
            if known.contains(name) {
                found.insert(name.to_owned());
            }
        }
    }
    found
}

#[test]
fn no_component_reaches_into_the_node() {
    for (module, files) in modules() {
        if module == "node" {
            continue;
        }
        for (path, code) in files {
            assert!(!code.contains("crate::node"), "{} imports crate::node", path.display());
            assert!(!code.contains("impl Node {"), "{} implements Node outside node.rs", path.display());
        }
    }
}

/// A cycle of `graph` as "a -> b -> a", if it has one. Depth-first, with
/// modules on the current path marked grey and finished ones black.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<String> {
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<String> {
        if let Some(start) = path.iter().position(|m| m == module) {
            return Some(format!("{} -> {module}", path[start..].join(" -> ")));
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_owned());
        for dep in graph.get(module).into_iter().flatten() {
            if let Some(found) = visit(dep, graph, done, path) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(module.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|module| visit(module, graph, &mut done, &mut Vec::new()))
}

#[test]
fn the_module_graph_has_no_cycles() {
    let modules = modules();
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    let graph: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|(module, files)| {
            let mut deps = BTreeSet::new();
            for (_, code) in files {
                deps.extend(references(code, &known));
            }
            deps.remove(module);
            (module.clone(), deps)
        })
        .collect();
    assert_eq!(cycle(&graph), None, "modules may not depend on each other in a circle");
}

#[test]
fn the_checker_sees_planted_references_and_cycles() {
    let known: BTreeSet<String> = ["node", "requests"].iter().map(|s| (*s).to_owned()).collect();
    let code = "use crate::{node::Node, requests::Requests};\nfn f() { crate::node::x() }";
    assert_eq!(references(code, &known), known);
    let edge = |from: &str, to: &[&str]| (from.to_owned(), to.iter().map(|s| (*s).to_owned()).collect());
    let acyclic: BTreeMap<String, BTreeSet<String>> =
        [edge("a", &["b", "c"]), edge("b", &["c"]), edge("c", &[])].into();
    assert_eq!(cycle(&acyclic), None);
    let cyclic: BTreeMap<String, BTreeSet<String>> = [edge("a", &["b"]), edge("b", &["c"]), edge("c", &["a"])].into();
    assert_eq!(cycle(&cyclic).as_deref(), Some("a -> b -> c -> a"));
}
