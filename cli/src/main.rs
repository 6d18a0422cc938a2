//! The `switchyard` command: checks `.yard` files and draws their processes,
//! without building a crate. Each subcommand lives in its own module; this
//! file only parses the command line and dispatches.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod check;
mod dead_letters;
mod fmt;
mod graph;
mod output;
mod read;

/// Process managers and sagas, checked before they run.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about, long_about = None)]
#[command(
    after_help = "Run `switchyard help COMMAND` for a command's options, exit codes and examples."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Checks `.yard` files and prints every finding with its location and fix.
    ///
    /// Every file is parsed and checked in full: all findings of all files are
    /// reported in one run, errors and warnings alike. Only errors fail the
    /// check, unless `--deny warnings` is given.
    Check(check::Args),
    /// Draws a process as a state diagram (Graphviz DOT or Mermaid) on stdout.
    ///
    /// The file is checked first: a file with errors is not drawn.
    Graph(graph::Args),
    /// Rewrites `.yard` files in the one canonical layout, keeping every comment.
    ///
    /// Formatting twice changes nothing, and the formatted file parses to the
    /// same processes. A file that does not parse is left as it is and its
    /// errors are shown. With `--check` nothing is written: the files that
    /// would change are listed with a diff, and the command fails, as in CI.
    Fmt(fmt::Args),
    /// Lists the messages and timers an engine could not handle, and replays them.
    DeadLetters(dead_letters::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Graph(args) => graph::run(&args),
        Command::Fmt(args) => fmt::run(&args),
        Command::DeadLetters(args) => dead_letters::run(&args),
    };
    output::finish(code)
}
