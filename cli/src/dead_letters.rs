//! `switchyard dead-letters list|replay --db PATH` (or `--database-url URL
//! [--schema NAME]`): reads the dead letters of an engine's SQLite or
//! PostgreSQL store, and queues them to be handled again.
//!
//! Replaying moves a message back into the outbox and a timer back into the
//! timers, due at once, in one transaction; the engine sends them when it
//! next starts (a running engine replays through its own API). A replayed
//! message keeps its id, so receivers that handled it before drop it. In
//! PostgreSQL the rows are queued with a lease that has already run out, so
//! that any engine node may claim them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use switchyard_postgres::{PostgresOptions, PostgresStore};
use switchyard_runtime::store::{DeadLetter, Letter, Store};
use switchyard_runtime::{SqliteStore, StoreError, Timestamp};

use crate::output::{errln, outln};

/// Lists or replays the messages and timers an engine could not handle.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Lists the dead letters, oldest first, with their reasons.
    List {
        #[command(flatten)]
        source: Source,
        /// Prints each letter's body (JSON) under it.
        #[arg(long)]
        bodies: bool,
    },
    /// Queues dead letters to be handled again: by number, or all of them.
    Replay {
        #[command(flatten)]
        source: Source,
        /// The numbers of the letters, as `list` shows them.
        #[arg(value_name = "ID", required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<u64>,
        /// Replays every dead letter.
        #[arg(long)]
        all: bool,
    },
}

/// The engine's store: a SQLite file, or a schema of a PostgreSQL database.
#[derive(Debug, clap::Args)]
pub struct Source {
    /// The engine's SQLite file.
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "database_url",
        conflicts_with = "database_url"
    )]
    pub db: Option<PathBuf>,
    /// The engine nodes' PostgreSQL database (`postgres://user@host/db`).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// The schema of the store in that database.
    #[arg(long, value_name = "NAME", requires = "database_url")]
    pub schema: Option<String>,
}

const AFTER_HELP: &str = "\
A message lands in the dead letters when it cannot be decoded, when `decide`
panics on it, when no handler takes a command, or when its handling keeps
failing after the retries. Nothing is dropped silently: fix the cause, then
replay. The engine sends replayed letters when it next starts; in PostgreSQL,
the engine nodes take them up when one next claims rows whose lease ran out.

Exit codes:
  0  done
  2  the database cannot be opened, or the command line is wrong

Examples:
  switchyard dead-letters list --db engine.db
  switchyard dead-letters replay --db engine.db 3 4
  switchyard dead-letters replay --db engine.db --all
  switchyard dead-letters list --database-url postgres://app@db/orders --schema switchyard";

/// The exit code when the database cannot be used.
const UNUSABLE: u8 = 2;

pub fn run(args: &Args) -> ExitCode {
    let result = match &args.action {
        Action::List { source, bodies } => list(source, *bodies),
        Action::Replay { source, ids, all } => replay(source, ids, *all),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            errln!("error: {message}");
            ExitCode::from(UNUSABLE)
        }
    }
}

fn list(source: &Source, bodies: bool) -> Result<(), String> {
    let letters = with_store(source, |store| async move { store.dead_letters().await })?;
    if letters.is_empty() {
        outln!("no dead letters in {}", source.name());
        return Ok(());
    }
    for letter in &letters {
        outln!("{}", line(letter));
        if bodies && let Letter::Message(message) = &letter.letter {
            let body = message
                .body
                .to_json()
                .map(|json| String::from_utf8_lossy(&json).into_owned())
                .unwrap_or_else(|e| format!("<cannot be written as JSON: {e}>"));
            outln!("    {body}");
        }
    }
    let count = letters.len();
    outln!("{count} dead letter{}", if count == 1 { "" } else { "s" });
    Ok(())
}

/// One letter on one line: number, when, what, id, process, reason.
fn line(letter: &DeadLetter) -> String {
    let what = match &letter.letter {
        Letter::Message(message) => format!("{} `{}`", message.kind.as_str(), message.name),
        Letter::Timer(timer) => format!("timer {} of {}", timer.timer.trim_matches('"'), timer.key),
    };
    let process = letter.process.as_deref().map(|p| format!(" in `{p}`")).unwrap_or_default();
    format!(
        "#{} at {}: {what} {}{process}: {}",
        letter.id,
        iso(letter.at),
        letter.message_id(),
        letter.reason
    )
}

fn replay(source: &Source, ids: &[u64], all: bool) -> Result<(), String> {
    let ids = ids.to_vec();
    let replayed = with_store(source, |store| async move {
        let ids = if all {
            store.dead_letters().await?.iter().map(|letter| letter.id).collect()
        } else {
            ids
        };
        store.replay(ids, Timestamp::now()).await
    })?;
    let (messages, timers) = (replayed.messages.len(), replayed.timers.len());
    let when = match source.database_url {
        None => "the engine sends them when it next starts",
        Some(_) => "an engine node takes them up when it next claims expired rows",
    };
    outln!(
        "replayed {messages} message{} and {timers} timer{}: {when}",
        if messages == 1 { "" } else { "s" },
        if timers == 1 { "" } else { "s" }
    );
    Ok(())
}

/// Opens the store of an existing database (never creates one) and runs
/// `call` on it.
fn with_store<T, F, Fut>(source: &Source, call: F) -> Result<T, String>
where
    F: FnOnce(Box<dyn Store>) -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    // The PostgreSQL store's connections are tasks of this runtime.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    runtime.block_on(async {
        let store = open(source).await?;
        call(store).await.map_err(|e| format!("{}: {e}", source.name()))
    })
}

async fn open(source: &Source) -> Result<Box<dyn Store>, String> {
    let Some(url) = &source.database_url else {
        let db = source.db.as_deref().unwrap_or(std::path::Path::new(""));
        if !db.is_file() {
            return Err(format!("no database at `{}`", db.display()));
        }
        let store =
            SqliteStore::open(db).map_err(|e| format!("cannot open `{}`: {e}", db.display()))?;
        return Ok(Box::new(store));
    };
    // A lease that has run out already: rows this command queues are any
    // node's to claim at once, as it holds none of them after it exits.
    let options = PostgresOptions {
        schema: source.schema.clone().unwrap_or_else(|| PostgresOptions::default().schema),
        lease: Duration::ZERO,
        create_schema: false,
        ..PostgresOptions::default()
    };
    let store = PostgresStore::connect(url, options)
        .await
        .map_err(|e| format!("cannot open {}: {e}", source.name()))?;
    Ok(Box::new(store))
}

impl Source {
    /// The store in words, for messages: the file, or the schema (never
    /// the URL, which may hold a password).
    fn name(&self) -> String {
        match (&self.database_url, &self.db) {
            (Some(_), _) => {
                let schema =
                    self.schema.clone().unwrap_or_else(|| PostgresOptions::default().schema);
                format!("the PostgreSQL schema `{schema}`")
            }
            (None, db) => {
                format!("`{}`", db.as_deref().unwrap_or(std::path::Path::new("")).display())
            }
        }
    }
}

/// A timestamp as UTC date and time, to the second.
fn iso(at: Timestamp) -> String {
    let seconds = at.millis() / 1000;
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (hour, minute, second) = (rest / 3600, rest % 3600 / 60, rest % 60);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_as_utc() {
        assert_eq!(iso(Timestamp(0)), "1970-01-01T00:00:00Z");
        assert_eq!(iso(Timestamp(1_704_067_200_000)), "2024-01-01T00:00:00Z");
        assert_eq!(iso(Timestamp(1_709_210_096_000)), "2024-02-29T12:34:56Z");
    }
}
