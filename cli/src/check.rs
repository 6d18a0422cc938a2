//! `switchyard check`: compiles `.yard` files and reports every finding, for a
//! person (drawn with the source, on stderr) or for a tool (JSON on stdout).
//!
//! The JSON view is one array holding the findings of every file, in the
//! order of the files on the command line and, within a file, in source
//! order. It is always printed in full, `[]` when there is nothing to say, so
//! that stdout always parses; problems that are not findings (a file that
//! cannot be read) go to stderr as text.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use switchyard_dsl::{Diagnostic, Severity, Source, render};

use crate::output::{err, errln, outln};
use crate::read;

/// The exit code of a run with errors, or with denied warnings.
const FAILED: u8 = 1;
/// The exit code of a file that cannot be read, or of bad usage.
pub const UNUSABLE: u8 = 2;

/// Checks `.yard` files and prints every finding with its location and fix.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct Args {
    /// The `.yard` files to check.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// How findings are printed: for people, or as JSON for tools.
    ///
    /// `human`: findings drawn with their source lines on stderr, coloured on a
    /// terminal, then a summary line. `json`: one JSON array of findings on
    /// stdout, and nothing else there.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,

    /// Fails on warnings too, as CI may want: `--deny warnings`.
    ///
    /// Warnings are always shown; with `--deny warnings` any warning also
    /// makes the check fail with exit code 1.
    #[arg(long, value_enum, value_name = "KIND")]
    pub deny: Vec<Deny>,
}

const AFTER_HELP: &str = "\
Exit codes:
  0  no file has an error (warnings are shown, and allowed)
  1  some file has an error, or a warning under `--deny warnings`
  2  a file cannot be read, or the command line is wrong

JSON output (`--format json`) is one array; each finding has `code`,
`severity`, `message`, `file`, `span` {start, end, line, column, end_line,
end_column} (byte offsets, and 1-based positions in characters whose end is
exclusive), `span_label`, `labels` [{span, message}] and `help`.

Examples:
  switchyard check examples/*.yard
  switchyard check --deny warnings --format json orders.yard";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people: source lines with labels, on stderr.
    Human,
    /// For editors and CI: a JSON array on stdout.
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Deny {
    /// Every warning fails the check.
    Warnings,
}

/// Checks every file, prints the findings, and says how it went in the exit
/// code. A file that cannot be read does not stop the others from being
/// checked.
pub fn run(args: &Args) -> ExitCode {
    let color = args.format == Format::Human
        && std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut json = Vec::new();
    let mut errors = 0;
    let mut warnings = 0;
    let mut unreadable = 0;
    for path in &args.files {
        let text = match read::source(path) {
            Ok(text) => text,
            Err(message) => {
                errln!("error: {message}");
                unreadable += 1;
                continue;
            }
        };
        let name = path.display().to_string();
        let source = Source::new(&name, &text);
        let (_, diagnostics) = switchyard_dsl::compile(&text);
        for diagnostic in &diagnostics {
            match diagnostic.severity {
                Severity::Error => errors += 1,
                Severity::Warning => warnings += 1,
            }
            match args.format {
                Format::Human => err!("{}", human(diagnostic, &source, color)),
                Format::Json => json.push(render::json(diagnostic, &source)),
            }
        }
    }

    let deny_warnings = args.deny.contains(&Deny::Warnings);
    match args.format {
        Format::Human => {
            let denied = if deny_warnings && warnings > 0 { " (denied)" } else { "" };
            errln!(
                "checked {}: {}, {}{denied}",
                plural(args.files.len() - unreadable, "file"),
                plural(errors, "error"),
                plural(warnings, "warning"),
            );
        }
        Format::Json => match serde_json::to_string_pretty(&json) {
            Ok(text) => outln!("{text}"),
            // Plain strings and numbers always serialise; this is for completeness.
            Err(err) => errln!("error: cannot write the findings as JSON: {err}"),
        },
    }

    if unreadable > 0 {
        ExitCode::from(UNUSABLE)
    } else if errors > 0 || (deny_warnings && warnings > 0) {
        ExitCode::from(FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// One finding drawn for a person, ending with a line break.
pub fn human(diagnostic: &Diagnostic, source: &Source<'_>, color: bool) -> String {
    let mut text = render::terminal(diagnostic, source, color);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}
