//! The `switchyard` command: checks `.yard` files without building a crate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchyard_dsl::{Severity, Source};

/// Process managers and sagas, checked before they run.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Checks `.yard` files and prints every finding with its location and fix.
    ///
    /// Exits with 0 when no file has an error, 1 when one has, and 2 when a
    /// file cannot be read.
    Check {
        /// The files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { files } => check(&files),
    }
}

fn check(files: &[PathBuf]) -> ExitCode {
    let mut errors = 0;
    let mut warnings = 0;
    for path in files {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) => {
                eprintln!("error: cannot read `{}`: {err}", path.display());
                return ExitCode::from(2);
            }
        };
        let name = path.display().to_string();
        let (_, diagnostics) = switchyard_dsl::compile(&text);
        let source = Source::new(&name, &text);
        for diagnostic in &diagnostics {
            eprintln!("{}", diagnostic.render_plain(&source));
            match diagnostic.severity {
                Severity::Error => errors += 1,
                Severity::Warning => warnings += 1,
            }
        }
    }
    let files = files.len();
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    eprintln!(
        "checked {}: {}, {}",
        plural(files, "file"),
        plural(errors, "error"),
        plural(warnings, "warning")
    );
    if errors > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
