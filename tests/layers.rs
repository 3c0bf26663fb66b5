//! The folders of `src/` are layers, and each uses only the ones below it (docs/ARCHITECTURE.md):
//!
//! ```text
//! util, config  ←  provision  ←  auth  ←  store  ←  app  ←  ops  ←  server  ←  cli
//!                      tls (util, config only)  ←  app
//! ```
//!
//! This test reads every source file and fails on a `crate::<module>` path that points up or sideways, so
//! an import cycle between folders cannot come back unnoticed. Comments are not code: a doc comment may
//! link anywhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each top-level module of the library, and what it may use besides itself.
const ALLOWED: &[(&str, &[&str])] = &[
    ("util", &[]),
    ("config", &["util"]),
    ("provision", &["util", "config"]),
    ("auth", &["util", "config", "provision"]),
    ("tls", &["util", "config"]),
    ("store", &["util", "config", "provision", "auth"]),
    ("app", &["util", "config", "provision", "auth", "tls", "store"]),
    ("ops", &["util", "config", "provision", "auth", "tls", "store", "app"]),
    ("server", &["util", "config", "provision", "auth", "tls", "store", "app", "ops"]),
    ("cli", &["util", "config", "provision", "auth", "tls", "store", "app", "ops", "server"]),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`src/provision/render.rs` → `provision`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_owned())
}

/// Every module named by a `crate::<module>` path in the code (not the comments) of `text`.
fn uses(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.insert(name);
            }
            rest = after;
        }
        // `use crate::{a, b}` is not used in this code base; refuse it so that the scan above stays complete.
        assert!(!code.contains("crate::{"), "write one `use crate::module::…` per module: {line}");
    }
    found
}

#[test]
fn every_folder_uses_only_the_layers_below_it() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut seen_modules = BTreeSet::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else { continue };
        if module == "lib" || module == "main" || module == "bin" {
            continue;
        }
        seen_modules.insert(module.clone());
        let Some((_, allowed)) = ALLOWED.iter().find(|(m, _)| *m == module) else {
            problems.push(format!("{}: module {module} is not in the layer table of tests/layers.rs", file.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for used in uses(&text) {
            if used != module && !allowed.contains(&used.as_str()) {
                problems.push(format!("{}: {module} uses crate::{used}", file.display()));
            }
        }
    }
    assert!(problems.is_empty(), "layering broken:\n{}", problems.join("\n"));
    let expected: BTreeSet<String> = ALLOWED.iter().map(|(m, _)| (*m).to_owned()).collect();
    assert_eq!(seen_modules, expected, "every layer of the table exists in src/ and nothing else does");
}

#[test]
fn the_scan_sees_paths_in_code_and_ignores_comments() {
    let found = uses("use crate::auth::token::Verifier; // crate::cli\nlet x = crate::util::time::unix_now();\n");
    assert_eq!(found, BTreeSet::from(["auth".to_owned(), "util".to_owned()]));
}
