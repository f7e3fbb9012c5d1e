//! The layering of docs/ARCHITECTURE.md, held by a test rather than by
//! memory (rust-analyzer's tidy tests are the model): every `crate::`
//! path in src/ must point down the table below, never up, and never
//! sideways to a module of the same layer unless the table says so. A
//! failure names the file, the line and the rule.
//!
//! Unit test modules (`#[cfg(test)] mod tests`, last in their file) are not
//! read: they are compiled only into the test binary, and some build their
//! fixtures through a higher layer (roles' tests parse a config).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top: (layer, module, what the module may use in its own layer).
/// A module may use any module of a lower layer. A new module needs a row.
const LAYERS: &[(u8, &str, &[&str])] = &[
    // Leaves.
    (0, "time", &[]),
    (0, "sys", &[]),
    (0, "metrics", &[]),
    // Its clock writes time's timestamps.
    (0, "logging", &["time"]),
    // The generic listener, and the model every layer shares.
    (1, "server", &[]),
    (1, "container", &[]),
    // Where callers come from; which role they get.
    (2, "platform", &[]),
    (2, "roles", &["tagging"]),
    (2, "tagging", &[]),
    // The STS cache.
    (3, "credentials", &[]),
    // The core every door calls.
    (4, "broker", &[]),
    // Front doors.
    (5, "imds", &[]),
    (5, "ccreds", &[]),
    (5, "health", &[]),
    // The config file builds every lower layer's settings.
    (6, "config", &[]),
    // Puts a new config in force.
    (7, "reload", &[]),
];

struct Source {
    /// Relative to the crate root, as messages name it: `src/platform/index.rs`.
    name: String,
    /// The top-level module the file belongs to (`platform`), `None` for
    /// lib.rs and main.rs.
    module: Option<String>,
    /// The module path of the file itself (`platform::index`), for `super`.
    path: Vec<String>,
    text: String,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    collect(&root.join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let relative = file.strip_prefix(root).unwrap();
            let inside: Vec<String> = file
                .strip_prefix(root.join("src"))
                .unwrap()
                .with_extension("")
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            let mut path = inside.clone();
            if path.last().is_some_and(|last| last == "mod") {
                path.pop();
            }
            let module = match path.as_slice() {
                [only] if only == "lib" || only == "main" => None,
                [first, ..] => Some(first.clone()),
                [] => None,
            };
            if module.is_none() {
                path.clear();
            }
            Source {
                name: relative.display().to_string(),
                module,
                path,
                text: std::fs::read_to_string(&file).unwrap(),
            }
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's lines up to its unit test module, each with its number;
/// comment lines blanked, so that a doc link is not read as an import.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut code = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let test_module = line.trim() == "#[cfg(test)]"
            && lines
                .get(i + 1)
                .is_some_and(|next| next.trim_start().starts_with("mod tests"));
        if test_module {
            break;
        }
        let kept = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        code.push((i + 1, kept.to_string()));
    }
    code
}

