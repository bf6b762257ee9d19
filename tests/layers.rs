//! The import direction of ARCHITECTURE.md: no file under `src/` imports a layer above its
//! own. Reads the sources: every `crate::` path outside comments and `#[cfg(test)]` code.

use std::path::Path;

/// The layers from the bottom up, as paths under `src/` (a path ending in `/` is a folder);
/// a file belongs to the first layer that names it.
const LAYERS: &[(&str, &[&str])] = &[
    ("ground", &["reading.rs", "metrics.rs", "backoff.rs"]),
    (
        "formats",
        &[
            "topic.rs",
            "ble/",
            "input/format.rs",
            "input/modbus/plan.rs",
            "input/format/",
            "input/mod.rs",
        ],
    ),
    ("config", &["config/"]),
    (
        "inputs and mapping",
        &["input/", "mapping.rs", "transform.rs", "discovery/"],
    ),
    ("queue", &["queue/"]),
    ("pipeline and uplink", &["pipeline.rs", "uplink/"]),
    ("the top", &[""]),
];

fn layer(file: &str) -> usize {
    LAYERS
        .iter()
        .position(|(_, paths)| {
            paths
                .iter()
                .any(|p| file == *p || (p.is_empty() || p.ends_with('/')) && file.starts_with(p))
        })
        .unwrap()
}

/// The file a `crate::a::b::c` path names: the longest of `a/b/c.rs`, `a/b/c/mod.rs`, `a/b.rs`
/// ... that exists.
fn file_of(src: &Path, segments: &[&str]) -> Option<String> {
    (1..=segments.len()).rev().find_map(|n| {
        let stem = segments[..n].join("/");
        [format!("{stem}.rs"), format!("{stem}/mod.rs")]
            .into_iter()
            .find(|f| src.join(f).is_file())
    })
}

/// The `crate::` paths of `code`, as their segments (a group `crate::{a, b::c}` as each).
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].ends_with(|c: char| ident(c) || c == ':') {
            continue; // `sensorgate::crate::`-like: not a path of this crate
        }
        let rest = &code[at + "crate::".len()..];
        let paths: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group[..group.find('}').unwrap_or(0)].split(',').collect(),
            None => vec![rest],
        };
        for p in paths {
            let p = p.trim_start();
            let end = p.find(|c: char| !ident(c) && c != ':').unwrap_or(p.len());
            let segments: Vec<String> = p[..end]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            if !segments.is_empty() {
                out.push(segments);
            }
        }
    }
    out
}

/// The code of a file without its comments and its inline test module (`#[cfg(test)]` and
/// `mod tests {`: it comes last).
fn code(text: &str) -> String {
    let end = text
        .match_indices("#[cfg(test)]")
        .map(|(at, _)| at)
        .find(|&at| {
            let next = text[at + "#[cfg(test)]".len()..].trim_start();
            next.starts_with("mod ") && next.split('\n').next().is_some_and(|l| l.ends_with('{'))
        })
        .unwrap_or(text.len());
    text[..end]
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_file_imports_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    assert!(
        all.len() > 40,
        "read {} files under {}",
        all.len(),
        src.display()
    );
    let mut up = Vec::new();
    for path in all {
        let file = path
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let own = layer(&file);
        for segments in crate_paths(&code(&std::fs::read_to_string(&path).unwrap())) {
            let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
            let Some(target) = file_of(&src, &segments) else {
                continue;
            };
            let theirs = layer(&target);
            if theirs > own {
                up.push(format!(
                    "{file} ({}) imports crate::{} from {target} ({})",
                    LAYERS[own].0,
                    segments.join("::"),
                    LAYERS[theirs].0
                ));
            }
        }
    }
    assert!(up.is_empty(), "imports that point up:\n{}", up.join("\n"));
}

#[test]
fn the_check_sees_paths_and_groups() {
    let paths = crate_paths("use crate::queue::{lock, Stats};\nlet x = crate::reading::now_ms();\nuse crate::{a, b::c};");
    let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(joined, ["queue", "reading::now_ms", "a", "b::c"]);
    assert_eq!(layer("input/format.rs"), 1);
    assert_eq!(layer("input/ble/gatt.rs"), 3);
    assert_eq!(layer("transform.rs"), 3);
    assert_eq!(layer("gateway.rs"), 6);
}
