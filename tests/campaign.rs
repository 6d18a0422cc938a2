//! The campaign publishing saga end to end, on the in-memory engine: both
//! outcomes of the publisher, and what happens to messages that arrive when
//! they no longer matter.

#[path = "../examples/campaign/process.rs"]
mod campaign;

use campaign::*;
use switchyard::{InstanceStatus, Process as _};

fn activated(id: &str, advertisement: &str) -> CampaignActivated {
    CampaignActivated {
        campaign_id: CampaignId(id.to_owned()),
        advertisement: advertisement.to_owned(),
    }
}

#[tokio::test]
async fn a_confirmed_advertisement_is_tracked_as_published() {
    let campaigns = Campaigns::default();
    let engine = engine(&campaigns);

    engine.publish(activated("c-1", "Forty percent off"));
    engine.idle().await;

    assert_eq!(
        *campaigns.tracked.lock().unwrap(),
        vec![Tracked::Confirmed(TrackPublishingConfirmation {
            campaign_id: CampaignId("c-1".to_owned()),
            confirmation_id: "conf-c-1".to_owned(),
        })]
    );
    assert!(matches!(
        engine.instance::<CampaignPublishing>(&CampaignId("c-1".to_owned())).await.unwrap(),
        Some(InstanceStatus::Completed { state: CampaignPublishingState::Published })
    ));
    let stats = engine.stats();
    assert_eq!((stats.handled, stats.commands_delivered, stats.dead_lettered), (2, 2, 0));
}

#[tokio::test]
async fn a_rejected_advertisement_is_tracked_as_rejected() {
    let campaigns = Campaigns::default();
    let engine = engine(&campaigns);

    engine.publish(activated("c-2", &format!("A {FORBIDDEN} cure")));
    engine.idle().await;

    assert_eq!(
        *campaigns.tracked.lock().unwrap(),
        vec![Tracked::Rejected(TrackPublishingRejection {
            campaign_id: CampaignId("c-2".to_owned()),
            reason: format!("advertisements may not promise a {FORBIDDEN}"),
        })]
    );
    assert!(matches!(
        engine.instance::<CampaignPublishing>(&CampaignId("c-2".to_owned())).await.unwrap(),
        Some(InstanceStatus::Completed { state: CampaignPublishingState::Rejected })
    ));
}

#[tokio::test]
async fn many_campaigns_run_side_by_side() {
    let campaigns = Campaigns::default();
    let engine = engine(&campaigns);

    for i in 0..200 {
        let text = if i % 3 == 0 { format!("{FORBIDDEN} {i}") } else { format!("offer {i}") };
        engine.publish(activated(&format!("c-{i}"), &text));
    }
    engine.idle().await;

    let (tracked, rejected) = {
        let tracked = campaigns.tracked.lock().unwrap();
        (tracked.len(), tracked.iter().filter(|t| matches!(t, Tracked::Rejected(_))).count())
    };
    assert_eq!((tracked, rejected), (200, 67));
    assert!(engine.dead_letters().await.unwrap().is_empty());
}

#[tokio::test]
async fn answers_after_completion_or_before_activation_change_nothing() {
    let campaigns = Campaigns::default();
    let engine = engine(&campaigns);

    // A publisher answer for a campaign the saga never saw: the initial state
    // ignores it, so no instance is created.
    engine.publish(PublishingConfirmed {
        campaign_id: CampaignId("stray".to_owned()),
        confirmation_id: "conf-stray".to_owned(),
    });
    engine.idle().await;
    assert!(
        engine
            .instance::<CampaignPublishing>(&CampaignId("stray".to_owned()))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(engine.stats().ignored_at_start, 1);

    // A duplicate answer after completion is recorded and never restarts the saga.
    engine.publish(activated("c-3", "offer"));
    engine.idle().await;
    engine.publish(PublishingRejected {
        campaign_id: CampaignId("c-3".to_owned()),
        reason: "late".to_owned(),
    });
    engine.idle().await;
    assert_eq!(engine.stats().after_completion, 1);
    assert_eq!(campaigns.tracked.lock().unwrap().len(), 1);
    assert!(matches!(
        engine.instance::<CampaignPublishing>(&CampaignId("c-3".to_owned())).await.unwrap(),
        Some(InstanceStatus::Completed { state: CampaignPublishingState::Published })
    ));
}

#[test]
fn the_generated_description_matches_the_yard_file() {
    let description = CampaignPublishing::description();
    assert_eq!(description.name, "CampaignPublishing");
    let states: Vec<_> = description.states.iter().map(|s| s.name).collect();
    assert_eq!(states, ["Idle", "AwaitingPublisher", "Published", "Rejected"]);
    assert_eq!(
        description.inputs,
        ["CampaignActivated", "PublishingConfirmed", "PublishingRejected"]
    );
    let edges: Vec<_> =
        description.transitions.iter().map(|t| (t.from, t.input, t.to, t.sends)).collect();
    assert_eq!(
        edges,
        [
            ("Idle", "CampaignActivated", "AwaitingPublisher", &["SubmitAdvertisement"][..]),
            (
                "AwaitingPublisher",
                "PublishingConfirmed",
                "Published",
                &["TrackPublishingConfirmation"][..]
            ),
            (
                "AwaitingPublisher",
                "PublishingRejected",
                "Rejected",
                &["TrackPublishingRejection"][..]
            ),
        ]
    );
}

mod scenarios {
    //! Every transition of the saga on the pure `decide`, one story each.

    use super::*;
    use switchyard::testing::{Scenario, command};

    fn id() -> CampaignId {
        CampaignId("c-9".to_owned())
    }

    #[test]
    fn an_activation_submits_the_advertisement() {
        Scenario::<CampaignPublishing>::new(id())
            .when(activated("c-9", "offer"))
            .expect_state(CampaignPublishingState::AwaitingPublisher)
            .expect_sent(&[command(SubmitAdvertisement {
                campaign_id: id(),
                advertisement: "offer".to_owned(),
            })]);
    }

    #[test]
    fn a_confirmation_is_tracked_and_completes_the_saga() {
        Scenario::<CampaignPublishing>::new(id())
            .given(activated("c-9", "offer"))
            .when(PublishingConfirmed { campaign_id: id(), confirmation_id: "k".to_owned() })
            .expect_state(CampaignPublishingState::Published)
            .expect_completed()
            .expect_sent(&[command(TrackPublishingConfirmation {
                campaign_id: id(),
                confirmation_id: "k".to_owned(),
            })]);
    }

    #[test]
    fn a_rejection_is_tracked_and_completes_the_saga() {
        Scenario::<CampaignPublishing>::new(id())
            .given(activated("c-9", "offer"))
            .when(PublishingRejected { campaign_id: id(), reason: "no".to_owned() })
            .expect_state(CampaignPublishingState::Rejected)
            .expect_completed()
            .expect_sent(&[command(TrackPublishingRejection {
                campaign_id: id(),
                reason: "no".to_owned(),
            })]);
    }

    #[test]
    fn answers_for_a_campaign_never_activated_start_nothing() {
        Scenario::<CampaignPublishing>::new(id())
            .when(PublishingConfirmed { campaign_id: id(), confirmation_id: "k".to_owned() })
            .expect_ignored();
        Scenario::<CampaignPublishing>::new(id())
            .when(PublishingRejected { campaign_id: id(), reason: "no".to_owned() })
            .expect_ignored();
    }

    #[test]
    fn a_second_activation_while_waiting_changes_nothing() {
        Scenario::<CampaignPublishing>::new(id())
            .given(activated("c-9", "offer"))
            .when(activated("c-9", "another offer"))
            .expect_ignored();
    }
}
