//! The advertising-campaign publishing saga: `CampaignActivated` ->
//! `SubmitAdvertisement`; the publisher answers `PublishingConfirmed` ->
//! `TrackPublishingConfirmation`, or `PublishingRejected` ->
//! `TrackPublishingRejection`.
//!
//! The process is declared in `campaign.yard`; this file holds the messages,
//! a small in-process publisher context that answers `SubmitAdvertisement`,
//! and the campaign context that tracks the outcome.
//!
//! Run it with `cargo run --example campaign`.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use switchyard::{Command, CommandContext, Engine, EngineBuilder, Event, HandlerError};

switchyard::process!("examples/campaign.yard");

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

/// Prints the engine's tracing events as lines of the message flow.
mod flow {
    use std::fmt;

    use tracing::field::{Field, Visit};
    use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, format};
    use tracing_subscriber::registry::LookupSpan;

    pub struct Flow;

    struct Message<'w, 'a>(&'w mut format::Writer<'a>);

    impl Visit for Message<'_, '_> {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                let _ = write!(self.0, "{value:?}");
            }
        }
    }

    impl<S, N> FormatEvent<S, N> for Flow
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        fn format_event(
            &self,
            _: &FmtContext<'_, S, N>,
            mut writer: format::Writer<'_>,
            event: &tracing::Event<'_>,
        ) -> fmt::Result {
            write!(writer, "  engine      ")?;
            event.record(&mut Message(&mut writer));
            writeln!(writer)
        }
    }
}

#[allow(dead_code)]
#[tokio::main]
async fn main() {
    // The engine reports each decision as a tracing event; show their messages.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "switchyard_runtime=info".into()),
        )
        .event_format(flow::Flow)
        .init();
    let campaigns = Campaigns::default();
    let engine = engine(&campaigns);

    for (id, advertisement) in [
        ("spring-sale", "Forty percent off all bicycles until May"),
        ("hair-tonic", "A miracle tonic: hair in three days"),
    ] {
        let campaign_id = CampaignId(id.to_owned());
        println!("campaign {id:?} activated");
        engine.publish(CampaignActivated {
            campaign_id: campaign_id.clone(),
            advertisement: advertisement.to_owned(),
        });
        engine.idle().await;
        match engine.instance::<CampaignPublishing>(&campaign_id).await {
            Ok(Some(status)) => println!("  saga        == {status:?}\n"),
            Ok(None) => println!("  saga        == never started\n"),
            Err(error) => println!("  saga        == cannot be read: {error}\n"),
        }
    }

    let stats = engine.stats();
    println!(
        "handled {} events, delivered {} commands, {} dead letters",
        stats.handled, stats.commands_delivered, stats.dead_lettered
    );
}
