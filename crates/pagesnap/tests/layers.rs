//! The library's top-level modules form layers: no module imports, through any
//! chain of `crate::` paths, a module that imports it back.
//!
//! Edges are read off the source text: `crate::m`, `crate::{m, ..}` and names
//! lib.rs re-exports (`crate::Region` is `region`), with `//` comments, items
//! under `#[cfg(test)]` and `*_tests.rs` files left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module -> module it imports -> files that do.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Identifiers, `::` and other punctuation one character each, leaving out `//`
/// comments and the items marked `#[cfg(test)]`.
fn tokens(src: &str) -> Vec<&str> {
    let mut all = Vec::new();
    for line in src.lines() {
        let mut s = line.split("//").next().unwrap_or("");
        while let Some(c) = s.chars().next() {
            let n = match c {
                c if is_ident(c) => s.find(|c| !is_ident(c)).unwrap_or(s.len()),
                _ if s.starts_with("::") => 2,
                c => c.len_utf8(),
            };
            if !c.is_whitespace() {
                all.push(&s[..n]);
            }
            s = &s[n..];
        }
    }
    // A test item ends at its first `;` outside braces, or its closing brace.
    let (mut out, mut skip, mut depth) = (Vec::new(), false, 0);
    for (i, &t) in all.iter().enumerate() {
        skip |= all[i..].starts_with(&["#", "[", "cfg", "(", "test", ")", "]"]);
        depth += i32::from(skip && t == "{") - i32::from(skip && t == "}");
        if !skip {
            out.push(t);
        }
        skip &= !(depth == 0 && (t == ";" || t == "}"));
    }
    out
}

/// The first segment of each `crate::` path: `crate::a::b`, `crate::{a, b::c}`.
fn crate_paths<'a>(t: &[&'a str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    for i in (0..t.len().saturating_sub(2)).filter(|&i| t[i] == "crate" && t[i + 1] == "::") {
        if t[i + 2] != "{" {
            out.push(t[i + 2]);
            continue;
        }
        let mut depth = 0;
        for w in t[i + 2..].windows(2) {
            depth += i32::from(w[0] == "{") - i32::from(w[0] == "}");
            if depth == 0 {
                break;
            }
            if depth == 1 && (w[0] == "{" || w[0] == ",") {
                out.push(w[1]);
            }
        }
    }
    out
}

/// Each name lib.rs re-exports, and the module it comes from: the nearest
/// module named before it in its `pub use`.
fn reexports(lib: &[&str], modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for i in (0..lib.len()).filter(|&i| lib[i..].starts_with(&["pub", "use"])) {
        let mut from = None;
        for w in lib[i + 2..].windows(2).take_while(|w| w[0] != ";") {
            if !w[0].starts_with(is_ident) {
                continue;
            } else if w[1] == "::" {
                from = modules.get(w[0]).cloned().or(from);
            } else if let Some(m) = &from {
                names.insert(w[0].to_string(), m.clone());
            }
        }
    }
    names
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    for path in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
        if path.is_dir() {
            walk(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

fn graph(root: &Path) -> Graph {
    let mut files = Vec::new();
    walk(root, &mut files);
    let rel = |p: &Path| p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
    let top = |p: &Path| rel(p).split(['/', '.']).next().unwrap().to_string();
    let modules: BTreeSet<String> = files.iter().map(|p| top(p)).collect();
    let lib = std::fs::read_to_string(root.join("lib.rs")).unwrap();
    let names = reexports(&tokens(&lib), &modules);
    let mut g = Graph::new();
    for path in files.iter().filter(|p| !rel(p).ends_with("_tests.rs")) {
        let (from, src) = (top(path), std::fs::read_to_string(path).unwrap());
        for name in crate_paths(&tokens(&src)) {
            match names.get(name).or(modules.get(name)) {
                Some(to) if *to != from && from != "lib" => {
                    let edge = g.entry(from.clone()).or_default().entry(to.clone());
                    edge.or_default().insert(rel(path));
                }
                _ => {}
            }
        }
    }
    g
}

/// A path `[a, b, .., a]` of imports, if there is one.
fn cycle(g: &Graph, m: &str, stack: &mut Vec<String>) -> Option<Vec<String>> {
    if let Some(i) = stack.iter().position(|s| s == m) {
        return Some([&stack[i..], &[m.to_string()]].concat());
    }
    stack.push(m.to_string());
    let to = g.get(m).into_iter().flat_map(|t| t.keys());
    let found = to.into_iter().find_map(|t| cycle(g, t, stack));
    stack.pop();
    found
}

#[test]
fn top_level_modules_import_no_cycle() {
    let g = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    for (from, to) in &g {
        println!("{from} -> {:?}", to.keys().collect::<Vec<_>>());
    }
    // The reading found the graph at all (an edge through a re-export).
    let found = g.get("region").is_some_and(|t| t.contains_key("snapshot"));
    assert!(found, "{g:?}");
    if let Some(c) = g.keys().find_map(|m| cycle(&g, m, &mut Vec::new())) {
        let via = |w: &[String]| format!("\n  {} -> {}: {:?}", w[0], w[1], g[&w[0]][&w[1]]);
        let via: String = c.windows(2).map(via).collect();
        panic!("import cycle {}:{via}", c.join(" -> "));
    }
}
