//! The `switchyard` binary as a user meets it: each test writes `.yard` files
//! into a fresh folder, runs the built command on them, and checks its exit
//! code, stdout and stderr.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// What one run of the command left behind.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A fresh, empty folder for one test under Cargo's temporary folder for
/// integration tests.
fn folder(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `files` (name, text) into the test's folder and runs `switchyard`
/// there with `args`, without colour.
fn run(test: &str, files: &[(&str, &str)], args: &[&str]) -> Run {
    let dir = folder(test);
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    run_in(&dir, args)
}

/// Runs `switchyard` in `dir` with `args`, without colour.
fn run_in(dir: &Path, args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// No errors, no warnings: the order never waits without a deadline.
const CLEAN: &str = r#"process Order {
    correlate by order_id: OrderId
    timer Deadline
    initial state New {
        on Placed { send Reserve { order_id: id } schedule Deadline after 1h -> Waiting }
        ignore Reserved
    }
    state Waiting {
        on Reserved { cancel Deadline -> Done }
        on Deadline { send Cancel { order_id: id } -> Failed }
        ignore Placed
    }
    final state Done
    final state Failed
}
"#;

/// One warning (`waits-forever`): `Waiting` has no deadline.
const WARNS: &str = r#"process Order {
    correlate by order_id: OrderId
    initial state New {
        on Placed { send Reserve { order_id: id } -> Waiting }
        ignore Reserved
    }
    state Waiting {
        on Reserved { -> Done }
        ignore Placed
    }
    final state Done
}
"#;

/// One error: `Waiting` forgets `Placed`.
const ERRS: &str = r#"process Order {
    correlate by order_id: OrderId
    initial state New {
        on Placed { -> Waiting }
        ignore Reserved
    }
    state Waiting {
        on Reserved { -> Done }
    }
    final state Done
}
"#;

const TWO: &str = r#"process First {
    correlate by id: u64
    initial state A { on X { -> Done } }
    final state Done
}
process Second {
    correlate by id: u64
    initial state A { on X { -> Done } }
    final state Done
}
"#;

