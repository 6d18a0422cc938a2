//! The registration process on three engine nodes, with the other bounded
//! contexts in a program of their own, all on PostgreSQL and NATS
//! JetStream: `cargo run --example distributed`.
//!
//! It needs a PostgreSQL database and a NATS server with JetStream, from
//! `DATABASE_URL` and `NATS_URL` (by default
//! `postgres://postgres@127.0.0.1:5432/test` and `nats://127.0.0.1:4222`).
//! It builds the two programs of the `switchyard-distributed-example`
//! crate, starts three nodes (`node.rs`, ids n1 to n3) and the contexts
//! (`contexts.rs`) as child processes, places forty orders, SIGKILLs node n2
//! halfway and starts it again under the same id, prints every command the
//! contexts receive and every event they answer with, and once the last
//! order has ended prints what became of the orders and stops them all.
//!
//! The nodes keep their instances in the schema `registration` and share
//! the stream `registration` (subjects `registration.>`); each run's orders
//! are tagged with its start time, so a run begins with orders of its own.
//!
//! To run the parts by hand instead, in separate terminals (see the
//! header of each file for its settings):
//!
//! ```text
//! cargo run -p switchyard-distributed-example --bin switchyard-distributed-node -- --node n1
//! cargo run -p switchyard-distributed-example --bin switchyard-distributed-node -- --node n2
//! cargo run -p switchyard-distributed-example --bin switchyard-distributed-contexts -- serve
//! cargo run -p switchyard-distributed-example --bin switchyard-distributed-contexts -- place --count 20
//! ```

#[path = "plan.rs"]
mod plan;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use plan::Kind;

const ORDERS: u32 = 40;
const NODES: [&str; 3] = ["n1", "n2", "n3"];
/// An unpaid order expires this long after it is placed.
const UNPAID_EXPIRY: Duration = Duration::from_secs(5);

fn main() -> anyhow::Result<()> {
    let binaries = build()?;
    let database_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let nats_url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    println!("PostgreSQL {database_url}, NATS {nats_url}\n");
    let run = Processes { binaries, database_url, nats_url, children: Vec::new() };
    drive(run)
}

/// Builds the node and the contexts, in the profile of this example, and
/// says where they are.
fn build() -> anyhow::Result<PathBuf> {
    let here = std::env::current_exe()?;
    // This example is `{target}/{profile}/examples/distributed`.
    let profile_dir = here.parent().and_then(Path::parent).context("where the example runs")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "-p", "switchyard-distributed-example", "--bins"]);
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    let built = build.status().context("run cargo to build the node and the contexts")?;
    anyhow::ensure!(built.success(), "the node and the contexts did not build");
    Ok(profile_dir.to_owned())
}

/// The run's child processes, killed when it is dropped.
struct Processes {
    binaries: PathBuf,
    database_url: String,
    nats_url: String,
    children: Vec<(String, Child)>,
}

impl Processes {
    /// Starts one of the programs; its standard output is handed back.
    fn start(&mut self, name: &str, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let child = Command::new(self.binaries.join(program))
            .args(args)
            .env("DATABASE_URL", &self.database_url)
            .env("NATS_URL", &self.nats_url)
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {program}"))?;
        self.children.push((name.to_owned(), child));
        Ok(())
    }

    /// Starts node `node`, and waits for its line saying it is ready: it
    /// has made the stream, if it was the first.
    fn start_node(&mut self, node: &str) -> anyhow::Result<()> {
        let args = ["--node", node, "--lease-ms", "5000", "--ack-wait-ms", "10000"];
        self.start(node, "switchyard-distributed-node", &args)?;
        let lines = self.output(node)?;
        let ready = lines.recv_timeout(Duration::from_secs(30));
        anyhow::ensure!(ready.is_ok(), "node {node} never said it was ready");
        Ok(())
    }

    /// Echoes the child's output, and hands its lines over.
    fn output(&mut self, name: &str) -> anyhow::Result<mpsc::Receiver<String>> {
        let (_, child) = self.children.iter_mut().rev().find(|(n, _)| n == name).unwrap();
        let stdout = child.stdout.take().context("the child's output")?;
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("{line}");
                let _ = sender.send(line);
            }
        });
        Ok(receiver)
    }

    /// SIGKILLs a child.
    fn kill(&mut self, name: &str) {
        if let Some(index) = self.children.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.children.remove(index);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The run: the nodes, the contexts, the orders, a kill, and what became
/// of the orders.
fn drive(mut run: Processes) -> anyhow::Result<()> {
    for node in NODES {
        run.start_node(node)?;
    }
    let log =
        std::env::temp_dir().join(format!("switchyard-distributed-{}.log", std::process::id()));
    run.start("contexts", "switchyard-distributed-contexts", &["serve", "--log", &path(&log)])?;
    run.output("contexts")?;
    let tag = format!("o{}", plan::now_millis() / 1000);
    let expiry = UNPAID_EXPIRY.as_millis().to_string();
    let count = ORDERS.to_string();
    let place = ["place", "--tag", &tag, "--count", &count, "--per-second", "10"];
    let place = [&place[..], &["--unpaid-expiry-ms", &expiry]].concat();
    run.start("orders", "switchyard-distributed-contexts", &place)?;
    run.output("orders")?;
    std::thread::sleep(Duration::from_secs(2));
    println!("\n  == node n2 SIGKILLed\n");
    run.kill("n2");
    std::thread::sleep(Duration::from_secs(2));
    println!("\n  == node n2 started again\n");
    run.start_node("n2")?;
    let ended = wait_for_the_end(&log, &tag);
    drop(run);
    summary(&log, &tag, ended);
    let _ = std::fs::remove_file(&log);
    Ok(())
}

fn path(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Waits until the contexts have seen every command the orders lead to,
/// for a minute at most; says whether they have.
fn wait_for_the_end(log: &Path, tag: &str) -> bool {
    let expected: usize = (0..ORDERS).map(|o| Kind::of(o).commands().len()).sum();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if commands(log, tag).len() >= expected {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// The (command, order) of each command this run's orders led to, once
/// each: the contexts' log without the resends they dropped.
fn commands(log: &Path, tag: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let prefix = format!("{tag}-");
    text.lines()
        .filter_map(|line| match line.split(' ').collect::<Vec<_>>()[..] {
            [_, _, _, name, order, "fresh"] if order.starts_with(&prefix) => {
                Some((name.to_owned(), order.to_owned()))
            }
            _ => None,
        })
        .collect()
}

/// What became of the orders, as the contexts saw it.
fn summary(log: &Path, tag: &str, ended: bool) {
    let commands = commands(log, tag);
    let count = |name: &str| commands.iter().filter(|(n, _)| n == name).count();
    let kinds = |kind: Kind| (0..ORDERS).filter(|&o| Kind::of(o) == kind).count();
    println!("\n== Afterwards");
    println!(
        "  orders      {ORDERS} placed: {} to pay, {} to wait-list a seat, {} never paid, {} late",
        kinds(Kind::Paid),
        kinds(Kind::WaitListed),
        kinds(Kind::Unpaid),
        kinds(Kind::Late)
    );
    println!("  confirmed   {} (CommitSeatReservation)", count("CommitSeatReservation"));
    println!("  wait list   {} (AddToWaitList)", count("AddToWaitList"));
    println!(
        "  expired     {} (CancelSeatReservation: their Expiry timer fired)",
        count("CancelSeatReservation")
    );
    println!("  rejected    {} (RejectOrder: the expired and the late)", count("RejectOrder"));
    println!("  commands    {} in all, each once", commands.len());
    if !ended {
        println!("  not every command came within a minute: is every node running?");
    }
}
