//! What happens to each order of the distributed example, decided by its
//! number alone, so that the contexts (which answer), the driver (which
//! places the orders) and the end-to-end test (which checks the outcome)
//! agree without talking to each other. Plain std: the contexts binary
//! uses no Switchyard crate.

#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The conference every order is for.
pub const CONFERENCE: &str = "rustconf";

/// The subject prefix, stream and schema when none is given.
pub const DEFAULT_NAME: &str = "registration";

/// What an order goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Every seat is reserved, the order is paid and confirmed.
    Paid,
    /// One seat short: the rest goes on the wait list; then paid and confirmed.
    WaitListed,
    /// Reserved but never paid: its `Expiry` timer fires.
    Unpaid,
    /// Placed after its reservation time: rejected at once.
    Late,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Paid, Kind::WaitListed, Kind::Unpaid, Kind::Late];

    /// Two fifths paid, a fifth each of the others.
    pub fn of(order: u32) -> Kind {
        match order % 5 {
            0 | 1 => Kind::Paid,
            2 => Kind::WaitListed,
            3 => Kind::Unpaid,
            _ => Kind::Late,
        }
    }

    /// The commands the process must send for such an order, each once.
    pub fn commands(self) -> &'static [&'static str] {
        match self {
            Kind::Paid => &[
                "MakeSeatReservation",
                "MarkSeatsAsReserved",
                "ConfirmOrder",
                "CommitSeatReservation",
            ],
            Kind::WaitListed => &[
                "MakeSeatReservation",
                "AddToWaitList",
                "MarkSeatsAsReserved",
                "ConfirmOrder",
                "CommitSeatReservation",
            ],
            Kind::Unpaid => &[
                "MakeSeatReservation",
                "MarkSeatsAsReserved",
                "CancelSeatReservation",
                "RejectOrder",
            ],
            Kind::Late => &["RejectOrder"],
        }
    }

    /// The final state of its instance, as the process names it.
    pub fn final_state(self) -> &'static str {
        match self {
            Kind::Paid | Kind::WaitListed => "Completed",
            Kind::Unpaid => "Expired",
            Kind::Late => "Rejected",
        }
    }

    /// When the order's reservation lapses, from the moment it is placed:
    /// the paid ones far enough ahead that a killed node cannot make them
    /// expire first, the late ones a minute ago.
    pub fn expires(self, placed: u64, unpaid_expiry: Duration) -> u64 {
        match self {
            Kind::Paid | Kind::WaitListed => placed + 3_600_000,
            Kind::Unpaid => placed + millis(unpaid_expiry),
            Kind::Late => placed.saturating_sub(60_000),
        }
    }
}

/// The order's id, which is the instance key: `o-17` with the tag `o`. A
/// run by hand takes a tag of its own, so that its orders are new ones in
/// a schema that holds an earlier run's.
pub fn order_id(tag: &str, order: u32) -> String {
    format!("{tag}-{order}")
}

/// The order's number back from its id.
pub fn order_number(id: &str) -> Option<u32> {
    id.rsplit('-').next()?.parse().ok()
}

/// The seats an order asks for: one to four full passes.
pub fn seats(order: u32) -> u32 {
    1 + order % 4
}

/// Milliseconds since the Unix epoch, the process's `Timestamp`.
pub fn now_millis() -> u64 {
    millis(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The value of `--name value` among the arguments, or the environment
/// variable, or the default.
pub fn setting(args: &[String], flag: &str, env: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var(env).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| default.to_owned())
}
