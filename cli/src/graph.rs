//! `switchyard graph`: draws one process of a `.yard` file as a state diagram,
//! in Graphviz DOT or Mermaid, on stdout.
//!
//! One diagram per run: a file that declares several processes needs
//! `--process NAME`, because two Mermaid diagrams in one text are not one
//! diagram, and a tool that reads the output expects one graph. The error
//! lists the names to choose from.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use switchyard_dsl::{Diagnostic, Source, graph};

use crate::check::{UNUSABLE, human};
use crate::output::{err, errln, out};
use crate::read;

/// Draws a process as a state diagram (Graphviz DOT or Mermaid) on stdout.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct Args {
    /// The `.yard` file that declares the process.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The process to draw. Needed when the file declares more than one.
    #[arg(long, value_name = "NAME")]
    pub process: Option<String>,

    /// The diagram's language: Graphviz DOT or Mermaid.
    ///
    /// `dot` for Graphviz (timer edges dashed), `mermaid` for a Mermaid
    /// `stateDiagram-v2` (timer edges marked with ⏱).
    #[arg(long, value_enum, default_value_t = Format::Dot)]
    pub format: Format,
}

const AFTER_HELP: &str = "\
The diagram has one edge per handler, labelled `Event [guard] / Command, ^Published`;
a handler without `->` loops back to its state. The initial state has an arrow from
a start point, final states a double border (DOT) or an arrow to the end point
(Mermaid). Ignored inputs are not drawn.

Exit codes:
  0  the diagram was printed
  1  the file has errors (they are printed, as by `switchyard check`)
  2  the file cannot be read, the process is not found or not named, or the
     command line is wrong

Examples:
  switchyard graph examples/campaign/campaign.yard | dot -Tsvg > campaign.svg
  switchyard graph orders.yard --process Fulfilment --format mermaid";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Graphviz DOT: render with `dot -Tsvg`.
    Dot,
    /// Mermaid `stateDiagram-v2`, for Markdown that renders Mermaid.
    Mermaid,
}

pub fn run(args: &Args) -> ExitCode {
    let text = match read::source(&args.file) {
        Ok(text) => text,
        Err(message) => {
            errln!("error: {message}");
            return ExitCode::from(UNUSABLE);
        }
    };
    let name = args.file.display().to_string();
    let (model, diagnostics) = switchyard_dsl::compile(&text);
    // Warnings do not stop a drawing, and `check` is the place to read them.
    let Some(model) = model else {
        let color = std::io::stderr().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let source = Source::new(&name, &text);
        let errors: Vec<&Diagnostic> = diagnostics.iter().filter(|d| d.is_error()).collect();
        for diagnostic in &errors {
            err!("{}", human(diagnostic, &source, color));
        }
        let count = errors.len();
        errln!(
            "error: cannot draw `{name}`: it has {count} error{}",
            if count == 1 { "" } else { "s" }
        );
        return ExitCode::FAILURE;
    };

    let names = || {
        model.processes.iter().map(|p| format!("`{}`", p.name.node)).collect::<Vec<_>>().join(", ")
    };
    let process = match (&args.process, model.processes.as_slice()) {
        (Some(wanted), processes) => match processes.iter().find(|p| p.name.node == *wanted) {
            Some(process) => process,
            None if processes.is_empty() => {
                errln!("error: no process named `{wanted}`: `{name}` declares no process");
                return ExitCode::from(UNUSABLE);
            }
            None => {
                errln!("error: no process named `{wanted}` in `{name}`");
                errln!("  help: the file declares {}", names());
                return ExitCode::from(UNUSABLE);
            }
        },
        (None, [process]) => process,
        (None, []) => {
            errln!("error: `{name}` declares no process, so there is nothing to draw");
            return ExitCode::from(UNUSABLE);
        }
        (None, processes) => {
            errln!("error: `{name}` declares {} processes: {}", processes.len(), names());
            errln!("  help: choose one with `--process NAME`");
            return ExitCode::from(UNUSABLE);
        }
    };
    let drawn = match args.format {
        Format::Dot => graph::dot(process),
        Format::Mermaid => graph::mermaid(process),
    };
    out!("{drawn}");
    ExitCode::SUCCESS
}