/// The top-level modules `source` names through `crate::` (or `super::`
/// up to the crate), each with the line it is named on.
fn imports(source: &Source) -> Vec<(usize, String)> {
    let lines = code_lines(&source.text);
    // One string, with where each line starts, so `use crate::{a, b}` may
    // span lines.
    let mut text = String::new();
    let mut starts = Vec::new();
    for (number, line) in &lines {
        starts.push((text.len(), *number));
        text.push_str(line);
        text.push('\n');
    }
    let line_at = |offset: usize| {
        let i = starts.partition_point(|(start, _)| *start <= offset);
        starts[i - 1].1
    };
    let mut found = Vec::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < text.len() {
        let rest = &text[at..];
        let preceded_by_ident =
            at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        let Some(tail) = (!preceded_by_ident)
            .then(|| after_crate_root(rest, source.path.len()))
            .flatten()
        else {
            at += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let after = at + (rest.len() - tail.len());
        if let Some(group) = tail.strip_prefix('{') {
            for name in group_heads(group) {
                found.push((line_at(at), name));
            }
        } else if let Some(name) = ident(tail) {
            found.push((line_at(at), name.to_string()));
        }
        at = after.max(at + 1);
    }
    found
}

/// What follows a path that reaches the crate root: `crate::` itself, or
/// as many `super::` as the file is deep.
fn after_crate_root(text: &str, depth: usize) -> Option<&str> {
    if let Some(rest) = text.strip_prefix("crate::") {
        return Some(rest);
    }
    if depth == 0 {
        return None;
    }
    let mut rest = text;
    for _ in 0..depth {
        rest = rest.strip_prefix("super::")?;
    }
    Some(rest)
}

/// The first segment of each path in `{a::X, b, self}` (the group's text
/// runs on past its closing brace).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => start = true,
            c if start && !c.is_whitespace() => {
                start = false;
                if let Some(name) = ident(&group[i..]) {
                    if name != "self" {
                        heads.push(name.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    heads
}

fn ident(text: &str) -> Option<&str> {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    (end > 0).then(|| &text[..end])
}

/// Items defined in lib.rs itself (`crate::FastHashMap`): every layer may use them.
fn root_items(lib: &str) -> BTreeSet<String> {
    let mut items = BTreeSet::new();
    for line in lib.lines() {
        let line = line.trim_start();
        let Some(rest) = line.strip_prefix("pub ") else {
            continue;
        };
        for kind in [
            "type ", "struct ", "enum ", "fn ", "const ", "static ", "trait ",
        ] {
            if let Some(name) = rest.strip_prefix(kind).and_then(ident) {
                items.insert(name.to_string());
            }
        }
    }
    items
}

fn layer_of(module: &str) -> Option<(u8, &'static [&'static str])> {
    LAYERS
        .iter()
        .find(|(_, name, _)| *name == module)
        .map(|(layer, _, siblings)| (*layer, *siblings))
}

/// Every problem found, one message each.
fn problems() -> Vec<String> {
    let sources = sources();
    let mut problems = Vec::new();
    let lib = sources
        .iter()
        .find(|s| s.name == "src/lib.rs")
        .expect("src/lib.rs");
    let roots = root_items(&lib.text);
    let mut modules = BTreeSet::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for source in &sources {
        if !source.text.starts_with("//!") {
            problems.push(format!(
                "{} does not start with a `//!` module doc: say what the module is and what it must not know",
                source.name
            ));
        }
        let Some(module) = &source.module else {
            continue;
        };
        modules.insert(module.clone());
        let Some((layer, siblings)) = layer_of(module) else {
            problems.push(format!(
                "{}: module {module} is in no layer; add it to LAYERS in tests/architecture.rs and docs/ARCHITECTURE.md",
                source.name
            ));
            continue;
        };
        for (line, target) in imports(source) {
            if &target == module || roots.contains(&target) {
                continue;
            }
            graph
                .entry(module.clone())
                .or_default()
                .insert(target.clone());
            let Some((target_layer, _)) = layer_of(&target) else {
                problems.push(format!(
                    "{}:{line} imports crate::{target}, which is in no layer; add it to LAYERS",
                    source.name
                ));
                continue;
            };
            let rule = if target_layer > layer {
                "arrows only go down"
            } else if target_layer == layer && !siblings.contains(&target.as_str()) {
                "modules of one layer do not import each other"
            } else {
                continue;
            };
            problems.push(format!(
                "{}:{line} imports crate::{target} (L{target_layer}) from {module} (L{layer}): {rule}; move the type down or pass it in",
                source.name
            ));
        }
    }
    for (_, name, _) in LAYERS {
        if !modules.contains(*name) {
            problems.push(format!(
                "LAYERS names module {name}, which src/ does not have; remove its row"
            ));
        }
    }
    problems.extend(circles(&graph));
    problems
}

/// Circles among the modules' imports (possible only through the sibling
/// exceptions of LAYERS, but checked on the code, not on the table).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        found: &mut Vec<String>,
    ) {
        if let Some(at) = stack.iter().position(|n| *n == node) {
            let mut circle = stack[at..].to_vec();
            circle.push(node);
            found.push(format!("a circle: {}", circle.join(" -> ")));
            return;
        }
        if !done.insert(node) {
            return;
        }
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, stack, done, found);
        }
        stack.pop();
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

/// Arrows only go down: the core knows no protocol, the platform never
/// calls STS, the doors know no config file.
#[test]
fn arrows_only_go_down_and_every_file_says_what_it_is() {
    let problems = problems();
    assert!(
        problems.is_empty(),
        "\n{}\n(docs/ARCHITECTURE.md describes the layers)\n",
        problems.join("\n")
    );
}

#[test]
fn the_reader_finds_grouped_inline_and_super_paths() {
    let source = Source {
        name: "src/platform/index.rs".into(),
        module: Some("platform".into()),
        path: vec!["platform".into(), "index".into()],
        text: "//! x\nuse crate::{config::Config,\n  roles};\nuse super::short; // crate::broker\nfn f() { crate::metrics::metrics(); super::super::imds::x(); }\n#[cfg(test)]\nmod tests {\n    use crate::reload::Live;\n}\n"
            .into(),
    };
    assert_eq!(
        imports(&source),
        vec![
            (2, "config".to_string()),
            (2, "roles".to_string()),
            (5, "metrics".to_string()),
            (5, "imds".to_string()),
        ]
    );
}
