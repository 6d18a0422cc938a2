//! The advertising-campaign publishing saga: `CampaignActivated` ->
//! `SubmitAdvertisement`; the publisher answers `PublishingConfirmed` ->
//! `TrackPublishingConfirmation`, or `PublishingRejected` ->
//! `TrackPublishingRejection`.
//!
//! The process is declared in `campaign.yard`, its messages and contexts in
//! `process.rs`; this file runs two campaigns and prints the message flow,
//! with the outbox at work: each decision is committed (state, inbox row,
//! outbox rows) in one transaction before the relay sends what it decided.
//!
//! Run it with `cargo run --example campaign`.

mod process;

use process::*;

#[path = "../common/flow.rs"]
mod flow;

#[tokio::main]
async fn main() {
    // The engine reports each decision as a tracing event; show their messages.
    flow::init("switchyard_runtime=info,switchyard::outbox=info");
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
