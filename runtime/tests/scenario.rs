//! The scenario harness on a process written by hand: given, when, then,
//! and the words it uses when an expectation does not hold.

mod common;

use common::*;
use switchyard_runtime::testing::{Mismatch, Scenario, command, event};
use switchyard_runtime::{ManualClock, Outcome};

#[test]
fn a_paid_order_ships_and_its_timers_go() {
    Scenario::<Order>::new(1)
        .given(Placed { order: 1, amount: 40 })
        .when(Paid { order: 1 })
        .expect_state(OrderState::Shipped)
        .expect_completed()
        .expect_sent(&[command(Ship { order: 1, amount: 40 })])
        .expect_timers(&[]);
}

#[test]
fn placing_schedules_both_timers_from_the_time_of_the_event() {
    let start = ManualClock::EPOCH;
    Scenario::<Order>::new(2)
        .when(Placed { order: 2, amount: 7 })
        .expect_state(OrderState::Open)
        .expect_nothing_sent()
        .expect_data(&OrderData { amount: 7, reminders: 0 })
        .expect_timers(&[(OrderTimer::Expire, start + EXPIRY), (OrderTimer::Remind, start + HOUR)]);
}

#[test]
fn a_reminder_fires_at_its_time_and_moves_on() {
    let start = ManualClock::EPOCH;
    Scenario::<Order>::new(3)
        .given(Placed { order: 3, amount: 1 })
        .given_timer(OrderTimer::Remind)
        .when_timer(OrderTimer::Remind)
        .expect_sent(&[command(Nudge { order: 3, reminders: 2 })])
        .expect_timers(&[
            (OrderTimer::Remind, start + 3 * HOUR),
            (OrderTimer::Expire, start + EXPIRY),
        ]);
}

#[test]
fn an_expired_order_publishes_an_event() {
    Scenario::<Order>::new(4)
        .given(Placed { order: 4, amount: 1 })
        .when_timer(OrderTimer::Expire)
        .expect_state(OrderState::Expired)
        .expect_sent(&[event(OrderExpired { order: 4 })]);
}

#[test]
fn what_the_initial_state_ignores_creates_no_instance() {
    let then = Scenario::<Order>::new(5).when(Paid { order: 5 }).expect_ignored();
    assert!(!then.exists);
}

#[test]
fn nothing_reaches_a_completed_instance() {
    let then = Scenario::<Order>::new(6)
        .given(Placed { order: 6, amount: 1 })
        .given(Paid { order: 6 })
        .when(Placed { order: 6, amount: 2 });
    assert_eq!(then.outcome, None);
    assert_eq!(then.skipped.as_deref(), Some("Placed arrived after the instance completed"));
}

#[test]
fn decided_ids_derive_from_the_input_as_in_the_engine() {
    let then =
        Scenario::<Order>::new(7).given(Placed { order: 7, amount: 1 }).when(Paid { order: 7 });
    let input = then.sent[0].causation.unwrap();
    assert_eq!(then.sent[0].id, input.derive_in("Order", 0));
    assert_eq!(then.outcome, Some(Outcome::Handled));
}

#[test]
fn a_mismatch_says_what_was_expected_and_what_happened() {
    let then =
        Scenario::<Order>::new(8).given(Placed { order: 8, amount: 3 }).when(Paid { order: 8 });
    assert_eq!(
        then.check_sent(&[command(Nudge { order: 8, reminders: 1 })]),
        Err(Mismatch(
            "expected to send:\n  command Nudge {\"order\":8,\"reminders\":1}\n\
             but sent:\n  command Ship {\"amount\":3,\"order\":8}\n"
                .to_owned()
        ))
    );
    assert_eq!(
        then.check_state(OrderState::Open),
        Err(Mismatch("expected state Open, but the instance is in Shipped".to_owned()))
    );
    assert_eq!(
        then.check_ignored(),
        Err(Mismatch(
            "expected the message to be ignored, but it was handled (now in Shipped)".to_owned()
        ))
    );
    let unfired = Scenario::<Order>::new(9).when_timer(OrderTimer::Remind);
    assert_eq!(
        unfired.check_state(OrderState::Open),
        Err(Mismatch(
            "expected state Open, but the instance is in Idle (timer Remind is not pending)"
                .to_owned()
        ))
    );
}
