//! The modules of pslite-io must not import each other in a cycle.
//!
//! Tasks talk through the messages in `msg`, so no task's module needs
//! another's, and the crate reads from the bottom (`error`, `settings`,
//! `msg`) up to the APIs (`handle`, `start`, `worker`, `local`). The
//! compiler accepts cycles between modules of one crate, so this test
//! reads the sources: every `crate::name` in a module's code (comments
//! are skipped, so doc links do not count) is an edge to the module
//! `name` is, or to the module the crate root re-exports `name` from.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn the_modules_import_each_other_without_a_cycle() {
    let graph = io_module_graph();
    assert!(
        graph.get("driver").is_some_and(|imports| imports.contains("msg")),
        "the scan finds no edge driver -> msg, so it finds nothing: {graph:#?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("the modules of pslite-io import each other in a cycle: {}\n{}", cycle.join(" -> "), render(&graph));
    }
}

#[test]
fn the_messages_depend_on_no_task() {
    let graph = io_module_graph();
    let imports = graph.get("msg").expect("a module msg");
    let allowed = BTreeSet::from(["error".to_owned()]);
    assert!(imports.is_subset(&allowed), "msg imports {imports:?}; it may import only {allowed:?}");
}

#[test]
fn a_cycle_is_found_and_a_tree_has_none() {
    let edges = |pairs: &[(&str, &str)]| {
        let mut graph = Graph::new();
        for (from, to) in pairs {
            graph.entry((*from).to_owned()).or_default().insert((*to).to_owned());
            graph.entry((*to).to_owned()).or_default();
        }
        graph
    };
    let cycle = find_cycle(&edges(&[("a", "b"), ("b", "c"), ("c", "a"), ("a", "d")])).expect("a cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4, "{cycle:?}");
    assert_eq!(find_cycle(&edges(&[("a", "b"), ("a", "c"), ("b", "c"), ("c", "d")])), None);
    let names = scan_imports("use crate::{a, b::{C, D}};\n// crate::c\nlet x = crate::d::f(); $crate::e");
    assert_eq!(names, BTreeSet::from(["a", "b", "d"].map(str::to_owned)));
}

/// Module name → the modules it imports, for every module but the root.
fn io_module_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources: BTreeMap<String, String> = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("read src") {
        let path = entry.expect("a directory entry").path();
        let Some(module) = path.file_stem().and_then(|stem| stem.to_str()).map(str::to_owned) else { continue };
        let mut text = String::new();
        for file in rust_files(&path) {
            text.push_str(&std::fs::read_to_string(&file).expect("read a source file"));
            text.push('\n');
        }
        sources.entry(module).or_default().push_str(&text);
    }
    let root = sources.remove("lib").expect("src/lib.rs");
    let mut graph: Graph = sources.keys().map(|module| (module.clone(), BTreeSet::new())).collect();
    let reexports = root_reexports(&root, &graph);
    for (module, text) in &sources {
        let mut resolved = BTreeSet::new();
        for name in scan_imports(text) {
            let target = if graph.contains_key(&name) {
                name
            } else if let Some(target) = reexports.get(&name) {
                target.clone()
            } else {
                // Skipping it would make the graph silently wrong.
                panic!("{module}: crate::{name} is no module and no re-export of the root")
            };
            if target != *module {
                resolved.insert(target);
            }
        }
        graph.insert(module.clone(), resolved);
    }
    graph
}

/// `path` itself if a Rust file, else every Rust file under it.
fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).expect("read a module directory") {
            files.extend(rust_files(&entry.expect("a directory entry").path()));
        }
        files
    } else if path.extension().is_some_and(|ext| ext == "rs") {
        vec![path.to_owned()]
    } else {
        Vec::new()
    }
}

/// Names the root re-exports (`pub use module::{A, B};`) → their module.
fn root_reexports(root: &str, modules: &Graph) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for statement in strip_comments(root).split(';') {
        let statement = statement.split_whitespace().collect::<Vec<_>>().join(" ");
        let Some(rest) = statement.strip_prefix("pub use ") else { continue };
        let Some((module, items)) = rest.split_once("::") else { continue };
        if !modules.contains_key(module) {
            continue;
        }
        let items = items.trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            // `X as Y` is re-exported as `Y`.
            let exported = item.rsplit(" as ").next().unwrap_or(item).rsplit("::").next().unwrap_or(item);
            names.insert(exported.trim().to_owned(), module.to_owned());
        }
    }
    names
}

/// The first path segment after every `crate::` in the code of `text`
/// (of each item, for a `crate::{…}` group).
fn scan_imports(text: &str) -> BTreeSet<String> {
    let code = strip_comments(text);
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("crate::") {
        let start = from + at;
        from = start + "crate::".len();
        // `pslite_crate::`, `$crate::`: not this crate's root.
        if code[..start].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let after = &code[from..];
        match after.strip_prefix('{') {
            Some(group) => names.extend(top_level_items(group).into_iter().map(|item| leading_ident(item).to_owned())),
            None => {
                names.insert(leading_ident(after).to_owned());
            }
        }
    }
    names.remove("");
    names
}

/// The comma-separated items of a `{…}` group whose opening brace was
/// just passed, up to its closing brace.
fn top_level_items(group: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut item_start = 0;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[item_start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[item_start..i]);
                item_start = i + 1;
            }
            _ => {}
        }
    }
    items
}

fn leading_ident(text: &str) -> &str {
    let text = text.trim_start();
    let end = text.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(text.len());
    &text[..end]
}

/// `text` without `//` line comments and `/* */` block comments.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let Some(at) = [rest.find("//"), rest.find("/*")].into_iter().flatten().min() else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        let comment = &rest[at..];
        rest = if comment.starts_with("//") {
            comment.find('\n').map_or("", |end| &comment[end..])
        } else {
            comment.find("*/").map_or("", |end| &comment[end + 2..])
        };
    }
}

/// A path `a -> b -> … -> a` through the graph, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit<'g>(
        graph: &'g Graph,
        node: &'g str,
        marks: &mut BTreeMap<&'g str, Mark>,
        path: &mut Vec<&'g str>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = path.iter().position(|n| *n == node).expect("an open node is on the path");
                let mut cycle: Vec<String> = path[from..].iter().map(|n| (*n).to_owned()).collect();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node, Mark::Open);
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(graph, next, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(graph, node, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

fn render(graph: &Graph) -> String {
    let lines: Vec<String> = graph
        .iter()
        .map(|(module, imports)| {
            let imports: Vec<&str> = imports.iter().map(String::as_str).collect();
            format!("  {module}: {}", imports.join(", "))
        })
        .collect();
    lines.join("\n")
}
