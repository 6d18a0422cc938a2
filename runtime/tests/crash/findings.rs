//! What the crash test finds once the last run is over: in the delivery
//! log, whether each expected command arrived, under which ids and with
//! which counts; in the SQLite file, its integrity and whether what must
//! end empty did. Everything is gathered without stopping at the first
//! problem, so that the report can say all of it before the test asserts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use switchyard_runtime::Process as _;

use crate::account::{Account, event_id};
use crate::delivery_log::{self, Delivery};

/// What the delivery log shows. Each list holds one line per problem.
#[derive(Debug, Default)]
pub struct Deliveries {
    /// Why the log could not be read, if it could not.
    pub unreadable: Option<String>,
    /// The commands the stream leads to: a Record per deposit and a Report
    /// per account.
    pub expected: usize,
    /// How many of those were delivered at least once.
    pub delivered: usize,
    /// The lines of the log, repeats included.
    pub deliveries: usize,
    /// Deliveries of a command that had already been delivered.
    pub repeats: usize,
    pub records_lost: Vec<String>,
    /// Accounts without a Report: their Close timer was lost.
    pub reports_lost: Vec<String>,
    /// Commands whose count shows an input that changed its instance twice.
    pub counted_twice: Vec<String>,
    /// Commands whose count shows an input that its instance never took.
    pub counted_short: Vec<String>,
    /// Commands delivered under an id other than theirs, or under two.
    pub other_ids: Vec<String>,
    /// Nagged commands: a Nag timer fired after deposit 3 cancelled it.
    pub cancelled_fired: Vec<String>,
    /// Anything else the stream cannot lead to.
    pub unexpected: Vec<String>,
}

/// What the SQLite file holds at the end.
#[derive(Debug)]
pub struct Store {
    /// The rows of `PRAGMA integrity_check`, joined: `ok` when sound.
    pub integrity: String,
    pub outbox: Count,
    pub timers: Count,
    pub dead_letters: Count,
    /// Inputs the Account instances handled, by the inbox.
    pub inbox: Count,
    pub expected_inbox: i64,
    pub accounts: u32,
    /// Accounts closed after exactly their deposits.
    pub closed: usize,
    /// Accounts that did not close, counted wrongly, or are missing.
    pub wrong_accounts: Vec<String>,
}

/// A row count, or why it could not be read.
pub type Count = Result<i64, String>;

/// For one (command, account, n): the ids, the counts, and the deliveries seen.
#[derive(Debug, Default)]
struct Seen {
    ids: BTreeSet<String>,
    counts: BTreeSet<u32>,
    deliveries: usize,
}

/// Reads the delivery log at `log` of a stream of `accounts` accounts with
/// `deposits` deposits each.
pub fn deliveries(log: &Path, accounts: u32, deposits: u32) -> Deliveries {
    let mut found =
        Deliveries { expected: (accounts * (deposits + 1)) as usize, ..Deliveries::default() };
    let lines = std::fs::read_to_string(log)
        .map_err(|error| format!("{}: {error}", log.display()))
        .and_then(|text| delivery_log::parse(&text));
    let lines = match lines {
        Ok(lines) => lines,
        Err(error) => {
            found.unreadable = Some(error);
            return found;
        }
    };
    found.deliveries = lines.len();
    let mut seen = group(lines);
    for account in 0..accounts {
        for n in 1..=deposits {
            let id = event_id(account, n).derive_in(Account::NAME, 0).to_string();
            let what = format!("Record {n} of account {account}");
            if !found.take(&what, seen.remove(&("Record".to_owned(), account, n)), Some(id), n) {
                found.records_lost.push(what);
            }
        }
        let what = format!("the Report of account {account}");
        if !found.take(&what, seen.remove(&("Report".to_owned(), account, 0)), None, deposits) {
            found.reports_lost.push(what);
        }
    }
    for ((name, account, n), rest) in seen {
        let what = format!("{name} {n} of account {account}, {} times", rest.deliveries);
        let list =
            if name == "Nagged" { &mut found.cancelled_fired } else { &mut found.unexpected };
        list.push(what);
    }
    found
}

/// Reads the SQLite file at `db` after a stream of `accounts` accounts with
/// `deposits` deposits each.
pub fn store(db: &Path, accounts: u32, deposits: u32) -> Store {
    let opened = rusqlite::Connection::open(db);
    let count = |sql: &str| -> Count {
        let connection = opened.as_ref().map_err(ToString::to_string)?;
        connection.query_row(sql, [], |row| row.get(0)).map_err(|error| error.to_string())
    };
    let mut store = Store {
        integrity: integrity(&opened),
        outbox: count("SELECT count(*) FROM outbox"),
        timers: count("SELECT count(*) FROM timers"),
        dead_letters: count("SELECT count(*) FROM dead_letters"),
        // Opened, each deposit, and the Close timer: each handled once.
        inbox: count("SELECT count(*) FROM inbox WHERE process = 'Account'"),
        expected_inbox: i64::from(accounts * (deposits + 2)),
        accounts,
        closed: 0,
        wrong_accounts: Vec::new(),
    };
    match &opened {
        Ok(connection) => store.read_accounts(connection, accounts, deposits),
        Err(error) => store.wrong_accounts.push(format!("no account could be read: {error}")),
    }
    store
}

impl Deliveries {
    /// Inputs that changed an instance twice, and commands under two ids.
    pub fn doubled(&self) -> usize {
        self.counted_twice.len() + self.other_ids.len()
    }

    /// Commands never delivered, and inputs that an instance never took.
    pub fn lost(&self) -> usize {
        self.records_lost.len() + self.reports_lost.len() + self.counted_short.len()
    }

