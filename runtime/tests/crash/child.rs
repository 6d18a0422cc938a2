//! The child process of the crash test: runs the engine over a SQLite file
//! and feeds it the first PREFIX events of the stream (all of them again
//! after a restart: the source is at least once, and the inbox drops what
//! was handled). Once they are handled it moves the clock to the time of
//! the last one, or with `finish` to the end of time so that every account
//! closes, and exits when everything is handled and sent. The command
//! handlers append what they receive to a log file, one line per delivery,
//! after cutting off the line a kill may have left half-written.
//! The test kills this process at random moments and starts it again.
//!
//! Usage: switchyard-crash-child DB LOG ACCOUNTS DEPOSITS PREFIX [finish]

#[path = "account.rs"]
mod account;
#[path = "delivery_log.rs"]
mod delivery_log;

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use account::*;
use delivery_log::Delivery;
use switchyard_runtime::{CommandContext, Engine, HandlerError, ManualClock, SqliteStore};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (db, log, accounts, deposits, prefix, finish) = match &args[..] {
        [db, log, accounts, deposits, prefix] => (db, log, accounts, deposits, prefix, false),
        [db, log, accounts, deposits, prefix, finish] if finish == "finish" => {
            (db, log, accounts, deposits, prefix, true)
        }
        _ => {
            eprintln!("usage: switchyard-crash-child DB LOG ACCOUNTS DEPOSITS PREFIX [finish]");
            return ExitCode::from(2);
        }
    };
    let (Ok(accounts), Ok(deposits), Ok(prefix)) =
        (accounts.parse::<u32>(), deposits.parse::<u32>(), prefix.parse::<usize>())
    else {
        eprintln!("ACCOUNTS, DEPOSITS and PREFIX are numbers");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("no runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(db.into(), log.into(), accounts, deposits, prefix, finish)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    db: PathBuf,
    log: PathBuf,
    accounts: u32,
    deposits: u32,
    prefix: usize,
    finish: bool,
) -> Result<(), HandlerError> {
    delivery_log::trim_torn_tail(&log)?;
    let log = Arc::new(Mutex::new(OpenOptions::new().create(true).append(true).open(log)?));
    let clock = ManualClock::new(BASE);
    let engine = Engine::builder()
        .store(SqliteStore::open(&db)?)
        .clock(clock.clone())
        .process::<Account>()
        .handle(recorder::<Record>(&log, |c| (c.account, c.n, c.count)))
        .handle(recorder::<Report>(&log, |c| (c.account, 0, c.count)))
        .handle(recorder::<Nagged>(&log, |c| (c.account, 0, 0)))
        .build();

    // The source is at least once: it sends everything, every time.
    let mut events = stream(accounts, deposits);
    events.truncate(prefix);
    let last = events.last().map_or(BASE, |event| event.time);
    let submitted: Vec<_> = events.into_iter().map(|e| engine.submit(e)).collect();
    for submission in submitted {
        submission.await?;
    }
    clock.set(if finish { THE_END } else { last });
    engine.idle().await;
    Ok(())
}

/// A handler that appends `id name account n count` for each delivery,
/// with one write, before it returns.
fn recorder<C: switchyard_runtime::Command>(
    log: &Arc<Mutex<std::fs::File>>,
    fields: fn(&C) -> (u32, u32, u32),
) -> impl Fn(C, CommandContext) -> std::future::Ready<Result<(), HandlerError>> + Send + Sync + 'static
{
    let log = log.clone();
    move |command: C, ctx: CommandContext| {
        let (account, n, count) = fields(&command);
        let (id, name) = (ctx.message_id().to_string(), C::NAME.to_owned());
        let line = Delivery { id, name, account, n, count }.line();
        let written = log
            .lock()
            .map_err(|_| "the log lock is poisoned".into())
            .and_then(|mut file| file.write_all(line.as_bytes()).map_err(HandlerError::from));
        std::future::ready(written)
    }
}
