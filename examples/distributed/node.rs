//! One engine node of the distributed example: the conference registration
//! process (`examples/registration/registration.yard`) on a PostgreSQL
//! store and a NATS JetStream bus. It has no command handlers: every
//! command the process sends goes out on JetStream to the other contexts
//! (`contexts.rs`), and their events come back the same way. Start as many
//! nodes as you like on one schema and stream, each under its own node id;
//! they share the events, and a node that dies has its outbox rows and
//! timers taken over by the others once its lease runs out, or taken back
//! at once when it comes back under the same id.
//!
//! It runs until Ctrl-C (or SIGKILL). Settings, each a flag or else an
//! environment variable:
//!
//! ```text
//! switchyard-distributed-node --node n1 [--schema registration]
//!     [--stream registration] [--prefix registration] [--lease-ms 30000]
//!     [--ack-wait-ms 30000]
//! DATABASE_URL (postgres://postgres@127.0.0.1:5432/test)
//! NATS_URL     (nats://127.0.0.1:4222)
//! ```

// The module holds the in-process contexts of the registration example as
// well, which a node leaves to the other program.
#[path = "plan.rs"]
mod plan;
#[allow(dead_code)]
#[path = "../registration/process.rs"]
mod process;

use std::time::Duration;

use anyhow::Context as _;
use plan::setting;
use process::Registration;
use switchyard::Engine;
use switchyard_nats::{JetStreamBus, JetStreamOptions};
use switchyard_postgres::{NodeId, PostgresOptions, PostgresStore};

/// What a node is told at its start.
#[derive(Debug)]
struct Settings {
    node: String,
    database_url: String,
    nats_url: String,
    store: PostgresOptions,
    bus: JetStreamOptions,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Warnings and errors only: a node under load has nothing to say
    // otherwise, and RUST_LOG asks for more.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    let settings = settings(&std::env::args().skip(1).collect::<Vec<_>>())?;
    let node = settings.node.clone();
    let store = PostgresStore::connect(&settings.database_url, settings.store)
        .await
        .context("connect to PostgreSQL (DATABASE_URL)")?;
    let bus = JetStreamBus::connect(&settings.nats_url, settings.bus)
        .await
        .context("connect to NATS JetStream (NATS_URL)")?;
    let engine = Engine::builder().store(store).bus(bus).process::<Registration>().build();
    // The test and the example wait for this line before they go on.
    println!("node {node} ready");
    tokio::signal::ctrl_c().await.context("wait for Ctrl-C")?;
    println!("node {node} stopping: {:?}", engine.stats());
    Ok(())
}

fn settings(args: &[String]) -> anyhow::Result<Settings> {
    let node = setting(args, "--node", "SWITCHYARD_NODE", "");
    anyhow::ensure!(!node.is_empty(), "a node needs an id: --node n1 (or SWITCHYARD_NODE)");
    let name = plan::DEFAULT_NAME;
    let millis = |flag: &str, env: &str| -> anyhow::Result<Duration> {
        let text = setting(args, flag, env, "30000");
        let n = text.parse().with_context(|| format!("{flag} is milliseconds, not `{text}`"))?;
        Ok(Duration::from_millis(n))
    };
    Ok(Settings {
        node: node.clone(),
        database_url: setting(
            args,
            "--database-url",
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/test",
        ),
        nats_url: setting(args, "--nats-url", "NATS_URL", "nats://127.0.0.1:4222"),
        store: PostgresOptions {
            schema: setting(args, "--schema", "SWITCHYARD_SCHEMA", name),
            node: NodeId::new(node.as_str()),
            lease: millis("--lease-ms", "SWITCHYARD_LEASE_MS")?,
            ..PostgresOptions::default()
        },
        bus: JetStreamOptions {
            stream: setting(args, "--stream", "SWITCHYARD_STREAM", name),
            subject_prefix: setting(args, "--prefix", "SWITCHYARD_PREFIX", name),
            // Every node of this program shares the work of each consumer.
            consumer: "registration".into(),
            ack_wait: millis("--ack-wait-ms", "SWITCHYARD_ACK_WAIT_MS")?,
            ..JetStreamOptions::default()
        },
    })
}