#[test]
fn a_clean_file_passes_quietly() {
    let run = run("clean", &[("order.yard", CLEAN)], &["check", "order.yard"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr, "checked 1 file: 0 errors, 0 warnings\n");
}

#[test]
fn errors_are_drawn_with_their_source_and_fail() {
    let run = run(
        "errors",
        &[("order.yard", ERRS), ("ok.yard", CLEAN)],
        &["check", "order.yard", "ok.yard"],
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stdout, "");
    for expected in [
        "[unhandled-input] Error: state `Waiting` does not handle `Placed`",
        "order.yard:7:11",
        "    state Waiting {",
        "Help: add `on Placed { ... }` to handle it",
        "checked 2 files: 1 error, 0 warnings",
    ] {
        assert!(run.stderr.contains(expected), "missing {expected:?} in:\n{}", run.stderr);
    }
    assert!(!run.stderr.contains('\u{1b}'), "colour despite NO_COLOR:\n{}", run.stderr);
}

#[test]
fn warnings_are_shown_but_pass() {
    let run = run("warnings", &[("order.yard", WARNS)], &["check", "order.yard"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("[waits-forever] Warning: state `Waiting` may wait forever"));
    assert!(run.stderr.ends_with("checked 1 file: 0 errors, 1 warning\n"), "{}", run.stderr);
}

#[test]
fn denied_warnings_fail() {
    let run = run("deny", &[("order.yard", WARNS)], &["check", "--deny", "warnings", "order.yard"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.ends_with("checked 1 file: 0 errors, 1 warning (denied)\n"),
        "{}",
        run.stderr
    );
}

#[test]
fn json_is_one_array_of_findings_on_stdout() {
    let run = run(
        "json",
        &[("warns.yard", WARNS), ("errs.yard", ERRS)],
        &["check", "--format", "json", "warns.yard", "errs.yard"],
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stderr, "", "json mode writes findings to stdout only");
    let findings: Vec<Value> = serde_json::from_str(&run.stdout).unwrap();
    let summary: Vec<(&str, &str, &str)> = findings
        .iter()
        .map(|f| {
            (
                f["file"].as_str().unwrap(),
                f["code"].as_str().unwrap(),
                f["severity"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [("warns.yard", "waits-forever", "warning"), ("errs.yard", "unhandled-input", "error"),]
    );
    let error = &findings[1];
    assert_eq!(error["message"], "state `Waiting` does not handle `Placed`");
    assert_eq!(error["span"]["line"], 7);
    assert_eq!(error["span"]["column"], 11);
    assert_eq!(error["span"]["end_line"], 7);
    assert_eq!(error["span"]["end_column"], 18);
    let (start, end) =
        (error["span"]["start"].as_u64().unwrap(), error["span"]["end"].as_u64().unwrap());
    assert_eq!(&ERRS[start as usize..end as usize], "Waiting");
    assert!(error["labels"].is_array());
    assert!(error["help"].as_str().unwrap().starts_with("add `on Placed { ... }`"));
}

#[test]
fn json_of_a_clean_file_is_an_empty_array() {
    let run =
        run("json-clean", &[("order.yard", CLEAN)], &["check", "--format", "json", "order.yard"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(serde_json::from_str::<Value>(&run.stdout).unwrap(), Value::Array(Vec::new()));
}

#[test]
fn a_missing_file_is_reported_and_the_others_still_checked() {
    let run = run("missing", &[("order.yard", ERRS)], &["check", "absent.yard", "order.yard"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("error: cannot read `absent.yard`"), "{}", run.stderr);
    assert!(run.stderr.contains("[unhandled-input]"), "{}", run.stderr);
}

#[test]
fn bad_usage_exits_with_2() {
    let no_file = run("usage", &[], &["check"]);
    assert_eq!(no_file.code, 2, "{no_file:?}");
    let bad_format =
        run("usage", &[("order.yard", CLEAN)], &["graph", "order.yard", "--format", "png"]);
    assert_eq!(bad_format.code, 2, "{bad_format:?}");
    assert!(bad_format.stderr.contains("possible values: dot, mermaid"), "{}", bad_format.stderr);
}

#[test]
fn graph_as_dot_by_default() {
    let run = run("graph-dot", &[("order.yard", CLEAN)], &["graph", "order.yard"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stderr, "");
    assert!(run.stdout.starts_with("digraph \"Order\" {\n"), "{}", run.stdout);
    for edge in [
        "\"initial state\" -> \"New\";",
        "\"New\" -> \"Waiting\" [label=\"Placed / Reserve\"];",
        "\"Waiting\" -> \"Failed\" [label=\"Deadline / Cancel\", style=dashed];",
        "\"Done\" [peripheries=2];",
    ] {
        assert!(run.stdout.contains(edge), "missing {edge:?} in:\n{}", run.stdout);
    }
    assert!(run.stdout.ends_with("}\n"));
}

#[test]
fn graph_as_mermaid() {
    let run = run(
        "graph-mermaid",
        &[("order.yard", CLEAN)],
        &["graph", "order.yard", "--format", "mermaid"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("stateDiagram-v2\n"), "{}", run.stdout);
    for line in [
        "[*] --> New",
        "New --> Waiting: Placed / Reserve",
        "Waiting --> Failed: ⏱ Deadline / Cancel",
        "Done --> [*]",
    ] {
        assert!(run.stdout.contains(line), "missing {line:?} in:\n{}", run.stdout);
    }
}

#[test]
fn graph_picks_a_process_by_name() {
    let run =
        run("graph-pick", &[("two.yard", TWO)], &["graph", "two.yard", "--process", "Second"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("digraph \"Second\" {"), "{}", run.stdout);
}

#[test]
fn graph_of_several_processes_asks_which() {
    let run = run("graph-which", &[("two.yard", TWO)], &["graph", "two.yard"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        "error: `two.yard` declares 2 processes: `First`, `Second`\n  help: choose one with `--process NAME`\n"
    );
}

#[test]
fn graph_of_an_unknown_process_lists_the_names() {
    let run =
        run("graph-unknown", &[("two.yard", TWO)], &["graph", "two.yard", "--process", "Third"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        "error: no process named `Third` in `two.yard`\n  help: the file declares `First`, `Second`\n"
    );
}

#[test]
fn graph_of_a_file_with_errors_prints_them() {
    let run = run("graph-errors", &[("order.yard", ERRS)], &["graph", "order.yard"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("[unhandled-input] Error"), "{}", run.stderr);
    assert!(
        run.stderr.ends_with("error: cannot draw `order.yard`: it has 1 error\n"),
        "{}",
        run.stderr
    );
}

#[test]
fn graph_of_a_missing_file() {
    let run = run("graph-missing", &[], &["graph", "absent.yard"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.starts_with("error: cannot read `absent.yard`"), "{}", run.stderr);
}

#[test]
fn help_teaches_exit_codes_and_examples() {
    for command in ["check", "graph"] {
        let run = run("help", &[], &["help", command]);
        assert_eq!(run.code, 0, "{run:?}");
        for expected in ["Exit codes:", "Examples:", "switchyard "] {
            assert!(
                run.stdout.contains(expected),
                "`help {command}` lacks {expected:?}:\n{}",
                run.stdout
            );
        }
    }
}

/// `fmt --check` on a file that is not UTF-8 says so, where, and fails,
/// instead of counting it among the files that would not change.
#[test]
fn a_file_that_is_not_utf8_is_an_error_for_every_command() {
    let dir = folder("not-utf8");
    std::fs::write(dir.join("latin1.yard"), b"process Caf\xe9 {\n}\n").unwrap();
    let not_utf8 = "error: `latin1.yard` is not UTF-8 text: the byte at line 1, column 12 is not valid\n  \
                    help: save the file as UTF-8\n";
    for (args, summary) in [
        (
            &["fmt", "--check", "latin1.yard"][..],
            "checked the layout of 1 file: 0 would change, 1 cannot be read or written\n",
        ),
        (&["fmt", "latin1.yard"][..], "formatted 1 file: 0 changed, 1 cannot be read or written\n"),
        (&["check", "latin1.yard"][..], "checked 0 files: 0 errors, 0 warnings\n"),
        (&["graph", "latin1.yard"][..], ""),
    ] {
        let run = run_in(&dir, args);
        assert_eq!((run.code, run.stdout.as_str()), (2, ""), "{args:?}");
        assert_eq!(run.stderr, format!("{not_utf8}{summary}"), "{args:?}");
    }
    assert_eq!(std::fs::read(dir.join("latin1.yard")).unwrap(), b"process Caf\xe9 {\n}\n");
}

/// A process on one line whose state names are 70,000 characters long:
/// every command's output fills a pipe (64 KiB) over, and `check` finds one
/// warning (an unreachable state) that shows the whole line.
fn large_process() -> String {
    let long = "S".repeat(70_000);
    format!(
        "process Big {{ correlate by id: u64 initial state A {{ on E {{ -> {long}1 }} }} state {long}2 {{ on E {{ -> {long}1 }} }} final state {long}1 }}\n"
    )
}

#[derive(Clone, Copy, Debug)]
enum Stream {
    Stdout,
    Stderr,
}

/// Runs `switchyard` with `args` and closes `stream` after its first line, as
/// `| head -1` does. Returns the exit code and what the other stream said.
fn run_closing_early(
    test: &str,
    files: &[(&str, &str)],
    args: &[&str],
    stream: Stream,
) -> (i32, String) {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;

    let dir = folder(test);
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(&dir)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (closed, mut other): (Box<dyn Read>, Box<dyn Read>) = match stream {
        Stream::Stdout => {
            (Box::new(child.stdout.take().unwrap()), Box::new(child.stderr.take().unwrap()))
        }
        Stream::Stderr => {
            (Box::new(child.stderr.take().unwrap()), Box::new(child.stdout.take().unwrap()))
        }
    };
    let mut first = String::new();
    BufReader::new(closed).read_line(&mut first).unwrap();
    assert!(!first.is_empty(), "{args:?} wrote nothing on {stream:?}");
    // The reader is dropped here: the command's next write meets a closed pipe.
    let mut said = String::new();
    other.read_to_string(&mut said).unwrap();
    let status = child.wait().unwrap();
    (status.code().unwrap_or(-1), said)
}

/// Every command whose output is closed early, as by `| head`, stops
/// writing to it quietly and exits with the status its work earned.
#[test]
fn every_command_exits_quietly_when_its_output_closes() {
    let big = large_process();
    let files = [("big.yard", big.as_str())];
    for (args, stream, code) in [
        (&["graph", "big.yard"][..], Stream::Stdout, 0),
        (&["graph", "--format", "mermaid", "big.yard"][..], Stream::Stdout, 0),
        (&["check", "--format", "json", "big.yard"][..], Stream::Stdout, 0),
        (&["check", "big.yard"][..], Stream::Stderr, 0),
        (&["check", "--deny", "warnings", "big.yard"][..], Stream::Stderr, 1),
        (&["fmt", "--check", "big.yard"][..], Stream::Stdout, 1),
    ] {
        let (status, other) = run_closing_early("output-closes", &files, args, stream);
        assert_eq!(status, code, "{args:?}: {other}");
        assert!(!other.contains("panicked"), "{args:?}: {other}");
    }
}
