//! End to end on PostgreSQL and NATS JetStream: three engine node
//! processes run the registration process on one schema and one stream,
//! the contexts process answers its commands, and thousands of orders are
//! placed at a steady rate. While they flow, one node is SIGKILLed, and
//! started again under the same node id a few seconds later, after its
//! lease has run out.
//!
//! Then, from the contexts' log of every delivery and from the database:
//! every command each order must lead to arrived under one id and was
//! handled once by that id (resends on the wire are counted, not failed),
//! no other command arrived, the `Expiry` timer of every unpaid order fired
//! once (its `CancelSeatReservation` and `RejectOrder`, once each), every
//! instance is in the state its order must end in, and no outbox row,
//! timer or dead letter is left. A report of what was found comes before
//! the assertions, so that a failing run still says all of it.
//!
//! The servers are `DATABASE_URL` and `NATS_URL`. Without them the test
//! says so in one line and passes, except in CI (`CI` set), where it fails.
//! Each run has a schema and a stream of its own, dropped at its end.

#[path = "../plan.rs"]
mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plan::Kind;

const ORDERS: u32 = 2_500;
/// The rate the orders are placed at: the whole stream takes ten seconds.
const PER_SECOND: u32 = 250;
/// An unpaid order expires this long after it is placed: long enough for
/// its reservation to come back through a killed node, short enough that
/// most timers fire while the stream still flows.
const UNPAID_EXPIRY: Duration = Duration::from_secs(15);
/// The nodes' lease: a killed node's rows wait this long for another node.
const LEASE: Duration = Duration::from_secs(2);
/// How long JetStream waits for a node to settle a delivery, as a killed
/// node's deliveries are redelivered to the others after it.
const ACK_WAIT: Duration = Duration::from_secs(5);
/// When the node is killed: a third into the stream.
const KILL_AT: Duration = Duration::from_millis(1_000 * ORDERS as u64 / PER_SECOND as u64 / 3);
/// How long it stays dead: past its lease, so that the others take over.
const DEAD_FOR: Duration = Duration::from_secs(3);
/// How long the whole run may take once the last order is placed.
const DEADLINE: Duration = Duration::from_secs(90);
const NODES: [&str; 3] = ["n1", "n2", "n3"];
const KILLED: usize = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_killed_mid_stream_send_each_command_once_and_fire_each_timer_once() {
    let Some(servers) = servers() else { return };
    let started = Instant::now();
    let mut run = Run::new(servers);
    for node in 0..NODES.len() {
        run.start_node(node);
    }
    run.wait_for_stream().await;
    run.children.push(run.contexts(&["serve", "--quiet", "--log", &run.log.to_string_lossy()]));
    let kill = run.place_and_kill().await;
    let log = run.wait_for_the_end().await;
    run.stop();
    let report = Report {
        kill,
        log,
        database: Database::read(&run.servers.database_url, &run.schema).await,
        warnings: run.node_warnings(),
        elapsed: started.elapsed(),
    };
    print!("{report}");
    report.assert_sound();
}

/// The servers' addresses.
#[derive(Debug)]
struct Servers {
    database_url: String,
    nats_url: String,
}

/// The servers to run on, or `None` (said in one line) to skip.
fn servers() -> Option<Servers> {
    match (std::env::var("DATABASE_URL"), std::env::var("NATS_URL")) {
        (Ok(database_url), Ok(nats_url)) if !database_url.is_empty() && !nats_url.is_empty() => {
            Some(Servers { database_url, nats_url })
        }
        _ if std::env::var_os("CI").is_some() => panic!(
            "DATABASE_URL and NATS_URL are not set, and CI must run the distributed test: set both"
        ),
        _ => {
            println!("DATABASE_URL and NATS_URL are not set: skipping the distributed test");
            None
        }
    }
}

/// One run: its names on the servers, its files, and its child processes,
/// all killed and dropped when it is.
struct Run {
    servers: Servers,
    schema: String,
    stream: String,
    prefix: String,
    dir: PathBuf,
    log: PathBuf,
    nodes: Vec<Option<Child>>,
    children: Vec<Child>,
}

/// When the node was killed and what had happened by then.
#[derive(Debug)]
struct Kill {
    at: Duration,
    commands_before: usize,
    placing: bool,
    restarted_at: Duration,
}

