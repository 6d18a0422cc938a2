//! Findings about a source text. A [`Diagnostic`] is plain data (code,
//! severity, message, primary span, labels, help); rendering it is a view of
//! that data. [`Diagnostic::render_plain`] is the view used in `compile_error!`
//! and in snapshots, laid out like rustc's own messages.

use std::fmt::{self, Write as _};

use crate::span::{LineIndex, Span};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Warning,
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// Every diagnostic code the compiler can report, with its severity, in the
/// order of `docs/diagnostics.md`. The codes are stable: tools match on them.
pub const CODES: &[(&str, Severity)] = &[
    ("syntax", Severity::Error),
    ("too-deep", Severity::Error),
    ("duplicate", Severity::Error),
    ("unknown-name", Severity::Error),
    ("misplaced-event", Severity::Error),
    ("misplaced-name", Severity::Error),
    ("initial-state", Severity::Error),
    ("final-state-body", Severity::Error),
    ("correlation", Severity::Error),
    ("no-inputs", Severity::Error),
    ("transition-not-last", Severity::Error),
    ("handled-and-ignored", Severity::Error),
    ("unreachable-handler", Severity::Error),
    ("guard-gap", Severity::Error),
    ("unhandled-input", Severity::Error),
    ("timer-unhandled", Severity::Error),
    ("unreachable-state", Severity::Warning),
    ("cannot-complete", Severity::Warning),
    ("waits-forever", Severity::Warning),
    ("unused", Severity::Warning),
];

/// A secondary span with a note of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    pub span: Span,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// A stable, kebab-case name of the check (`unhandled-input`), documented in `docs/diagnostics.md`.
    pub code: &'static str,
    pub severity: Severity,
    /// Lower-case, names things in backticks, no trailing period.
    pub message: String,
    /// The narrowest span that shows the problem.
    pub span: Span,
    /// What to write under the primary span, if anything.
    pub span_label: Option<String>,
    pub labels: Vec<Label>,
    /// The fix, when one is known.
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            span,
            span_label: None,
            labels: Vec::new(),
            help: None,
        }
    }

    pub fn warning(code: &'static str, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(code, span, message) }
    }

    pub fn with_span_label(mut self, message: impl Into<String>) -> Diagnostic {
        self.span_label = Some(message.into());
        self
    }

    pub fn with_label(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.labels.push(Label { span, message: message.into() });
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders the diagnostic as uncoloured text in rustc's layout:
    ///
    /// ```text
    /// error[unhandled-input]: state `Waiting` does not handle `Rejected`
    ///  --> order.yard:7:11
    ///   |
    /// 7 |     state Waiting {
    ///   |           ^^^^^^^ `Rejected` is neither handled nor ignored here
    ///   |
    ///   = help: add `on Rejected { ... }` or `ignore Rejected` to `Waiting`
    /// ```
    pub fn render_plain(&self, source: &Source<'_>) -> String {
        format!(
            "{}[{}]: {}\n{}",
            self.severity,
            self.code,
            self.message,
            self.render_snippet(source)
        )
    }

    /// Everything [`Diagnostic::render_plain`] writes after the header line:
    /// the location, the marked source lines and the help.
    pub fn render_snippet(&self, source: &Source<'_>) -> String {
        let mut lines = vec![(self.span, self.span_label.as_deref().unwrap_or(""), '^')];
        lines.extend(self.labels.iter().map(|label| (label.span, label.message.as_str(), '-')));
        // In source order, as the reader meets them.
        lines.sort_by_key(|(span, _, _)| span.start);
        let gutter = lines
            .iter()
            .map(|(span, _, _)| source.line_col(span.start as usize).line.to_string().len())
            .max()
            .unwrap_or(1);
        let pad = " ".repeat(gutter);

        let mut out = String::new();
        let start = source.line_col(self.span.start as usize);
        let _ = writeln!(out, "{pad}--> {}:{}:{}", source.name, start.line, start.column);
        let _ = writeln!(out, "{pad} |");
        // Marks on one source line share it, as rustc draws them.
        let mut rest = lines.as_slice();
        while let Some((first, _, _)) = rest.first() {
            let line = source.line_col(first.start as usize).line;
            let same = rest
                .iter()
                .take_while(|(span, _, _)| source.line_col(span.start as usize).line == line)
                .count();
            source.write_snippet(&mut out, &rest[..same], gutter);
            rest = &rest[same..];
        }
        if let Some(help) = &self.help {
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{pad} = help: {help}");
        }
        out
    }
}

/// A named source text with its line index, for rendering.
#[derive(Debug)]
pub struct Source<'a> {
    pub name: &'a str,
    pub text: &'a str,
    index: LineIndex,
}

impl<'a> Source<'a> {
    pub fn new(name: &'a str, text: &'a str) -> Source<'a> {
        Source { name, text, index: LineIndex::new(text) }
    }

    pub fn line_col(&self, offset: usize) -> crate::span::LineCol {
        self.index.line_col(self.text, offset)
    }

    /// Renders every diagnostic, separated by blank lines.
    pub fn render_all(&self, diagnostics: &[Diagnostic]) -> String {
        diagnostics.iter().map(|d| d.render_plain(self)).collect::<Vec<_>>().join("\n")
    }

    /// One source line with a mark under `span` (clipped to the line it starts on).
    /// One source line with a mark under each span that starts on it
    /// (clipped to the line): the last mark's message follows it, the others
    /// hang below their marks.
    fn write_snippet(&self, out: &mut String, marks: &[(Span, &str, char)], gutter: usize) {
        let Some((first, _, _)) = marks.first() else { return };
        let line_no = self.line_col(first.start as usize).line;
        let line = self.index.line_text(self.text, line_no - 1);
        let line_start = self.index.line_start(line_no - 1);
        // Columns, in characters, of each mark's start and width.
        let placed: Vec<(usize, usize, &str, char)> = marks
            .iter()
            .map(|(span, message, mark)| {
                let column = self.line_col(span.start as usize).column - 1;
                let end = (span.end as usize).min(line_start + line.len()).max(span.start as usize);
                let width =
                    self.text.get(span.start as usize..end).map_or(1, |s| s.chars().count()).max(1);
                (column, width, *message, *mark)
            })
            .collect();
        let _ = writeln!(out, "{line_no:>gutter$} | {line}");
        let mut mark_line: Vec<char> = Vec::new();
        for (column, width, _, mark) in &placed {
            if mark_line.len() < column + width {
                mark_line.resize(column + width, ' ');
            }
            mark_line[*column..column + width].iter_mut().for_each(|c| *c = *mark);
        }
        let mark_line: String = mark_line.into_iter().collect();
        let (_, _, last_message, _) = placed[placed.len() - 1];
        let trailing =
            if last_message.is_empty() { String::new() } else { format!(" {last_message}") };
        let _ = writeln!(out, "{:gutter$} | {}{trailing}", "", mark_line.trim_end());
        for (column, _, message, _) in placed[..placed.len() - 1].iter().rev() {
            if message.is_empty() {
                continue;
            }
            let indent = " ".repeat(*column);
            let _ = writeln!(out, "{:gutter$} | {indent}|", "");
            let _ = writeln!(out, "{:gutter$} | {indent}{message}", "");
        }
    }
}
