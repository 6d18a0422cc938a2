//! Two more views of a [`Diagnostic`], beside the plain text of
//! [`Diagnostic::render_plain`]: [`terminal`] draws it for a person at a
//! terminal with ariadne (coloured or not, the caller says), and [`json`] turns
//! it into plain data for editors and CI.
//!
//! Spans in the JSON view carry both byte offsets (`start`, `end`, as the
//! compiler counts) and 1-based `line`/`column` positions in characters, as an
//! editor shows them. The end position is exclusive: it is the position just
//! past the last character of the span.

use std::ops::Range;

use ariadne::{Color, Config, IndexType, Label as AriadneLabel, Report, ReportKind};
use serde::Serialize;

use crate::diagnostic::{Diagnostic, Severity, Source};
use crate::span::Span;

/// Renders `diagnostic` for a terminal: the header with its code, the source
/// lines with every label drawn under them, and the help. With `color` false
/// the text has no escape codes, for pipes, files and tests.
pub fn terminal(diagnostic: &Diagnostic, source: &Source<'_>, color: bool) -> String {
    let kind = match diagnostic.severity {
        Severity::Error => ReportKind::Error,
        Severity::Warning => ReportKind::Warning,
    };
    let primary_color = match diagnostic.severity {
        Severity::Error => Color::Red,
        Severity::Warning => Color::Yellow,
    };
    let span = |span: Span| (source.name, char_range(source.text, span));
    let config = Config::default().with_color(color).with_index_type(IndexType::Char);
    let mut report = Report::build(kind, span(diagnostic.span))
        .with_code(diagnostic.code)
        .with_message(&diagnostic.message)
        .with_config(config);

    // ariadne underlines only labels with a message; an empty one still
    // points at the span.
    let primary = AriadneLabel::new(span(diagnostic.span))
        .with_color(primary_color)
        .with_message(diagnostic.span_label.as_deref().unwrap_or(""));
    let mut labels = vec![(diagnostic.span.start, primary)];
    labels.extend(diagnostic.labels.iter().map(|label| {
        let drawn = AriadneLabel::new(span(label.span))
            .with_message(&label.message)
            .with_color(Color::Blue);
        (label.span.start, drawn)
    }));
    // ariadne draws labels that are in source order as one snippet.
    labels.sort_by_key(|(start, _)| *start);
    report = report.with_labels(labels.into_iter().map(|(_, label)| label));
    if let Some(help) = &diagnostic.help {
        report = report.with_help(help);
    }

    let mut out = Vec::new();
    // ariadne shows no line after a final line break, nor a character past
    // the end; a trailing space gives a span at the very end a place to be.
    let text = format!("{} ", source.text);
    let cache = (source.name, ariadne::Source::from(text.as_str()));
    // Writing to a `Vec` cannot fail; should ariadne still report an error,
    // the plain view says the same thing.
    match report.finish().write(cache, &mut out) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => diagnostic.render_plain(source),
    }
}

/// A diagnostic as plain data, serialised by [`serde_json`] with its fields in
/// this order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JsonDiagnostic {
    /// The stable kebab-case name of the check, such as `unhandled-input`.
    pub code: &'static str,
    /// `error` or `warning`.
    pub severity: &'static str,
    pub message: String,
    /// The source's name, as given to [`Source::new`] (for files, the path).
    pub file: String,
    pub span: JsonSpan,
    /// What the terminal view writes under the primary span, if anything.
    pub span_label: Option<String>,
    pub labels: Vec<JsonLabel>,
    pub help: Option<String>,
}

/// A span with its byte offsets and its 1-based positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct JsonSpan {
    pub start: u32,
    pub end: u32,
    pub line: usize,
    pub column: usize,
    pub end_line: usize,
    pub end_column: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JsonLabel {
    pub span: JsonSpan,
    pub message: String,
}

/// The JSON view of `diagnostic`.
pub fn json(diagnostic: &Diagnostic, source: &Source<'_>) -> JsonDiagnostic {
    JsonDiagnostic {
        code: diagnostic.code,
        severity: match diagnostic.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        },
        message: diagnostic.message.clone(),
        file: source.name.to_owned(),
        span: json_span(diagnostic.span, source),
        span_label: diagnostic.span_label.clone(),
        labels: diagnostic
            .labels
            .iter()
            .map(|label| JsonLabel {
                span: json_span(label.span, source),
                message: label.message.clone(),
            })
            .collect(),
        help: diagnostic.help.clone(),
    }
}

fn json_span(span: Span, source: &Source<'_>) -> JsonSpan {
    let start = source.line_col(span.start as usize);
    let end = source.line_col(span.end as usize);
    JsonSpan {
        start: span.start,
        end: span.end,
        line: start.line,
        column: start.column,
        end_line: end.line,
        end_column: end.column,
    }
}

/// The span in characters, as ariadne counts them. Offsets past the end or
/// inside a character are moved back to a character boundary, and an empty
/// span is widened to the character it stands before, so that ariadne draws
/// something under it.
fn char_range(text: &str, span: Span) -> Range<usize> {
    let chars = |byte: usize| {
        let mut byte = byte.min(text.len());
        while !text.is_char_boundary(byte) {
            byte -= 1;
        }
        text[..byte].chars().count()
    };
    let start = chars(span.start as usize);
    let end = chars(span.end as usize).max(start);
    if end == start { start..start + 1 } else { start..end }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_ranges_count_characters_and_never_split_one() {
        let text = "aç€b";
        assert_eq!(char_range(text, Span::new(1, 3)), 1..2);
        // Byte 4 is inside `€`, which starts at byte 3.
        assert_eq!(char_range(text, Span::new(1, 4)), 1..2);
        assert_eq!(char_range(text, Span::new(6, 7)), 3..4);
        assert_eq!(char_range(text, Span::new(7, 7)), 4..5);
        assert_eq!(char_range(text, Span::new(99, 120)), 4..5);
    }
}
