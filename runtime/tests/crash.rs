//! Crash safety: runs the engine in a child process over a SQLite file,
//! kills it with SIGKILL at random moments while the event stream flows,
//! starts it again each time, lets the last run finish, and then proves
//! that every expected command was delivered at least once and always with
//! the same id, that no input changed an instance twice, that no timer was
//! lost (and no cancelled one fired), and that the file is sound and holds
//! nothing left to send.
//!
//! The stream grows run by run, as a real one does, and each run resends it
//! from the start. Most kills come once the delivery log has grown by a
//! random number of lines, so that they land while messages flow; the
//! others after a random delay, and some while the timers fire at the end.
//! The moments come from a seed printed at the start; set
//! `SWITCHYARD_CRASH_SEED` to run the same ones again. The sizes are CI's
//! unless `SWITCHYARD_CRASH_ACCOUNTS`, `_DEPOSITS`, `_ROUNDS` or
//! `_FINAL_KILLS` say otherwise, as the soak run (`scripts/soak-crash`)
//! does. The test prints a report of what it found before it asserts, so
//! that a failing run still says all of it.

#[path = "crash/account.rs"]
mod account;
#[path = "crash/delivery_log.rs"]
mod delivery_log;
#[path = "crash/findings.rs"]
mod findings;

use std::env::VarError;
use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use findings::{Deliveries, Store};

#[test]
fn killed_at_random_moments_the_engine_loses_and_repeats_nothing() {
    // A bad setting stops the test here, with nothing but its message.
    let (sizes, seed) = settings().unwrap_or_else(|error| panic!("{error}"));
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let files = Files { db: dir.join("engine.db"), log: dir.join("deliveries.log") };
    println!("crash test seed: {seed} (set SWITCHYARD_CRASH_SEED={seed} to repeat it)");

    let started = Instant::now();
    let runs = run_all(sizes, &mut Random(seed | 1), &files);
    let report = Report {
        sizes,
        seed,
        runs,
        deliveries: findings::deliveries(&files.log, sizes.accounts, sizes.deposits),
        store: findings::store(&files.db, sizes.accounts, sizes.deposits),
        elapsed: started.elapsed(),
    };
    print!("{report}");
    report.assert_sound();
}

/// The sizes of a run.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    accounts: u32,
    deposits: u32,
    /// Runs killed while the stream grows.
    rounds: usize,
    /// Runs killed while the timers fire at the end.
    final_kills: usize,
}

/// The files the children share.
#[derive(Debug)]
struct Files {
    db: PathBuf,
    log: PathBuf,
}

/// What the runs did.
#[derive(Debug, Default)]
struct Runs {
    /// Runs started, the last one included.
    started: usize,
    /// Runs killed mid-way, rather than finished before their kill came.
    killed: usize,
    /// Events submitted over all runs: each run resends its prefix.
    submitted: usize,
    /// Why the runs stopped before the end: a child failed on its own.
    failure: Option<String>,
}

/// Everything the test found, for the report and the assertions.
#[derive(Debug)]
struct Report {
    sizes: Sizes,
    seed: u64,
    runs: Runs,
    deliveries: Deliveries,
    store: Store,
    elapsed: Duration,
}

#[derive(Clone, Copy, Debug)]
enum Kill {
    After(Duration),
    /// Once the delivery log has this many lines.
    AtLines(usize),
}

#[derive(Debug)]
enum Outcome {
    Finished,
    Killed,
    Failed(String),
}

/// The sizes and the seed. The sizes default to CI's; a soak run sets
/// larger ones through the environment.
fn settings() -> Result<(Sizes, u64), String> {
    let sizes = Sizes {
        accounts: setting("SWITCHYARD_CRASH_ACCOUNTS", 500, 1..=1_000_000)?,
        // Deposit 3 cancels the Nag that deposit 2 schedules, and the last
        // deposit's Close must fall due before `THE_END`.
        deposits: setting("SWITCHYARD_CRASH_DEPOSITS", 6, 3..=150)?,
        rounds: setting("SWITCHYARD_CRASH_ROUNDS", 40, 1..=1_000_000)?,
        final_kills: setting("SWITCHYARD_CRASH_FINAL_KILLS", 8, 0..=1_000_000)?,
    };
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let fresh = now.as_nanos() as u64 ^ u64::from(std::process::id()) << 20;
    Ok((sizes, setting("SWITCHYARD_CRASH_SEED", fresh, 0..=u64::MAX)?))
}

/// The environment variable `name` as a whole number within `range`, or
/// `default` when it is not set.
fn setting<T>(name: &str, default: T, range: RangeInclusive<T>) -> Result<T, String>
where
    T: FromStr + PartialOrd + fmt::Display,
{
    read_setting(name, std::env::var(name), default, range)
}

