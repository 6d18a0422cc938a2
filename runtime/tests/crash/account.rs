//! The process and the event stream of the crash test, shared by the test
//! and the child process it kills.
//!
//! ```text
//! Idle    --Opened-->        Active, schedule Close
//! Active  --Deposited n-->   Active, count += 1, send Record { n, count },
//!                            schedule Close again (moves it);
//!                            n = 2 schedules Nag, n = 3 cancels it
//! Active  --Close-->         Closed (final), send Report { count }
//! Active  --Nag-->           send Nagged: must never happen
//! ```
//!
//! Every event has a fixed id and time, so a redelivered event is the same
//! message, and every decided command has an id the test can compute. The
//! engine's clock only ever moves to the time of an event that has been
//! handled, so timers fire only when they would have in real time.

#![allow(dead_code)]

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_runtime::{
    Body, Command, Context, Decision, Description, Envelope, Event, Handles, MessageId,
    MessageKind, Outgoing, Process, Route, StateDescription, StateKind, TimerOp, Timestamp,
};

/// The time of the first event.
pub const BASE: Timestamp = Timestamp(1_700_000_000_000);
/// The time between two events of one account.
pub const STEP: Duration = Duration::from_secs(600);
/// How long after the last deposit an account closes: longer than a step,
/// so that no account closes while its deposits still come.
pub const CLOSE_AFTER: Duration = Duration::from_secs(1_000);
/// When a nag falls due after deposit 2: after deposit 3, which cancels it.
pub const NAG_AFTER: Duration = Duration::from_secs(900);
/// A time by which every account has closed.
pub const THE_END: Timestamp = Timestamp(BASE.0 + 100_000_000);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Opened {
    pub account: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Deposited {
    pub account: u32,
    pub n: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub account: u32,
    pub n: u32,
    pub count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub account: u32,
    pub count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nagged {
    pub account: u32,
}

impl Event for Opened {
    const NAME: &'static str = "Opened";
}
impl Event for Deposited {
    const NAME: &'static str = "Deposited";
}
impl Command for Record {
    const NAME: &'static str = "Record";
}
impl Command for Report {
    const NAME: &'static str = "Report";
}
impl Command for Nagged {
    const NAME: &'static str = "Nagged";
}

/// The id of the `seq`-th event of `account` (0 is `Opened`, n is deposit n).
pub fn event_id(account: u32, seq: u32) -> MessageId {
    MessageId::from_uuid(uuid::Uuid::from_u128(
        (u128::from(account) << 32) | u128::from(seq) | 1 << 100,
    ))
}

/// Every event of the stream, in the order the source sends them: the
/// accounts interleaved, each account's events in order.
pub fn stream(accounts: u32, deposits: u32) -> Vec<Envelope> {
    let mut events = Vec::new();
    for seq in 0..=deposits {
        for account in 0..accounts {
            let envelope = if seq == 0 {
                Envelope::event(Opened { account })
            } else {
                Envelope::event(Deposited { account, n: seq })
            };
            let time = BASE + STEP * seq;
            events.push(envelope.with_id(event_id(account, seq)).with_time(time));
        }
    }
    events
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Account;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccountState {
    Idle,
    Active,
    Closed,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AccountData {
    pub count: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccountTimer {
    Close,
    Nag,
}

#[derive(Clone, Debug)]
pub enum AccountInput {
    Opened(Opened),
    Deposited(Deposited),
    Timer(AccountTimer),
}

#[derive(Clone, Debug)]
pub enum AccountOutput {
    Record(Record),
    Report(Report),
    Nagged(Nagged),
}

impl Outgoing for AccountOutput {
    fn name(&self) -> &'static str {
        match self {
            AccountOutput::Record(_) => Record::NAME,
            AccountOutput::Report(_) => Report::NAME,
            AccountOutput::Nagged(_) => Nagged::NAME,
        }
    }

    fn kind(&self) -> MessageKind {
        MessageKind::Command
    }

    fn into_body(self) -> Body {
        match self {
            AccountOutput::Record(c) => Body::value(c),
            AccountOutput::Report(c) => Body::value(c),
            AccountOutput::Nagged(c) => Body::value(c),
        }
    }
}

impl From<Opened> for AccountInput {
    fn from(event: Opened) -> Self {
        AccountInput::Opened(event)
    }
}
impl From<Deposited> for AccountInput {
    fn from(event: Deposited) -> Self {
        AccountInput::Deposited(event)
    }
}
impl Handles<Opened> for Account {
    fn correlate(event: &Opened) -> &u32 {
        &event.account
    }
}
impl Handles<Deposited> for Account {
    fn correlate(event: &Deposited) -> &u32 {
        &event.account
    }
}

impl Process for Account {
    const NAME: &'static str = "Account";
    const INITIAL: AccountState = AccountState::Idle;
    type State = AccountState;
    type Data = AccountData;
    type Key = u32;
    type Input = AccountInput;
    type Output = AccountOutput;
    type Timer = AccountTimer;

    fn is_final(state: AccountState) -> bool {
        state == AccountState::Closed
    }

    fn decide(
        state: AccountState,
        data: &AccountData,
        input: &AccountInput,
        ctx: &Context<'_, u32>,
    ) -> Decision<Self> {
        let account = *ctx.key;
        let close = TimerOp::Schedule { timer: AccountTimer::Close, at: ctx.now + CLOSE_AFTER };
        match (state, input) {
            (AccountState::Idle, AccountInput::Opened(_)) => {
                Decision::handled(AccountState::Active, None, Vec::new(), vec![close])
            }
            (AccountState::Active, AccountInput::Deposited(deposit)) => {
                let count = data.count + 1;
                let mut timers = vec![close];
                match deposit.n {
                    2 => timers.push(TimerOp::Schedule {
                        timer: AccountTimer::Nag,
                        at: ctx.now + NAG_AFTER,
                    }),
                    3 => timers.push(TimerOp::Cancel { timer: AccountTimer::Nag }),
                    _ => {}
                }
                Decision::handled(
                    AccountState::Active,
                    Some(AccountData { count }),
                    vec![AccountOutput::Record(Record { account, n: deposit.n, count })],
                    timers,
                )
            }
            (AccountState::Active, AccountInput::Timer(AccountTimer::Close)) => Decision::handled(
                AccountState::Closed,
                None,
                vec![AccountOutput::Report(Report { account, count: data.count })],
                Vec::new(),
            ),
            (AccountState::Active, AccountInput::Timer(AccountTimer::Nag)) => Decision::handled(
                AccountState::Active,
                None,
                vec![AccountOutput::Nagged(Nagged { account })],
                Vec::new(),
            ),
            _ => Decision::ignored(state),
        }
    }

    fn timer_input(timer: AccountTimer) -> AccountInput {
        AccountInput::Timer(timer)
    }

    fn input_message(input: &AccountInput) -> Option<(&'static str, Body)> {
        match input {
            AccountInput::Opened(event) => Some(("Opened", Body::value(event.clone()))),
            AccountInput::Deposited(event) => Some(("Deposited", Body::value(event.clone()))),
            AccountInput::Timer(_) => None,
        }
    }

    fn routes() -> &'static [Route<Self>] {
        const ROUTES: &[Route<Account>] = &[
            Route {
                event: "Opened",
                decode: switchyard_runtime::__private::route::<Account, Opened>,
                take: switchyard_runtime::__private::take::<Account, Opened>,
            },
            Route {
                event: "Deposited",
                decode: switchyard_runtime::__private::route::<Account, Deposited>,
                take: switchyard_runtime::__private::take::<Account, Deposited>,
            },
        ];
        ROUTES
    }

    fn description() -> &'static Description {
        const DESCRIPTION: Description = Description {
            name: "Account",
            docs: "",
            states: &[
                StateDescription { name: "Idle", kind: StateKind::Initial, docs: "" },
                StateDescription { name: "Active", kind: StateKind::Normal, docs: "" },
                StateDescription { name: "Closed", kind: StateKind::Final, docs: "" },
            ],
            inputs: &["Opened", "Deposited"],
            timers: &["Close", "Nag"],
            transitions: &[],
        };
        &DESCRIPTION
    }
}