    /// Takes what was seen of the command `what`, which must come under
    /// `id` (or under one id, when it is not known) and with `count`.
    /// Returns whether it was delivered at all.
    fn take(&mut self, what: &str, seen: Option<Seen>, id: Option<String>, count: u32) -> bool {
        let Some(seen) = seen else { return false };
        self.delivered += 1;
        self.repeats += seen.deliveries - 1;
        let one_id = match id {
            Some(id) => seen.ids == BTreeSet::from([id]),
            None => seen.ids.len() == 1,
        };
        if !one_id {
            self.other_ids.push(format!("{what} came under {:?}", seen.ids));
        }
        let counts = &seen.counts;
        if counts.iter().any(|seen| *seen > count) {
            self.counted_twice.push(format!("{what} counted {counts:?}, not {count}"));
        }
        if counts.iter().any(|seen| *seen < count) {
            self.counted_short.push(format!("{what} counted {counts:?}, not {count}"));
        }
        true
    }
}

impl fmt::Display for Deliveries {
    /// One line per figure. When the log does not read, the figures it
    /// would give are unknown rather than zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self;
        let known = |figure: String| if d.unreadable.is_some() { "unknown".into() } else { figure };
        let log = d.unreadable.as_deref().unwrap_or("read to its last complete line");
        writeln!(f, "  log: {log}")?;
        let delivered = known(d.delivered.to_string());
        writeln!(f, "  commands: {} expected, {delivered} delivered", d.expected)?;
        let repeats = format!("{} ({} repeats under the same id)", d.deliveries, d.repeats);
        writeln!(f, "  deliveries: {}", known(repeats))?;
        let (records, reports, short) =
            (d.records_lost.len(), d.reports_lost.len(), d.counted_short.len());
        let lost = format!(
            "{} ({records} Records and {reports} Reports never delivered, {short} inputs not taken)",
            d.lost()
        );
        writeln!(f, "  lost: {}", known(lost))?;
        let (twice, ids) = (d.counted_twice.len(), d.other_ids.len());
        let doubled = format!(
            "{} ({twice} inputs taken twice, {ids} commands under another or a second id)",
            d.doubled()
        );
        writeln!(f, "  doubled: {}", known(doubled))?;
        let timers = format!(
            "{reports} lost (Close, no Report), {} fired when cancelled (Nag)",
            d.cancelled_fired.len()
        );
        writeln!(f, "  timers: {}", known(timers))?;
        writeln!(f, "  unexpected deliveries: {}", known(d.unexpected.len().to_string()))
    }
}

impl fmt::Display for Store {
    /// One line per figure.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |count: &Count| {
            count.as_ref().map_or_else(|error| format!("? ({error})"), ToString::to_string)
        };
        let (outbox, timers, dead) =
            (shown(&self.outbox), shown(&self.timers), shown(&self.dead_letters));
        writeln!(f, "  integrity: {}", self.integrity)?;
        writeln!(f, "  left in the store: {outbox} outbox, {timers} timers, {dead} dead letters")?;
        let (closed, accounts) = (self.closed, self.accounts);
        writeln!(f, "  accounts: {closed} of {accounts} closed after exactly their deposits")?;
        writeln!(f, "  inbox: {} of {} inputs", shown(&self.inbox), self.expected_inbox)
    }
}

impl Store {
    /// Checks that every account closed after exactly its deposits.
    fn read_accounts(&mut self, connection: &rusqlite::Connection, accounts: u32, deposits: u32) {
        let expected = format!("{{\"count\":{deposits}}}");
        let rows = match account_rows(connection) {
            Ok(rows) => rows,
            Err(error) => {
                self.wrong_accounts.push(format!("the instances could not be read: {error}"));
                return;
            }
        };
        for (key, state, data, completed) in &rows {
            if (state.as_str(), *completed, data) == ("\"Closed\"", true, &expected) {
                self.closed += 1;
            } else {
                let done = if *completed { "completed" } else { "not completed" };
                self.wrong_accounts.push(format!("account {key}: {state}, {done}, {data}"));
            }
        }
        if rows.len() != accounts as usize {
            self.wrong_accounts.push(format!("{} instances for {accounts} accounts", rows.len()));
        }
    }
}

/// The Account instances: key, state, data and whether completed.
fn account_rows(
    connection: &rusqlite::Connection,
) -> rusqlite::Result<Vec<(String, String, String, bool)>> {
    let sql = "SELECT key, state, data, completed_at IS NOT NULL FROM instances WHERE process = 'Account'";
    let mut select = connection.prepare(sql)?;
    let rows =
        select.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?;
    rows.collect()
}

/// What `PRAGMA integrity_check` says, or why it could not say it.
fn integrity(opened: &rusqlite::Result<rusqlite::Connection>) -> String {
    let check = |connection: &rusqlite::Connection| -> rusqlite::Result<Vec<String>> {
        let mut pragma = connection.prepare("PRAGMA integrity_check")?;
        let rows = pragma.query_map([], |row| row.get(0))?;
        rows.collect()
    };
    let rows = match opened {
        Ok(connection) => check(connection),
        Err(error) => return format!("the file could not be opened: {error}"),
    };
    rows.map_or_else(|error| format!("the check could not run: {error}"), |rows| rows.join("; "))
}

/// The deliveries of the log, by command, account and n.
fn group(lines: Vec<Delivery>) -> BTreeMap<(String, u32, u32), Seen> {
    let mut seen: BTreeMap<_, Seen> = BTreeMap::new();
    for Delivery { id, name, account, n, count } in lines {
        let entry = seen.entry((name, account, n)).or_default();
        entry.ids.insert(id);
        entry.counts.insert(count);
        entry.deliveries += 1;
    }
    seen
}
