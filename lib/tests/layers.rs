//! The tree shows the layers, and this test keeps them honest: a module of `lib/src` may import
//! (`crate::<module>`) only its own layer and the layers below it. `docs/architecture.md`
//! explains each layer. Test code (from a file's first `#[cfg(test)]` on, and `tests.rs`
//! files) may reach anywhere.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

/// Top-level modules by layer, bottom first. `error`, `config` and `ffi` serve every layer
/// (`error` is the one place that maps every module's errors to wire exceptions).
const LAYERS: &[(&str, &[&str])] = &[
    ("wire", &["wire"]),
    (
        "state",
        &["store", "events", "runtime", "storage", "policy"],
    ),
    ("model", &["model"]),
    ("api", &["api"]),
    ("entry", &["lib", "sandbox"]),
];
const SHARED: &[&str] = &["error", "config", "ffi"];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, ms)| ms.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The `crate::<module>` names a source text refers to, `use crate::{a, b::c}` groups included.
fn imported_modules(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.push(name);
            }
        } else {
            out.push(
                rest.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    out
}

#[test]
fn no_module_imports_a_higher_layer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 20, "found only {} files", files.len());
    let mut violations = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap();
        if rel.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if SHARED.contains(&module.as_str()) {
            continue;
        }
        let own = rank(&module).unwrap_or_else(|| {
            panic!(
                "{}: module '{module}' has no layer in LAYERS",
                rel.display()
            )
        });
        let text = std::fs::read_to_string(f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for used in imported_modules(code) {
            // `crate::Config`, `crate::System`: items of the crate root re-exported for all.
            if used.is_empty() || used.starts_with(char::is_uppercase) {
                continue;
            }
            if SHARED.contains(&used.as_str()) {
                continue;
            }
            match rank(&used) {
                Some(r) if r <= own => {}
                Some(r) => violations.push(format!(
                    "{} ({}) imports crate::{used} ({})",
                    rel.display(),
                    LAYERS[own].0,
                    LAYERS[r].0
                )),
                None => violations.push(format!(
                    "{} imports crate::{used}, which has no layer",
                    rel.display()
                )),
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// The checker itself: a known upward import is caught.
#[test]
fn the_checker_sees_grouped_and_plain_imports() {
    let m = imported_modules("use crate::{api, store::Document};\nlet x = crate::model::props::x;");
    assert_eq!(m, ["api", "store", "model"]);
}
