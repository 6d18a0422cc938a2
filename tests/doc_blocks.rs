//! Every Rust code block of the README and of `docs/` is code that builds:
//! each block, or each part of it between `// ...` lines, must stand word for
//! word (up to indentation) in an example or a test of the project (of the
//! facade, or of the runtime, bus and store crates), all parts
//! in one file and in order. The blocks show real code, and a change that
//! breaks one breaks the build of the file it comes from.

use std::path::{Path, PathBuf};

/// The ```rust blocks of a Markdown text, with the line each starts on.
fn rust_blocks(markdown: &str) -> Vec<(usize, Vec<String>)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, Vec<String>)> = None;
    for (number, line) in markdown.lines().enumerate() {
        let fence = line.trim_start();
        match &mut current {
            None if fence.starts_with("```rust") => current = Some((number + 1, Vec::new())),
            Some(_) if fence.starts_with("```") => blocks.extend(current.take()),
            Some((_, lines)) => lines.push(line.to_owned()),
            None => {}
        }
    }
    blocks
}

/// The parts of a block between `// ...` lines, each as its non-blank lines, trimmed.
fn parts(block: &[String]) -> Vec<Vec<String>> {
    let mut parts = vec![Vec::new()];
    for line in block {
        let line = line.trim();
        if line == "// ..." {
            parts.push(Vec::new());
        } else if !line.is_empty() {
            parts.last_mut().unwrap().push(line.to_owned());
        }
    }
    parts.retain(|p| !p.is_empty());
    parts
}

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// Whether `parts` stand in `file`'s lines, each contiguous, in order.
fn contains_in_order(file: &[String], parts: &[Vec<String>]) -> bool {
    let mut from = 0;
    for part in parts {
        let Some(at) = (from..=file.len().saturating_sub(part.len()))
            .find(|&i| file.len() >= i + part.len() && file[i..i + part.len()] == part[..])
        else {
            return false;
        };
        from = at + part.len();
    }
    true
}

#[test]
fn every_rust_block_of_the_docs_is_built_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    // The examples and tests of the facade, and the tests of the crates
    // that live beside it (the JetStream bus, the PostgreSQL store).
    for dir in ["examples", "tests", "runtime/tests", "nats/tests", "postgres/tests"] {
        sources(&root.join(dir), &mut files);
    }
    let files: Vec<(PathBuf, Vec<String>)> = files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let lines =
                text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
            (path, lines)
        })
        .collect();

    let mut docs = vec![root.join("README.md")];
    let mut markdown: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    markdown.sort();
    docs.extend(markdown);

    let mut checked = 0;
    let mut missing = Vec::new();
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        for (line, block) in rust_blocks(&text) {
            let parts = parts(&block);
            checked += 1;
            if !files.iter().any(|(_, lines)| contains_in_order(lines, &parts)) {
                missing.push(format!("{}:{line}", doc.strip_prefix(root).unwrap().display()));
            }
        }
    }
    assert!(checked >= 3, "expected Rust blocks in the docs, found {checked}");
    assert!(
        missing.is_empty(),
        "these Rust blocks are not code of any example or test (copy them from one, \
         marking cuts with a `// ...` line):\n  {}",
        missing.join("\n  ")
    );
}