/// `setting` for the value `value` of `name`, apart from the environment
/// so that a test can give it any value.
fn read_setting<T>(
    name: &str,
    value: Result<String, VarError>,
    default: T,
    range: RangeInclusive<T>,
) -> Result<T, String>
where
    T: FromStr + PartialOrd + fmt::Display,
{
    let text = match value {
        Err(VarError::NotPresent) => return Ok(default),
        Err(VarError::NotUnicode(text)) => return Err(format!("`{name}` is not text: {text:?}")),
        Ok(text) => text,
    };
    match text.trim().parse::<T>() {
        Ok(value) if range.contains(&value) => Ok(value),
        _ => Err(format!(
            "`{name}` must be a whole number from {} to {}, not `{text}`\nhelp: unset it for the default, {default}",
            range.start(),
            range.end()
        )),
    }
}

/// Runs the child again and again, killing it while the stream grows and
/// then while the timers fire, and lets the last run finish. Stops early
/// if a child fails on its own.
fn run_all(sizes: Sizes, random: &mut Random, files: &Files) -> Runs {
    let mut runs = Runs::default();
    let total = sizes.events();
    let accounts = sizes.accounts as usize;
    for round in 0..sizes.rounds {
        let (sent, prefix) = (total * round / sizes.rounds, total * (round + 1) / sizes.rounds);
        // The deposits among the new events: each is a Record to deliver.
        let records = (sent.max(accounts)..prefix.max(accounts)).len();
        let kill = growing_kill(random, records, line_count(&files.log));
        if !runs.run(sizes, files, prefix, false, Some(kill)) {
            return runs;
        }
    }
    for _ in 0..sizes.final_kills {
        let left = accounts.saturating_sub(reported(&files.log));
        let kill = final_kill(random, left, line_count(&files.log));
        if !runs.run(sizes, files, total, true, Some(kill)) {
            return runs;
        }
    }
    runs.run(sizes, files, total, true, None);
    runs
}

/// When to kill a run that brings `records` new deposits, with the log at
/// `lines` lines: mostly within the first half of its deliveries.
fn growing_kill(random: &mut Random, records: usize, lines: usize) -> Kill {
    if records == 0 || random.below(4) == 0 {
        let most = if records == 0 { 40 } else { 300 };
        Kill::After(Duration::from_millis(1 + random.below(most)))
    } else {
        Kill::AtLines(lines + 1 + random.below((records as u64 / 2).max(1)) as usize)
    }
}

/// When to kill a run at the end, with `left` accounts still to report:
/// while the Close timers fire and their Reports go out.
fn final_kill(random: &mut Random, left: usize, lines: usize) -> Kill {
    if left > 0 {
        Kill::AtLines(lines + 1 + random.below((left as u64 / 2).max(1)) as usize)
    } else {
        Kill::After(Duration::from_millis(1 + random.below(100)))
    }
}

/// Lets the child run until the kill moment, if any, and kills it then.
fn run_until(mut child: Child, kill: Option<Kill>, log: &Path) -> Outcome {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Outcome::Finished,
            Ok(Some(status)) => return Outcome::Failed(format!("{status}\n{}", stderr(child))),
            Ok(None) => {}
            Err(error) => return Outcome::Failed(format!("cannot wait for the child: {error}")),
        }
        let due = match kill {
            None => false,
            Some(Kill::After(delay)) => started.elapsed() >= delay,
            Some(Kill::AtLines(lines)) => line_count(log) >= lines,
        };
        // A run with nothing new to deliver is stopped after a while anyway.
        if due || kill.is_some() && started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            child.wait().unwrap();
            return Outcome::Killed;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What a child that has exited wrote to its standard error.
fn stderr(mut child: Child) -> String {
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    stderr
}

/// How many accounts have had their Report delivered. A log that does not
/// read counts none here; the findings at the end say why it does not.
fn reported(log: &Path) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let deliveries = delivery_log::parse(&text).unwrap_or_default();
    let reports = deliveries.iter().filter(|delivery| delivery.name == "Report");
    reports.map(|delivery| delivery.account).collect::<std::collections::BTreeSet<_>>().len()
}

fn line_count(log: &Path) -> usize {
    std::fs::read(log).map_or(0, |bytes| bytes.iter().filter(|b| **b == b'\n').count())
}

fn spawn(sizes: Sizes, files: &Files, prefix: usize, finish: bool) -> std::io::Result<Child> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard-crash-child"));
    command
        .arg(&files.db)
        .arg(&files.log)
        .arg(sizes.accounts.to_string())
        .arg(sizes.deposits.to_string())
        .arg(prefix.to_string());
    if finish {
        command.arg("finish");
    }
    command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()
}

