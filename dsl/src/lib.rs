//! The Switchyard compiler: a line of plain functions, each stage with one
//! input and one output.
//!
//! ```text
//! text --parse--> ast::File --check--> Model --codegen--> TokenStream
//!                       \__________________\__ Vec<Diagnostic>
//! ```
//!
//! It is an ordinary library: it never links `proc_macro` nor the runtime,
//! so the CLI and the proc macros share every stage, and every stage can be
//! tested on its own.

pub mod ast;
mod check;
mod codegen;
pub mod diagnostic;
mod fmt;
pub mod graph;
mod model;
mod parse;
pub mod render;
pub mod span;

pub use check::check;
pub use codegen::{codegen, codegen_with_spans, skeleton};
pub use diagnostic::{Diagnostic, Label, Severity, Source};
pub use fmt::format;
pub use model::*;
pub use parse::parse;
#[doc(hidden)]
pub use parse::recognise;

/// Parses and checks `text`: the model if there were no errors, and every
/// finding (errors and warnings) in source order.
pub fn compile(text: &str) -> (Option<Model>, Vec<Diagnostic>) {
    let (file, mut diagnostics) = parse(text);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return (None, diagnostics);
    }
    let (model, found) = check(&file);
    diagnostics.extend(found);
    diagnostics.sort_by_key(|d| (d.span.start, d.span.end));
    (model, diagnostics)
}
