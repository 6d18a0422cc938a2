//! Crash safety: runs the engine in a child process over a SQLite file,
//! kills it with SIGKILL at random moments while the event stream flows,
//! starts it again each time, lets the last run finish, and then proves
//! that every expected command was delivered at least once and always with
//! the same id, that no input changed an instance twice, and that no timer
//! was lost (and no cancelled one fired).
//!
//! The stream grows run by run, as a real one does, and each run resends it
//! from the start. Most kills come once the delivery log has grown by a
//! random number of lines, so that they land while messages flow; the
//! others after a random delay, and some while the timers fire at the end.
//! The moments come from a seed printed at the start; set
//! `SWITCHYARD_CRASH_SEED` to run the same ones again.

#[path = "crash/account.rs"]
mod account;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use account::*;
use switchyard_runtime::Process as _;

const ACCOUNTS: u32 = 500;
const DEPOSITS: u32 = 6;
/// Runs killed while the stream grows.
const ROUNDS: usize = 40;
/// Runs killed while the timers fire at the end.
const FINAL_KILLS: usize = 8;

#[test]
fn killed_at_random_moments_the_engine_loses_and_repeats_nothing() {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("engine.db");
    let log = dir.join("deliveries.log");
    let seed = std::env::var("SWITCHYARD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            now.as_nanos() as u64 ^ u64::from(std::process::id()) << 20
        });
    println!("crash test seed: {seed} (set SWITCHYARD_CRASH_SEED={seed} to repeat it)");
    let mut random = Random(seed | 1);

    let started = Instant::now();
    let total = (ACCOUNTS * (DEPOSITS + 1)) as usize;
    let mut killed = 0;
    let mut sent = 0;
    for round in 0..ROUNDS {
        let prefix = total * (round + 1) / ROUNDS;
        // The deposits among the new events: each is a Record to deliver.
        let records = (sent.max(ACCOUNTS as usize)..prefix.max(ACCOUNTS as usize)).len();
        sent = prefix;
        let lines = line_count(&log);
        let child = spawn(&db, &log, prefix, false);
        let kill = if records == 0 || random.below(4) == 0 {
            Kill::After(Duration::from_millis(
                1 + random.below(if records == 0 { 40 } else { 300 }),
            ))
        } else {
            // Within the first half of this round's deliveries.
            Kill::AtLines(lines + 1 + random.below((records as u64 / 2).max(1)) as usize)
        };
        killed += usize::from(run_until(child, kill, &log));
    }
    for _ in 0..FINAL_KILLS {
        let lines = line_count(&log);
        let reports = reported(&log);
        let child = spawn(&db, &log, total, true);
        let kill = if reports < ACCOUNTS as usize {
            // While the Close timers fire and their Reports go out.
            let left = (ACCOUNTS as usize - reports) as u64;
            Kill::AtLines(lines + 1 + random.below((left / 2).max(1)) as usize)
        } else {
            Kill::After(Duration::from_millis(1 + random.below(100)))
        };
        killed += usize::from(run_until(child, kill, &log));
    }
    let last = spawn(&db, &log, total, true).wait_with_output().unwrap();
    assert!(
        last.status.success(),
        "the last run failed: {}\n{}",
        last.status,
        String::from_utf8_lossy(&last.stderr)
    );
    println!(
        "{killed} of {} runs killed mid-way, {:.1}s in all",
        ROUNDS + FINAL_KILLS,
        started.elapsed().as_secs_f64()
    );
    let runs = ROUNDS + FINAL_KILLS;
    assert!(killed >= runs / 3, "too few runs were killed mid-way ({killed}) to prove anything");

    check_deliveries(&log);
    check_store(&db);
}

enum Kill {
    After(Duration),
    /// Once the delivery log has this many lines.
    AtLines(usize),
}

/// Lets the child run until the kill moment, and kills it then. Returns
/// whether it was killed (rather than finished first).
fn run_until(mut child: Child, kill: Kill, log: &Path) -> bool {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            assert!(status.success(), "the child failed on its own: {status}\n{stderr}");
            return false;
        }
        let due = match kill {
            Kill::After(delay) => started.elapsed() >= delay,
            Kill::AtLines(lines) => line_count(log) >= lines,
        };
        // A run with nothing new to deliver is stopped after a while anyway.
        if due || started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// How many accounts have had their Report delivered.
fn reported(log: &Path) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let accounts: BTreeSet<&str> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            (fields.len() == 5 && fields[1] == "Report").then_some(fields[2])
        })
        .collect();
    accounts.len()
}