/// Fails with the first few of `problems`, if there are any.
fn none(problems: &[String], what: &str) {
    let first: Vec<&str> = problems.iter().take(5).map(String::as_str).collect();
    assert!(problems.is_empty(), "{} {what}: {}", problems.len(), first.join("; "));
}

impl Sizes {
    /// The events of the stream: each account's Opened and its deposits.
    fn events(&self) -> usize {
        (self.accounts * (self.deposits + 1)) as usize
    }
}

impl Runs {
    /// Runs a child over `prefix` events until `kill`. Returns whether the
    /// runs can go on: false once a child failed on its own.
    fn run(
        &mut self,
        sizes: Sizes,
        files: &Files,
        prefix: usize,
        finish: bool,
        kill: Option<Kill>,
    ) -> bool {
        self.started += 1;
        self.submitted += prefix;
        let outcome = match spawn(sizes, files, prefix, finish) {
            Ok(child) => run_until(child, kill, &files.log),
            Err(error) => Outcome::Failed(format!("cannot start the child: {error}")),
        };
        match outcome {
            Outcome::Finished => true,
            Outcome::Killed => {
                self.killed += 1;
                true
            }
            Outcome::Failed(why) => {
                self.failure = Some(format!("run {} failed on its own: {why}", self.started));
                false
            }
        }
    }
}

impl fmt::Display for Report {
    /// One line per figure, so that a soak run can be read, and grepped,
    /// at a glance.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Report { sizes, seed, runs, deliveries, store, elapsed } = self;
        let Sizes { accounts, deposits, rounds, final_kills } = sizes;
        writeln!(f, "crash report")?;
        writeln!(f, "  seed: {seed}")?;
        write!(f, "  sizes: {accounts} accounts, {deposits} deposits, ")?;
        writeln!(f, "{rounds} rounds, {final_kills} final kills")?;
        writeln!(f, "  kills: {}", runs.killed)?;
        writeln!(f, "  runs: {} (the last let finish)", runs.started)?;
        let (events, submitted) = (sizes.events(), runs.submitted);
        writeln!(f, "  events: {events} in the stream, {submitted} submitted over all runs")?;
        write!(f, "{deliveries}{store}")?;
        writeln!(f, "  failure: {}", runs.failure.as_deref().unwrap_or("none"))?;
        writeln!(f, "  time: {:.1}s", elapsed.as_secs_f64())
    }
}

impl Report {
    /// Fails on the first problem found, in order of what explains the rest.
    fn assert_sound(&self) {
        let Report { sizes, runs, deliveries: d, store, .. } = self;
        if let Some(failure) = &runs.failure {
            panic!("{failure}");
        }
        if let Some(error) = &d.unreadable {
            panic!("the delivery log does not read: {error}");
        }
        let killable = sizes.rounds + sizes.final_kills;
        let killed = runs.killed;
        assert!(
            killed >= killable / 3,
            "too few runs were killed mid-way ({killed}) to prove anything"
        );
        none(&d.records_lost, "Records were never delivered");
        none(&d.reports_lost, "Reports were never delivered: their Close timer was lost");
        none(&d.counted_twice, "commands show an input taken twice");
        none(&d.counted_short, "commands show an input never taken");
        none(&d.other_ids, "commands changed their id");
        none(&d.cancelled_fired, "cancelled Nag timers fired");
        none(&d.unexpected, "unexpected commands were delivered");
        assert_eq!(store.integrity, "ok", "the SQLite file is damaged");
        assert_eq!(store.dead_letters, Ok(0), "dead letters were written");
        assert_eq!(store.outbox, Ok(0), "outbox rows were left unsent");
        assert_eq!(store.timers, Ok(0), "timers were left pending");
        none(&store.wrong_accounts, "accounts did not close after exactly their deposits");
        assert_eq!(store.inbox, Ok(store.expected_inbox), "the inbox holds each input once");
    }
}

/// A small xorshift generator: the kill moments need no more.
#[derive(Debug)]
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

#[test]
fn a_size_is_read_whole_or_refused_with_its_name_and_its_default() {
    let read = |value: Result<&str, VarError>| {
        read_setting("SWITCHYARD_CRASH_ROUNDS", value.map(str::to_owned), 40, 1..=1_000)
    };
    assert_eq!(read(Err(VarError::NotPresent)), Ok(40));
    assert_eq!(read(Ok(" 1000\n")), Ok(1_000));
    let refused = "`SWITCHYARD_CRASH_ROUNDS` must be a whole number from 1 to 1000, not `{}`\n\
                   help: unset it for the default, 40";
    for bad in ["", "ten", "-1", "0", "1001", "2.5"] {
        assert_eq!(read(Ok(bad)), Err(refused.replace("{}", bad)), "for `{bad}`");
    }
}
