//! The corpus: every `.yard` file under `corpus/good` compiles without
//! errors, and every file under `corpus/bad` yields the findings pinned in
//! its snapshot (rendered as plain text, spans and help included). Each check
//! of the language has at least one bad file, named for the mistake.

use std::path::{Path, PathBuf};

use switchyard_dsl::{Source, compile};

fn files(folder: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus").join(folder);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yard"))
        .collect();
    files.sort();
    files
}

fn rendered(path: &Path) -> (String, bool) {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let (model, diagnostics) = compile(&text);
    (Source::new(&name, &text).render_all(&diagnostics), model.is_some())
}

#[test]
fn good_files_compile_without_errors() {
    let good = files("good");
    assert!(!good.is_empty());
    for path in good {
        let (rendered, compiled) = rendered(&path);
        assert!(compiled, "{} does not compile:\n{rendered}", path.display());
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        insta::assert_snapshot!(format!("good__{name}"), rendered);
    }
}

#[test]
fn bad_files_report_their_findings() {
    let bad = files("bad");
    assert!(!bad.is_empty());
    for path in bad {
        let (rendered, _) = rendered(&path);
        assert!(!rendered.is_empty(), "{} has no finding", path.display());
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        insta::assert_snapshot!(format!("bad__{name}"), rendered);
    }
}

/// Every stable code is produced by some bad file and documented.
#[test]
fn every_code_has_a_bad_file_and_a_section_in_the_docs() {
    let docs_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/diagnostics.md");
    let docs = std::fs::read_to_string(&docs_path).unwrap();
    let mut produced = std::collections::BTreeSet::new();
    for path in files("bad") {
        let text = std::fs::read_to_string(&path).unwrap();
        for diagnostic in compile(&text).1 {
            produced.insert(diagnostic.code);
        }
    }
    for (code, _) in switchyard_dsl::diagnostic::CODES {
        assert!(produced.contains(code), "no bad corpus file yields `{code}`");
        assert!(
            docs.contains(&format!("## `{code}`")),
            "docs/diagnostics.md has no section `{code}`"
        );
    }
    for code in produced {
        assert!(
            switchyard_dsl::diagnostic::CODES.iter().any(|(c, _)| *c == code),
            "`{code}` is missing from `CODES`"
        );
    }
}