fn line_count(log: &Path) -> usize {
    std::fs::read(log).map_or(0, |bytes| bytes.iter().filter(|b| **b == b'\n').count())
}

fn spawn(db: &Path, log: &Path, prefix: usize, finish: bool) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard-crash-child"));
    command
        .arg(db)
        .arg(log)
        .arg(ACCOUNTS.to_string())
        .arg(DEPOSITS.to_string())
        .arg(prefix.to_string());
    if finish {
        command.arg("finish");
    }
    command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Every expected command arrived, each always under its one id, with what
/// shows that no deposit was counted twice; nothing unexpected arrived.
fn check_deliveries(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap();
    // (name, account, n) -> (ids seen, counts seen, deliveries)
    let mut seen: Seen = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        // A line cut by a kill was not acknowledged, so it was delivered again.
        let [id, name, account, n, count] = fields[..] else { continue };
        let (Ok(account), Ok(n), Ok(count)) = (account.parse(), n.parse(), count.parse()) else {
            continue;
        };
        let entry = seen.entry((name.to_owned(), account, n)).or_default();
        entry.0.insert(id.to_owned());
        entry.1.insert(count);
        entry.2 += 1;
    }
    let mut redelivered = 0;
    for account in 0..ACCOUNTS {
        for n in 1..=DEPOSITS {
            let key = ("Record".to_owned(), account, n);
            let Some((ids, counts, deliveries)) = seen.remove(&key) else {
                panic!("Record {n} of account {account} was never delivered");
            };
            let expected = event_id(account, n).derive_in(Account::NAME, 0).to_string();
            assert_eq!(
                ids,
                BTreeSet::from([expected]),
                "Record {n} of account {account} changed its id"
            );
            assert_eq!(
                counts,
                BTreeSet::from([n]),
                "deposit {n} of account {account} was counted twice"
            );
            redelivered += deliveries - 1;
        }
        let key = ("Report".to_owned(), account, 0);
        let Some((ids, counts, deliveries)) = seen.remove(&key) else {
            panic!("the Close timer of account {account} was lost: no Report");
        };
        assert_eq!(ids.len(), 1, "the Report of account {account} changed its id: {ids:?}");
        assert_eq!(
            counts,
            BTreeSet::from([DEPOSITS]),
            "account {account} closed with a wrong count"
        );
        redelivered += deliveries - 1;
    }
    assert!(seen.is_empty(), "unexpected deliveries (a cancelled timer fired?): {seen:?}");
    println!("every command delivered; {redelivered} deliveries were repeats under the same id");
}

/// The store ends clean: every account closed after exactly its inputs,
/// nothing left to send, no timer pending, no dead letter.
fn check_store(db: &Path) {
    let connection = rusqlite::Connection::open(db).unwrap();
    let count = |sql: &str| -> i64 { connection.query_row(sql, [], |row| row.get(0)).unwrap() };
    assert_eq!(count("SELECT count(*) FROM dead_letters"), 0, "dead letters were written");
    assert_eq!(count("SELECT count(*) FROM outbox"), 0, "outbox rows were left unsent");
    assert_eq!(count("SELECT count(*) FROM timers"), 0, "timers were left pending");
    let mut select = connection
        .prepare(
            "SELECT key, state, data, completed_at IS NOT NULL FROM instances WHERE process = 'Account'",
        )
        .unwrap();
    let rows = select
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, bool>(3)?,
            ))
        })
        .unwrap();
    let mut accounts = 0;
    for row in rows {
        let (key, state, data, completed) = row.unwrap();
        assert_eq!(
            (state.as_str(), completed),
            ("\"Closed\"", true),
            "account {key} did not close"
        );
        let expected = format!("{{\"count\":{DEPOSITS}}}");
        assert_eq!(data, expected, "account {key} counted its deposits wrongly");
        accounts += 1;
    }
    assert_eq!(accounts, ACCOUNTS);
    // Opened, each deposit, and the Close timer: each handled once.
    let inbox = count("SELECT count(*) FROM inbox WHERE process = 'Account'");
    assert_eq!(inbox, i64::from(ACCOUNTS * (DEPOSITS + 2)), "the inbox holds each input once");
}

/// For each (command, account, n): the ids, the counts, and the number of deliveries seen.
type Seen = BTreeMap<(String, u32, u32), (BTreeSet<String>, BTreeSet<u32>, usize)>;

/// A small xorshift generator: the kill moments need no more.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}
