//! Deep input never aborts the compiler. Every recursive shape of the grammar
//! is generated twice: as deep as the language allows, where it must go
//! through every stage (parse, check, codegen, fmt, graph) and compile, and
//! as a file of about 100 KB, where every stage must either compile it or
//! refuse it with a diagnostic that says where. Both run on a test thread's
//! ordinary stack (2 MiB), smaller than the main thread of the CLI or of rustc.

use switchyard_dsl::{Source, codegen, compile, format, graph, parse, skeleton};

/// The size of each generated file.
const SIZE: usize = 100_000;

/// A recursive shape: `open` repeated, then `core`, then `close` repeated.
struct Shape {
    name: &'static str,
    open: &'static str,
    core: &'static str,
    close: &'static str,
    /// How many repetitions the language accepts; the 100 KB file has more.
    allowed: usize,
    /// Where the shape stands: in an expression or as a data field's type.
    place: Place,
}

#[derive(Clone, Copy)]
enum Place {
    Expr,
    Type,
}

/// Each shape with the most repetitions the limits of `docs/language.md`
/// allow: an expression 256 deep (a field access is one level, so a sum of
/// fields reaches it one term earlier), 64 brackets (of which the file's
/// `process`, `state` and `on` blocks take 3) and a type 64 deep.
const SHAPES: &[Shape] = &[
    shape("prefix_not", "!", "true", "", 256),
    shape("prefix_neg", "-", "1", "", 256),
    shape("sum", "data.x + ", "data.x", "", 255),
    shape("mixed_operators", "data.x * 2 + ", "data.x", "", 254),
    shape("and_chain", "true && ", "true", "", 256),
    shape("comparison_chain", "data.x < ", "data.x", "", 255),
    shape("method_chain", "", "data.x", ".f()", 255),
    shape("field_chain", "", "event", ".a", 256),
    shape("call_chain", "", "f", "()", 256),
    shape("parentheses", "(", "1", ")", 61),
    shape("lists", "[", "1", "]", 61),
    shape("call_arguments", "f(", "1", ")", 61),
    shape("method_arguments", "data.x.f(", "1", ")", 61),
    shape("struct_literals", "S { a: ", "1", " }", 61),
    shape("parenthesised_sums", "(data.x + ", "1", ")", 61),
    Shape { place: Place::Type, ..shape("generic_types", "Vec<", "u64", ">", 64) },
    // The `data` block's brace and the process's take 2 of the 64 brackets.
    Shape { place: Place::Type, ..shape("tuple_types", "(", "u64", ",)", 62) },
];

const fn shape(
    name: &'static str,
    open: &'static str,
    core: &'static str,
    close: &'static str,
    allowed: usize,
) -> Shape {
    Shape { name, open, core, close, allowed, place: Place::Expr }
}

impl Shape {
    /// The shape repeated `n` times, broken into lines so that a diagnostic
    /// shows one short line of it.
    fn nested(&self, n: usize) -> String {
        let mut text = String::new();
        for (part, times) in [(self.open, n), (self.core, 1), (self.close, n)] {
            for i in 0..times {
                text.push_str(part);
                if i % 16 == 15 && !part.is_empty() {
                    text.push('\n');
                }
            }
        }
        text
    }

    /// A whole file with the shape repeated `n` times in its place.
    fn file(&self, n: usize) -> String {
        let nested = self.nested(n);
        let (ty, expr) = match self.place {
            Place::Expr => ("u64".to_owned(), nested),
            Place::Type => (nested, "0".to_owned()),
        };
        format!(
            "process P {{\n    correlate by id: u64\n    data {{ x: {ty} }}\n    initial state A {{\n        on E {{\n            set x = {expr}\n            -> Done\n        }}\n    }}\n    final state Done\n}}\n"
        )
    }

    /// The number of repetitions that makes a file of about [`SIZE`] bytes.
    fn large(&self) -> usize {
        SIZE / (self.open.len() + self.close.len()).max(1)
    }
}

/// Runs `text` through every stage. Returns the first error, rendered, or
/// `None` when the text compiled; panics when a stage disagrees with another.
fn every_stage(text: &str) -> Option<String> {
    let (file, parse_errors) = parse(text);
    let (model, diagnostics) = compile(text);
    let formatted = format(text);
    let _ = skeleton(text);
    let Some(model) = model else {
        let first = diagnostics.iter().find(|d| d.is_error()).expect("no model without an error");
        assert!(first.span.start <= first.span.end && first.span.end as usize <= text.len());
        assert!(formatted.is_err() || parse_errors.is_empty());
        return Some(Source::new("deep.yard", text).render_all(std::slice::from_ref(first)));
    };
    assert!(parse_errors.is_empty());
    assert_eq!(file.processes.len(), 1);
    let tokens = codegen(&model);
    assert!(!tokens.is_empty());
    let formatted = formatted.expect("a file that compiles formats");
    assert_eq!(format(&formatted).as_ref(), Ok(&formatted), "formatting twice changes nothing");
    let process = &model.processes[0];
    assert!(graph::dot(process).contains("digraph"));
    assert!(graph::mermaid(process).contains("stateDiagram"));
    None
}

#[test]
fn the_deepest_input_the_language_allows_goes_through_every_stage() {
    for shape in SHAPES {
        let text = shape.file(shape.allowed);
        if let Some(error) = every_stage(&text) {
            panic!("`{}` at its limit of {} does not compile:\n{error}", shape.name, shape.allowed);
        }
    }
}

#[test]
fn a_hundred_kilobytes_of_every_deep_shape_is_refused_with_a_location() {
    let mut outcomes = String::new();
    for shape in SHAPES {
        let text = shape.file(shape.large());
        assert!(text.len() >= SIZE, "`{}` makes only {} bytes", shape.name, text.len());
        let error = every_stage(&text)
            .unwrap_or_else(|| panic!("`{}` compiled at {} bytes", shape.name, text.len()));
        outcomes.push_str(&format!("== {}\n{error}\n", shape.name));
    }
    insta::assert_snapshot!(outcomes);
}

/// One past the limit is refused, and says so at the first token too many.
#[test]
fn one_past_the_limit_is_refused() {
    for shape in SHAPES {
        let text = shape.file(shape.allowed + 1);
        let error = every_stage(&text).unwrap_or_else(|| {
            panic!("`{}` compiled one past its limit of {}", shape.name, shape.allowed)
        });
        assert!(error.contains("[too-deep]"), "`{}`:\n{error}", shape.name);
    }
}
