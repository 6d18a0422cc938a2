//! No input makes the parser or the checker panic: random text, random
//! tokens of the language, and corpus files mutated by deleting, duplicating
//! and swapping pieces. Every input yields a model or diagnostics, and every
//! diagnostic's span lies inside the text and renders.

use proptest::prelude::*;
use switchyard_dsl::{Source, compile};

const GOOD: &[&str] = &[
    include_str!("corpus/good/registration.yard"),
    include_str!("../../examples/campaign/campaign.yard"),
];

const TOKENS: &[&str] = &[
    "process",
    "P",
    "{",
    "}",
    "correlate",
    "by",
    "id",
    ":",
    "u64",
    "data",
    "timer",
    "T",
    "initial",
    "state",
    "final",
    "any",
    "on",
    "E",
    "when",
    "ignore",
    ",",
    "send",
    "C",
    "publish",
    "set",
    "x",
    "=",
    "schedule",
    "after",
    "at",
    "15m",
    "cancel",
    "->",
    "S",
    "event",
    ".",
    "a",
    "(",
    ")",
    "[",
    "]",
    "==",
    "&&",
    "+",
    "-",
    "!",
    "\"s\"",
    "1",
    "2.5",
    "true",
    "///",
    "//",
    "/*",
    "*/",
    "\n",
    "<",
    ">",
    "::",
    "data.x",
];

/// Compiles `text` and checks what every finding says about it.
fn survives(text: &str) {
    let (model, diagnostics) = compile(text);
    assert!(model.is_some() || diagnostics.iter().any(|d| d.is_error()));
    let source = Source::new("fuzz.yard", text);
    for diagnostic in &diagnostics {
        assert!(diagnostic.span.start <= diagnostic.span.end);
        assert!(
            diagnostic.span.end as usize <= text.len(),
            "{diagnostic:?} outside {} bytes",
            text.len()
        );
        assert!(!diagnostic.message.is_empty());
        let _ = diagnostic.render_plain(&source);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_text(text in "\\PC{0,200}") {
        survives(&text);
    }

    #[test]
    fn random_tokens(tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..80)) {
        survives(&tokens.join(" "));
    }

    #[test]
    fn mutated_corpus(
        file in prop::sample::select(GOOD),
        edits in prop::collection::vec((0usize..4, any::<prop::sample::Index>(), any::<prop::sample::Index>(), prop::sample::select(TOKENS)), 1..6),
    ) {
        let mut text = file.to_owned();
        for (kind, at, len, token) in edits {
            let mut start = at.index(text.len().max(1));
            while !text.is_char_boundary(start) { start -= 1; }
            let mut end = (start + len.index(40)).min(text.len());
            while !text.is_char_boundary(end) { end -= 1; }
            let end = end.max(start);
            match kind {
                0 => text.replace_range(start..end, ""),
                1 => { let piece = text[start..end].to_owned(); text.insert_str(end, &piece); }
                2 => text.insert_str(start, token),
                _ => text.replace_range(start..end, token),
            }
        }
        survives(&text);
    }
}

#[test]
fn pathological_inputs() {
    for text in [
        "",
        "process",
        "process P {",
        "}}}}",
        &"(".repeat(100_000),
        &"process P { initial state A { on E when ".repeat(2_000),
        "process P { correlate by id: u64 initial state A { on E when 99999999999999999999999999999999999999999999 { } } }",
        "process P { correlate by id: u64 timer T initial state A { on E { schedule T after 99999999999999999999d -> A } } }",
        "process P { correlate by id: u64 initial state A { on E { send C { s: \"unterminated } } } }",
        "process P { correlate by id: u64 initial state A { on E { -> A } } } /* unterminated",
        "process \u{1F600} { }",
        "process P { initial state A { on E { send C { a: event.\u{e9} } } } }",
    ] {
        survives(text);
    }
}
