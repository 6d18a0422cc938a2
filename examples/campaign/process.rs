//! The advertising-campaign publishing saga of `campaign.yard`, with its
//! messages, a small in-process publisher context that answers
//! `SubmitAdvertisement`, and the campaign context that tracks the outcome.
//! `main.rs` runs it; the tests under `tests/` use it too.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use switchyard::{Command, CommandContext, Engine, EngineBuilder, Event, HandlerError};

switchyard::process!("examples/campaign/campaign.yard");

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CampaignId(pub String);

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct CampaignActivated {
    pub campaign_id: CampaignId,
    pub advertisement: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct PublishingConfirmed {
    pub campaign_id: CampaignId,
    pub confirmation_id: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct PublishingRejected {
    pub campaign_id: CampaignId,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Command)]
pub struct SubmitAdvertisement {
    pub campaign_id: CampaignId,
    pub advertisement: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Command)]
pub struct TrackPublishingConfirmation {
    pub campaign_id: CampaignId,
    pub confirmation_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Command)]
pub struct TrackPublishingRejection {
    pub campaign_id: CampaignId,
    pub reason: String,
}

/// What the campaign context has been told, in order.
#[derive(Clone, Debug, Default)]
pub struct Campaigns {
    pub tracked: Arc<Mutex<Vec<Tracked>>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tracked {
    Confirmed(TrackPublishingConfirmation),
    Rejected(TrackPublishingRejection),
}

/// The publisher refuses advertisements that mention this word.
pub const FORBIDDEN: &str = "miracle";

/// The publisher context: confirms an advertisement unless it is forbidden.
async fn publisher(command: SubmitAdvertisement, ctx: CommandContext) -> Result<(), HandlerError> {
    println!(
        "  publisher   <- SubmitAdvertisement {{ {:?}, {:?} }}",
        command.campaign_id.0, command.advertisement
    );
    if command.advertisement.contains(FORBIDDEN) {
        let reason = format!("advertisements may not promise a {FORBIDDEN}");
        println!("  publisher   -> PublishingRejected {{ {:?} }}", reason);
        ctx.publish(PublishingRejected { campaign_id: command.campaign_id, reason });
    } else {
        let confirmation_id = format!("conf-{}", command.campaign_id.0);
        println!("  publisher   -> PublishingConfirmed {{ {confirmation_id:?} }}");
        ctx.publish(PublishingConfirmed { campaign_id: command.campaign_id, confirmation_id });
    }
    Ok(())
}

/// An engine running the saga, the publisher, and a campaign context that
/// records into `campaigns`.
pub fn engine(campaigns: &Campaigns) -> Engine {
    contexts(Engine::builder(), campaigns).build()
}

/// Adds the saga, the publisher and the campaign context to an engine
/// builder: tests use it with a test engine.
pub fn contexts(builder: EngineBuilder, campaigns: &Campaigns) -> EngineBuilder {
    let confirmed = campaigns.tracked.clone();
    let rejected = campaigns.tracked.clone();
    builder
        .process::<CampaignPublishing>()
        .handle(publisher)
        .handle(move |command: TrackPublishingConfirmation, _| {
            let tracked = confirmed.clone();
            async move {
                println!("  campaign    <- {command:?}");
                tracked.lock().unwrap().push(Tracked::Confirmed(command));
                Ok(())
            }
        })
        .handle(move |command: TrackPublishingRejection, _| {
            let tracked = rejected.clone();
            async move {
                println!("  campaign    <- {command:?}");
                tracked.lock().unwrap().push(Tracked::Rejected(command));
                Ok(())
            }
        })
}
