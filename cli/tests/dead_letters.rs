//! `switchyard dead-letters` on a SQLite store that an engine left dead
//! letters in: listing them, replaying some, then all.

use std::path::{Path, PathBuf};
use std::process::Command;

use switchyard_runtime::store::{Batch, Letter, NewDeadLetter, Store};
use switchyard_runtime::{Body, Envelope, MessageId, MessageKind, SqliteStore, Timestamp};

fn database(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dead-letters").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("engine.db")
}

fn switchyard(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard")).args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn letter(n: u128, name: &'static str, reason: &str) -> NewDeadLetter {
    let message = Envelope {
        id: format!("00000000-0000-0000-0000-{n:012}").parse::<MessageId>().unwrap(),
        name: name.into(),
        kind: MessageKind::Command,
        body: Body::Json(br#"{"order":7}"#.as_slice().into()),
        causation: None,
        time: Timestamp(1_704_067_200_000),
    };
    NewDeadLetter {
        letter: Letter::Message(message),
        process: None,
        reason: reason.to_owned(),
        at: Timestamp(1_704_067_260_000),
    }
}

/// Writes the letters through the store, as an engine would.
fn fill(db: &Path, letters: Vec<NewDeadLetter>) {
    let store = SqliteStore::open(db).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut batch = Batch { instances: Vec::new(), dead_letters: letters };
    runtime.block_on(store.commit(&mut batch)).unwrap();
}

#[test]
fn dead_letters_are_listed_with_their_reasons_and_replayed() {
    let db = database("list-and-replay");
    fill(
        &db,
        vec![
            letter(1, "Ship", "no handler is registered for command `Ship`"),
            letter(2, "Bill", "the handler of `Bill` failed 5 times; last: the bank is closed"),
        ],
    );
    let path = db.to_str().unwrap();

    let (code, stdout, _) = switchyard(&["dead-letters", "list", "--db", path, "--bodies"]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout,
        "#1 at 2024-01-01T00:01:00Z: command `Ship` 00000000-0000-0000-0000-000000000001: \
         no handler is registered for command `Ship`\n    {\"order\":7}\n\
         #2 at 2024-01-01T00:01:00Z: command `Bill` 00000000-0000-0000-0000-000000000002: \
         the handler of `Bill` failed 5 times; last: the bank is closed\n    {\"order\":7}\n\
         2 dead letters\n"
    );

    let (code, stdout, _) = switchyard(&["dead-letters", "replay", "--db", path, "2"]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout,
        "replayed 1 message and 0 timers: the engine sends them when it next starts\n"
    );
    let (_, stdout, _) = switchyard(&["dead-letters", "list", "--db", path]);
    assert!(stdout.starts_with("#1 ") && stdout.ends_with("1 dead letter\n"), "{stdout}");

    let (code, stdout, _) = switchyard(&["dead-letters", "replay", "--db", path, "--all"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("replayed 1 message "), "{stdout}");
    let (_, stdout, _) = switchyard(&["dead-letters", "list", "--db", path]);
    assert_eq!(stdout, format!("no dead letters in `{path}`\n"));

    // Both are in the outbox now, with their ids, for the engine to send.
    assert_eq!(outbox_rows(&db), 2);
}

fn outbox_rows(db: &Path) -> usize {
    let store = SqliteStore::open(db).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(store.pending_outbox()).unwrap().len()
}

#[test]
fn a_missing_database_is_an_error_and_is_not_created() {
    let db = database("missing");
    let (code, stdout, stderr) =
        switchyard(&["dead-letters", "list", "--db", db.to_str().unwrap()]);
    assert_eq!((code, stdout.as_str()), (2, ""));
    assert_eq!(stderr, format!("error: no database at `{}`\n", db.display()));
    assert!(!db.exists());
}

#[test]
fn replay_needs_ids_or_all() {
    let db = database("needs-ids");
    fill(&db, vec![letter(1, "Ship", "no handler")]);
    let (code, _, stderr) = switchyard(&["dead-letters", "replay", "--db", db.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("<ID>") || stderr.contains("--all"), "{stderr}");
}

/// `switchyard dead-letters list | head` ends quietly: the list is cut where
/// the reader stopped, with no panic and a clean exit.
#[test]
fn a_list_whose_reader_stops_early_ends_quietly() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;

    let db = database("reader-stops");
    // Far more than a pipe holds, so that the command is still writing when
    // the reader goes away.
    fill(&db, (1..=5_000).map(|n| letter(n, "Ship", "no handler is registered")).collect());
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["dead-letters", "list", "--bodies", "--db", db.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.starts_with("#1 at "), "{first}");
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert_eq!((status.code(), stderr.as_str()), (Some(0), ""));
}
