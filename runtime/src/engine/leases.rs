//! The lease task, for a store shared by several engine nodes: every third
//! of the store's lease it extends the leases of the outbox rows and timers
//! this node holds, so that no other node takes them over while it lives,
//! and takes over those whose node died, handing them to the relay and the
//! timer index. A store of one node has no lease, and no such task runs.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::Shared;
use super::relay::Pending;
use super::timers::stops_first;

/// Renews and claims every `lease / 3` until the engine stops. Starts once
/// the rows of the last run have been recovered.
pub(super) async fn run(
    weak: Weak<Shared>,
    lease: Duration,
    mut stop: watch::Receiver<()>,
    mut ready: watch::Receiver<bool>,
) {
    if ready.wait_for(|ready| *ready).await.is_err() {
        return;
    }
    let every = (lease / 3).max(Duration::from_millis(10));
    loop {
        if stops_first(tokio::time::sleep(every), &mut stop).await {
            return;
        }
        let Some(shared) = weak.upgrade() else { return };
        tick(&shared).await;
    }
}

/// One round: renew, then claim. Skipped while the store is out (the
/// workers are waiting for it, and what it would hand over can wait too);
/// a failure is logged and left to the next round, which comes well
/// before the lease runs out.
async fn tick(shared: &Shared) {
    if shared.health.is_down() {
        return;
    }
    if let Err(error) = shared.store.renew_leases().await {
        warn!(%error, "could not renew this node's leases; trying again at the next round");
        return;
    }
    let claimed = match shared.store.claim_expired().await {
        Ok(claimed) => claimed,
        Err(error) => {
            warn!(%error, "could not claim the rows of other nodes; trying again at the next round");
            return;
        }
    };
    if claimed.outbox.is_empty() && claimed.timers.is_empty() {
        debug!("leases renewed; nothing to take over");
        return;
    }
    info!(
        outbox = claimed.outbox.len(),
        timers = claimed.timers.len(),
        "took over the outbox rows and timers of a node whose lease ran out"
    );
    shared.relay(claimed.outbox.into_iter().map(Pending::from).collect());
    shared.recover_timers(claimed.timers);
}
