//! The examples of `docs/testing.md`, as tests: the campaign saga through
//! the scenario harness and the test engine, and a process with a timer
//! whose time a test moves by hand.

// The example's `engine` is for `main`; these tests build a test engine instead.
#[allow(dead_code)]
#[path = "../examples/campaign/process.rs"]
mod campaign;

use std::time::Duration;

use campaign::*;
use serde::{Deserialize, Serialize};
use switchyard::testing::{Scenario, TestEngine, command};
use switchyard::{Command, Event, InstanceStatus};

fn activated(id: &str, advertisement: &str) -> CampaignActivated {
    CampaignActivated {
        campaign_id: CampaignId(id.to_owned()),
        advertisement: advertisement.to_owned(),
    }
}

#[test]
fn a_confirmed_campaign_is_published() {
    Scenario::<CampaignPublishing>::new(CampaignId("c-1".to_owned()))
        .given(activated("c-1", "Forty percent off"))
        .when(PublishingConfirmed {
            campaign_id: CampaignId("c-1".to_owned()),
            confirmation_id: "conf-1".to_owned(),
        })
        .expect_state(CampaignPublishingState::Published)
        .expect_completed()
        .expect_sent(&[command(TrackPublishingConfirmation {
            campaign_id: CampaignId("c-1".to_owned()),
            confirmation_id: "conf-1".to_owned(),
        })]);
}

#[test]
fn a_second_activation_changes_nothing() {
    Scenario::<CampaignPublishing>::new(CampaignId("c-2".to_owned()))
        .given(activated("c-2", "Forty percent off"))
        .when(activated("c-2", "Fifty percent off"))
        .expect_ignored()
        .expect_state(CampaignPublishingState::AwaitingPublisher)
        .expect_nothing_sent();
}

#[tokio::test]
async fn the_test_engine_runs_the_saga_with_its_contexts() {
    let campaigns = Campaigns::default();
    let test = TestEngine::start(|builder| contexts(builder, &campaigns));

    test.engine.publish(activated("c-3", "A miracle cure"));
    test.engine.idle().await;

    assert_eq!(
        test.commands::<SubmitAdvertisement>(),
        [SubmitAdvertisement {
            campaign_id: CampaignId("c-3".to_owned()),
            advertisement: "A miracle cure".to_owned(),
        }]
    );
    assert_eq!(test.events::<PublishingRejected>().len(), 1);
    assert!(matches!(
        test.engine.instance::<CampaignPublishing>(&CampaignId("c-3".to_owned())).await.unwrap(),
        Some(InstanceStatus::Completed { state: CampaignPublishingState::Rejected })
    ));
    assert_eq!(campaigns.tracked.lock().unwrap().len(), 1);
}

switchyard::process! {
    /// Reminds the customer of an unpaid invoice once a day, and hands the
    /// invoice over after two reminders.
    process Dunning {
        correlate by invoice_id: u64

        data {
            reminders: u32 = 0
        }

        timer Remind

        initial state Idle {
            on InvoiceIssued {
                schedule Remind after 1d
                -> Unpaid
            }
            ignore InvoicePaid
        }

        state Unpaid {
            on InvoicePaid {
                cancel Remind
                -> Paid
            }
            on Remind when data.reminders >= 2 {
                send HandOver { invoice_id: id }
                -> HandedOver
            }
            on Remind {
                set reminders = data.reminders + 1
                send SendReminder { invoice_id: id, reminder: data.reminders }
                schedule Remind after 1d
            }
            ignore InvoiceIssued
        }

        final state Paid
        final state HandedOver
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct InvoiceIssued {
    pub invoice_id: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct InvoicePaid {
    pub invoice_id: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Command)]
pub struct SendReminder {
    pub invoice_id: u64,
    pub reminder: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Command)]
pub struct HandOver {
    pub invoice_id: u64,
}

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

#[test]
fn a_reminder_fires_a_day_after_the_invoice() {
    let start = switchyard::ManualClock::EPOCH;
    Scenario::<Dunning>::new(7)
        .given(InvoiceIssued { invoice_id: 7 })
        .when_timer(DunningTimer::Remind)
        .expect_sent(&[command(SendReminder { invoice_id: 7, reminder: 1 })])
        .expect_timers(&[(DunningTimer::Remind, start + 2 * DAY)]);
}

#[tokio::test]
async fn moving_the_clock_fires_the_reminders_then_the_hand_over() {
    let test = TestEngine::start(|builder| {
        builder
            .process::<Dunning>()
            .handle(|_: SendReminder, _| async { Ok(()) })
            .handle(|_: HandOver, _| async { Ok(()) })
    });
    test.engine.publish(InvoiceIssued { invoice_id: 8 });
    test.engine.idle().await;

    test.advance(DAY).await;
    assert_eq!(test.commands::<SendReminder>(), [SendReminder { invoice_id: 8, reminder: 1 }]);

    test.advance(2 * DAY).await;
    assert_eq!(test.commands::<SendReminder>().len(), 2);
    assert_eq!(test.commands::<HandOver>(), [HandOver { invoice_id: 8 }]);
    assert_eq!(test.engine.timers::<Dunning>(&8).await.unwrap(), []);
}

#[tokio::test]
async fn paying_stops_the_reminders() {
    let test = TestEngine::start(|builder| {
        builder.process::<Dunning>().handle(|_: SendReminder, _| async { Ok(()) })
    });
    test.engine.publish(InvoiceIssued { invoice_id: 9 });
    test.engine.publish(InvoicePaid { invoice_id: 9 });
    test.engine.idle().await;
    test.advance(10 * DAY).await;
    assert!(test.commands::<SendReminder>().is_empty());
}