impl Run {
    fn new(servers: Servers) -> Run {
        let unique = format!("{}t{}", std::process::id(), plan::now_millis());
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("distributed-{unique}"));
        std::fs::create_dir_all(&dir).unwrap();
        Run {
            servers,
            schema: format!("distributed_{unique}"),
            stream: format!("distributed-{unique}"),
            prefix: format!("distributed{unique}"),
            log: dir.join("contexts.log"),
            dir,
            nodes: NODES.iter().map(|_| None).collect(),
            children: Vec::new(),
        }
    }

    /// Starts node `n`, its output appended to files of its own.
    fn start_node(&mut self, n: usize) {
        let output = |tail: &str| {
            let path = self.dir.join(format!("{}.{tail}", NODES[n]));
            std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap()
        };
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard-distributed-node"))
            .args(["--node", NODES[n], "--schema", &self.schema])
            .args(["--stream", &self.stream, "--prefix", &self.prefix])
            .args(["--lease-ms", &LEASE.as_millis().to_string()])
            .args(["--ack-wait-ms", &ACK_WAIT.as_millis().to_string()])
            .env("DATABASE_URL", &self.servers.database_url)
            .env("NATS_URL", &self.servers.nats_url)
            .stdout(output("out"))
            .stderr(output("err"))
            .spawn()
            .expect("start a node");
        self.nodes[n] = Some(child);
    }

    /// The contexts program with `args`, on this run's stream.
    fn contexts(&self, args: &[&str]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_switchyard-distributed-contexts"))
            .args(args)
            .args(["--stream", &self.stream, "--prefix", &self.prefix])
            .env("NATS_URL", &self.servers.nats_url)
            .stdout(Stdio::null())
            .spawn()
            .expect("start the contexts")
    }

    /// Waits until the nodes have made the stream, so that the orders
    /// placed next are stored.
    async fn wait_for_stream(&self) {
        let jetstream = self.jetstream().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while jetstream.get_stream(&self.stream).await.is_err() {
            assert!(Instant::now() < deadline, "the nodes never made the stream");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn jetstream(&self) -> async_nats::jetstream::Context {
        let client = async_nats::connect(&self.servers.nats_url).await.expect("connect to NATS");
        async_nats::jetstream::new(client)
    }

    /// Places the orders, kills a node a third into them and starts it
    /// again a little later.
    async fn place_and_kill(&mut self) -> Kill {
        let placing_since = Instant::now();
        let orders = ORDERS.to_string();
        let rate = PER_SECOND.to_string();
        let expiry = UNPAID_EXPIRY.as_millis().to_string();
        let mut placer = self.contexts(&[
            "place",
            "--quiet",
            "--count",
            &orders,
            "--per-second",
            &rate,
            "--unpaid-expiry-ms",
            &expiry,
        ]);
        tokio::time::sleep(KILL_AT).await;
        let mut killed = self.nodes[KILLED].take().unwrap();
        killed.kill().unwrap();
        killed.wait().unwrap();
        let at = placing_since.elapsed();
        let commands_before = Log::read(&self.log).deliveries;
        let placing = placer.try_wait().unwrap().is_none();
        tokio::time::sleep(DEAD_FOR).await;
        self.start_node(KILLED);
        let restarted_at = placing_since.elapsed();
        let placed = tokio::task::spawn_blocking(move || placer.wait()).await.unwrap().unwrap();
        assert!(placed.success(), "the orders could not all be placed");
        Kill { at, commands_before, placing, restarted_at }
    }

    /// Reads the log until every command expected has come, or the
    /// deadline has passed; then a little longer, for what comes late.
    async fn wait_for_the_end(&self) -> Log {
        let expected = expected().len();
        let deadline = Instant::now() + DEADLINE;
        while Log::read(&self.log).by_id.len() < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        tokio::time::sleep(2 * ACK_WAIT).await;
        Log::read(&self.log)
    }

    /// Kills every process of the run.
    fn stop(&mut self) {
        let nodes = self.nodes.iter_mut().flatten();
        for child in nodes.chain(self.children.iter_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The nodes' warnings and errors, as they wrote them.
    fn node_warnings(&self) -> Vec<String> {
        let read = |node: &&str| std::fs::read_to_string(self.dir.join(format!("{node}.err")));
        NODES
            .iter()
            .filter_map(|node| read(node).ok())
            .flat_map(|text| text.lines().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    }
}

/// Drops the schema and deletes the stream on a thread of its own: the
/// test's runtime may be the one that is dropping this.
impl Drop for Run {
    fn drop(&mut self) {
        self.stop();
        let (url, schema) = (self.servers.database_url.clone(), self.schema.clone());
        let (nats, stream) = (self.servers.nats_url.clone(), self.stream.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            runtime.unwrap().block_on(async {
                let client = connect(&url).await;
                let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
                if let Err(e) = client.batch_execute(&sql).await {
                    eprintln!("could not drop the schema `{schema}`: {e}");
                }
                let jetstream = async_nats::jetstream::new(async_nats::connect(&nats).await?);
                if let Err(e) = jetstream.delete_stream(&stream).await {
                    eprintln!("could not delete the stream `{stream}`: {e}");
                }
                Ok::<_, async_nats::ConnectError>(())
            })
        });
        drop(dropped.join());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect to PostgreSQL");
    tokio::spawn(connection);
    client
}

/// Every command the orders must lead to, as (order, command name).
fn expected() -> BTreeSet<(String, String)> {
    (0..ORDERS)
        .flat_map(|order| {
            let id = plan::order_id("o", order);
            Kind::of(order).commands().iter().map(move |name| (id.clone(), (*name).to_owned()))
        })
        .collect()
}

/// One delivery, as the contexts logged it.
#[derive(Debug)]
struct Delivery {
    sequence: u64,
    id: String,
    name: String,
    order: String,
    fresh: bool,
}

/// What the contexts' log says.
#[derive(Debug, Default)]
struct Log {
    deliveries: usize,
    /// Each command id's deliveries.
    by_id: BTreeMap<String, Vec<Delivery>>,
}

impl Log {
    fn read(path: &Path) -> Log {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut log = Log::default();
        // Only whole lines: the contexts may be writing the last one.
        for line in text.lines().filter(|line| line.ends_with("fresh") || line.ends_with("again")) {
            let fields: Vec<&str> = line.split(' ').collect();
            let [sequence, _delivered, id, name, order, mark] = fields[..] else { continue };
            let delivery = Delivery {
                sequence: sequence.parse().unwrap_or(0),
                id: id.to_owned(),
                name: name.to_owned(),
                order: order.to_owned(),
                fresh: mark == "fresh",
            };
            log.deliveries += 1;
            log.by_id.entry(delivery.id.clone()).or_default().push(delivery);
        }
        log
    }

    /// The ids each (order, command) arrived under.
    fn ids(&self) -> BTreeMap<(String, String), BTreeSet<&str>> {
        let mut ids: BTreeMap<_, BTreeSet<&str>> = BTreeMap::new();
        for first in self.by_id.values().map(|deliveries| &deliveries[0]) {
            ids.entry((first.order.clone(), first.name.clone())).or_default().insert(&first.id);
        }
        ids
    }

    /// Deliveries of an id the stream stored more than once (a resend
    /// after the duplicate window, or by two nodes at once).
    fn stored_again(&self) -> usize {
        self.by_id
            .values()
            .map(|d| d.iter().map(|d| d.sequence).collect::<BTreeSet<_>>().len() - 1)
            .sum()
    }

    /// Ids handled other than once (the contexts' own deduplication).
    fn handled_other_than_once(&self) -> Vec<&str> {
        let fresh = |d: &Vec<Delivery>| d.iter().filter(|d| d.fresh).count();
        self.by_id.iter().filter(|(_, d)| fresh(d) != 1).map(|(id, _)| id.as_str()).collect()
    }
}

/// What is left in the schema.
#[derive(Debug)]
struct Database {
    /// Each instance's key (the order id) and state.
    states: BTreeMap<String, String>,
    outbox: i64,
    timers: i64,
    dead_letters: i64,
}

impl Database {
    async fn read(url: &str, schema: &str) -> Database {
        let client = connect(url).await;
        let rows = client
            .query(&format!("SELECT key, state FROM \"{schema}\".instances"), &[])
            .await
            .expect("read the instances");
        // Keys and states are stored as JSON: `"o-17"`, `"Completed"`.
        let text = |s: String| s.trim_matches('"').to_owned();
        let states = rows.into_iter().map(|r| (text(r.get(0)), text(r.get(1)))).collect();
        let count = async |table: &str| -> i64 {
            let sql = format!("SELECT count(*) FROM \"{schema}\".{table}");
            client.query_one(&sql, &[]).await.expect("count a table").get(0)
        };
        Database {
            states,
            outbox: count("outbox").await,
            timers: count("timers").await,
            dead_letters: count("dead_letters").await,
        }
    }

    /// The orders whose instance is not in the state it must end in.
    fn wrong_states(&self) -> Vec<String> {
        (0..ORDERS)
            .filter_map(|order| {
                let id = plan::order_id("o", order);
                let must = Kind::of(order).final_state();
                let state = self.states.get(&id).map_or("(none)", String::as_str);
                (state != must).then(|| format!("{id}: {state}, not {must}"))
            })
            .collect()
    }
}

/// What the run found.
struct Report {
    kill: Kill,
    log: Log,
    database: Database,
    warnings: Vec<String>,
    elapsed: Duration,
}

impl Report {
    fn missing(&self) -> Vec<(String, String)> {
        let ids = self.log.ids();
        expected().into_iter().filter(|key| !ids.contains_key(key)).collect()
    }

    fn unexpected(&self) -> Vec<(String, String)> {
        let expected = expected();
        self.log.ids().into_keys().filter(|key| !expected.contains(key)).collect()
    }

    /// Commands that arrived under more than one id: decided twice.
    fn under_several_ids(&self) -> Vec<(String, String)> {
        self.log.ids().into_iter().filter(|(_, ids)| ids.len() > 1).map(|(key, _)| key).collect()
    }

    /// The unpaid orders whose `Expiry` led to its two commands once each.
    fn timers_fired_once(&self) -> usize {
        let ids = self.log.ids();
        let once = |order: &String, name: &str| {
            ids.get(&(order.clone(), name.to_owned())).is_some_and(|ids| ids.len() == 1)
        };
        (0..ORDERS)
            .filter(|&order| Kind::of(order) == Kind::Unpaid)
            .map(|order| plan::order_id("o", order))
            .filter(|order| once(order, "CancelSeatReservation") && once(order, "RejectOrder"))
            .count()
    }

    fn assert_sound(&self) {
        assert!(self.kill.placing, "the node was killed after the last order was placed");
        assert!(self.kill.commands_before > 0, "the node was killed before any command flowed");
        assert_eq!(self.missing(), Vec::<(String, String)>::new(), "commands that never came");
        assert_eq!(self.unexpected(), Vec::<(String, String)>::new(), "commands not expected");
        assert_eq!(self.under_several_ids(), Vec::<(String, String)>::new(), "decided twice");
        assert_eq!(self.log.handled_other_than_once(), Vec::<&str>::new(), "handled twice");
        let unpaid = (0..ORDERS).filter(|&o| Kind::of(o) == Kind::Unpaid).count();
        assert_eq!(self.timers_fired_once(), unpaid, "unpaid orders whose timer fired once");
        assert_eq!(
            self.database.wrong_states(),
            Vec::<String>::new(),
            "instances in a wrong state"
        );
        assert_eq!(self.database.states.len(), ORDERS as usize, "one instance per order");
        let left = (self.database.outbox, self.database.timers, self.database.dead_letters);
        assert_eq!(left, (0, 0, 0), "outbox rows, timers and dead letters left");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kill, log, db) = (&self.kill, &self.log, &self.database);
        let unpaid = (0..ORDERS).filter(|&o| Kind::of(o) == Kind::Unpaid).count();
        writeln!(f, "distributed run: {ORDERS} orders at {PER_SECOND}/s on {} nodes", NODES.len())?;
        writeln!(
            f,
            "  kill        {} SIGKILLed at {:.1?} ({} commands delivered by then, orders {}), restarted at {:.1?}",
            NODES[KILLED],
            kill.at,
            kill.commands_before,
            if kill.placing { "still being placed" } else { "all placed" },
            kill.restarted_at
        )?;
        writeln!(
            f,
            "  commands    {} expected, {} ids, {} deliveries: {} duplicates on the wire ({} stored again, {} redelivered)",
            expected().len(),
            log.by_id.len(),
            log.deliveries,
            log.deliveries - log.by_id.len(),
            log.stored_again(),
            log.deliveries - log.by_id.len() - log.stored_again()
        )?;
        writeln!(
            f,
            "  wrong       {} missing, {} unexpected, {} under several ids, {} handled other than once",
            self.missing().len(),
            self.unexpected().len(),
            self.under_several_ids().len(),
            log.handled_other_than_once().len()
        )?;
        writeln!(
            f,
            "  timers      {} of {unpaid} unpaid orders expired once",
            self.timers_fired_once()
        )?;
        writeln!(
            f,
            "  database    {} instances, {} in a wrong state; {} outbox rows, {} timers, {} dead letters left",
            db.states.len(),
            db.wrong_states().len(),
            db.outbox,
            db.timers,
            db.dead_letters
        )?;
        writeln!(f, "  nodes       {} lines of warnings", self.warnings.len())?;
        for line in self.warnings.iter().take(5) {
            writeln!(f, "              {line}")?;
        }
        writeln!(f, "  time        {:.1?}", self.elapsed)
    }
}
