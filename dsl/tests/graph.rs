//! The back ends that draw and report: state diagrams (DOT and Mermaid) of
//! checked processes, and the terminal and JSON views of diagnostics. Each
//! test pins the whole output in a snapshot a reviewer can read.

use std::path::Path;

use switchyard_dsl::{ProcessModel, Source, compile, graph, render};

/// The only process of the file at `path` (relative to the workspace root),
/// which must compile without errors.
fn process(path: &str) -> ProcessModel {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    process_of(&text)
}

fn process_of(text: &str) -> ProcessModel {
    let (model, diagnostics) = compile(text);
    let Some(mut model) = model else { panic!("does not compile: {diagnostics:#?}") };
    assert_eq!(model.processes.len(), 1, "expected one process");
    model.processes.remove(0)
}

const CAMPAIGN: &str = "examples/campaign/campaign.yard";
const RICH: &str = "dsl/tests/corpus/good/graph_rich.yard";

#[test]
fn campaign_as_dot() {
    insta::assert_snapshot!("campaign_dot", graph::dot(&process(CAMPAIGN)));
}

#[test]
fn campaign_as_mermaid() {
    insta::assert_snapshot!("campaign_mermaid", graph::mermaid(&process(CAMPAIGN)));
}

/// Guards, timers (dashed, or marked), a handler that stays (a loop),
/// handlers from `any state` on every state that takes them, published events
/// (`^`), docs (tooltips, comments), and no edge for an ignored input or a
/// timer that cannot be pending.
#[test]
fn rich_process_as_dot() {
    insta::assert_snapshot!("rich_dot", graph::dot(&process(RICH)));
}

#[test]
fn rich_process_as_mermaid() {
    insta::assert_snapshot!("rich_mermaid", graph::mermaid(&process(RICH)));
}

/// Characters that DOT or Mermaid would read as syntax are escaped, and a
/// state named like a Mermaid keyword gets a safe id.
#[test]
fn awkward_text_is_escaped() {
    let process = process_of(
        r#"process Awkward {
    correlate by id: u64
    initial state Default {
        on Asked when event.text == "a \"quoted\" word; #1: \\ done" && event.n < 2 {
            send Answer { id: id }
            -> Note
        }
        on Asked { -> Note_ }
    }
    state Note {
        on Asked { -> Note_ }
    }
    final state Note_
}"#,
    );
    insta::assert_snapshot!(
        "awkward_text",
        format!("{}\n{}", graph::dot(&process), graph::mermaid(&process))
    );
}

/// An error with a secondary label, and a warning with a label on its span.
const FINDINGS: &str = r#"process P {
    correlate by id: u64
    initial state A { on X { -> B } }
    initial state B { on X { -> A } }
}
process Q {
    correlate by id: u64
    initial state A { on X { -> Done } }
    state Lost { on X { -> Done } }
    final state Done
}"#;

#[test]
fn findings_as_json() {
    let (_, diagnostics) = compile(FINDINGS);
    let source = Source::new("findings.yard", FINDINGS);
    let json: Vec<_> = diagnostics.iter().map(|d| render::json(d, &source)).collect();
    insta::assert_snapshot!("findings_json", serde_json::to_string_pretty(&json).unwrap());
}

#[test]
fn findings_for_a_terminal_without_colour() {
    let (_, diagnostics) = compile(FINDINGS);
    let source = Source::new("findings.yard", FINDINGS);
    let text: String = diagnostics.iter().map(|d| render::terminal(d, &source, false)).collect();
    assert!(!text.contains('\u{1b}'), "escape codes without colour:\n{text}");
    insta::assert_snapshot!("findings_terminal", text);
}

#[test]
fn colour_is_escape_codes_around_the_same_text() {
    let (_, diagnostics) = compile(FINDINGS);
    let source = Source::new("findings.yard", FINDINGS);
    let coloured = render::terminal(&diagnostics[0], &source, true);
    assert!(coloured.contains('\u{1b}'));
    assert_eq!(strip_escapes(&coloured), render::terminal(&diagnostics[0], &source, false));
}

/// A syntax error at the very end of the text has an empty span past the last
/// character: both views still place it.
#[test]
fn a_finding_at_the_end_of_the_text() {
    let text = "process P {\n    initial state A {\n        on X { -> A }\n";
    let (_, diagnostics) = compile(text);
    let source = Source::new("cut.yard", text);
    let terminal: String =
        diagnostics.iter().map(|d| render::terminal(d, &source, false)).collect();
    let json: Vec<_> = diagnostics.iter().map(|d| render::json(d, &source)).collect();
    insta::assert_snapshot!(
        "end_of_text",
        format!("{terminal}\n{}", serde_json::to_string_pretty(&json).unwrap())
    );
}

/// Removes ANSI escape sequences (`ESC [ ... m`).
fn strip_escapes(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The Mermaid graphs in `docs/examples.md` are what `graph::mermaid` draws
/// for the files their marker names, so the docs cannot drift from the files.
#[test]
fn the_graphs_in_the_docs_match_the_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let docs = std::fs::read_to_string(root.join("docs/examples.md")).unwrap();
    let mut checked = 0;
    for part in docs.split("<!-- switchyard graph ").skip(1) {
        let (file, rest) = part.split_once(" -->").unwrap();
        let block = rest.split("```mermaid\n").nth(1).unwrap().split("```").next().unwrap();
        assert_eq!(
            block.trim_end(),
            graph::mermaid(&process(file)).trim_end(),
            "the graph of `{file}` in docs/examples.md is out of date: run `switchyard graph {file} --format mermaid`"
        );
        checked += 1;
    }
    assert!(checked >= 3, "docs/examples.md should show the graph of every example");
}
