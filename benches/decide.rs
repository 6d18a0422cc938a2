//! `decide` as generated against the same routing table written by hand, in
//! one run, on a predictable and on a random stream of inputs.
//!
//! Criterion measures each of the four and prints its report; then the bench
//! times the pairs itself, interleaved round by round so that both sides of
//! a ratio see the same machine, and appends one JSON line per stream to
//! `target/bench-results.jsonl` (the median of the rounds, in nanoseconds per
//! decision). Run it with `cargo bench --bench decide`.

use std::hint::black_box;
use std::io::Write as _;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use serde::{Deserialize, Serialize};
use switchyard::{Command, Context, Decision, Event, MessageId, Process, TimerOp, Timestamp};

switchyard::process! {
    process Order {
        correlate by order_id: u64

        data {
            total: u64 = 0
            items: u32 = 0
        }

        timer Expiry

        initial state Open {
            on ItemAdded when event.price > 1000 {
                set total = data.total + event.price
                set items = data.items + 1
                send Review { order_id: id, price: event.price }
            }
            on ItemAdded {
                set total = data.total + event.price
                set items = data.items + 1
            }
            on CheckedOut when data.items == 0 { -> Cancelled }
            on CheckedOut {
                send Charge { order_id: id, amount: data.total }
                schedule Expiry after 15m
                -> Paying
            }
            ignore Paid
        }

        state Paying {
            on Paid {
                cancel Expiry
                send Ship { order_id: id }
                -> Done
            }
            on Expiry { -> Cancelled }
            ignore ItemAdded, CheckedOut
        }

        final state Done
        final state Cancelled
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct ItemAdded {
    pub order_id: u64,
    pub price: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct CheckedOut {
    pub order_id: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct Paid {
    pub order_id: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Command)]
pub struct Review {
    pub order_id: u64,
    pub price: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Command)]
pub struct Charge {
    pub order_id: u64,
    pub amount: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Command)]
pub struct Ship {
    pub order_id: u64,
}

/// The same table as `Order`, written by hand the way one would without the
/// language: the baseline.
fn hand_decide(
    state: OrderState,
    data: &OrderData,
    input: &OrderInput,
    ctx: &Context<'_, u64>,
) -> Decision<Order> {
    use OrderInput as I;
    use OrderState as S;
    let id = *ctx.key;
    match (state, input) {
        (S::Open, I::ItemAdded(event)) => {
            let data = OrderData { total: data.total + event.price, items: data.items + 1 };
            let outputs = if event.price > 1000 {
                vec![OrderOutput::Review(Review { order_id: id, price: event.price })]
            } else {
                Vec::new()
            };
            Decision::handled(state, Some(data), outputs, Vec::new())
        }
        (S::Open, I::CheckedOut(_)) if data.items == 0 => {
            Decision::handled(S::Cancelled, None, Vec::new(), Vec::new())
        }
        (S::Open, I::CheckedOut(_)) => Decision::handled(
            S::Paying,
            None,
            vec![OrderOutput::Charge(Charge { order_id: id, amount: data.total })],
            vec![TimerOp::Schedule {
                timer: OrderTimer::Expiry,
                at: ctx.now + Duration::from_secs(15 * 60),
            }],
        ),
        (S::Paying, I::Paid(_)) => Decision::handled(
            S::Done,
            None,
            vec![OrderOutput::Ship(Ship { order_id: id })],
            vec![TimerOp::Cancel { timer: OrderTimer::Expiry }],
        ),
        (S::Paying, I::Expiry) => Decision::handled(S::Cancelled, None, Vec::new(), Vec::new()),
        (S::Open, I::Paid(_) | I::Expiry)
        | (S::Paying, I::ItemAdded(_) | I::CheckedOut(_))
        | (S::Done | S::Cancelled, _) => Decision::ignored(state),
    }
}

/// One call of `decide`: a state, the instance's data and an input.
struct Case {
    state: OrderState,
    data: OrderData,
    input: OrderInput,
}

/// Every (state, input) pair the process meets, each guard both ways.
fn cases() -> Vec<Case> {
    let item = |price| OrderInput::from(ItemAdded { order_id: 1, price });
    let checkout = || OrderInput::from(CheckedOut { order_id: 1 });
    let paid = || OrderInput::from(Paid { order_id: 1 });
    let data = |items| OrderData { total: 4_200, items };
    vec![
        Case { state: OrderState::Open, data: data(0), input: item(20) },
        Case { state: OrderState::Open, data: data(1), input: item(2_000) },
        Case { state: OrderState::Open, data: data(0), input: checkout() },
        Case { state: OrderState::Open, data: data(3), input: checkout() },
        Case { state: OrderState::Open, data: data(3), input: paid() },
        Case { state: OrderState::Paying, data: data(3), input: paid() },
        Case { state: OrderState::Paying, data: data(3), input: OrderInput::Expiry },
        Case { state: OrderState::Paying, data: data(3), input: item(20) },
        Case { state: OrderState::Done, data: data(3), input: paid() },
    ]
}

const STREAM: usize = 4_096;

/// The cases in turn, over and over: every branch is predictable.
fn predictable(cases: &[Case]) -> Vec<usize> {
    (0..STREAM).map(|i| i % cases.len()).collect()
}

/// The cases in a seeded random order (xorshift64), the same on every run.
fn random(cases: &[Case]) -> Vec<usize> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..STREAM)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % cases.len() as u64) as usize
        })
        .collect()
}

type Decide = fn(OrderState, &OrderData, &OrderInput, &Context<'_, u64>) -> Decision<Order>;

/// Runs `decide` over the whole stream.
fn run(decide: Decide, cases: &[Case], stream: &[usize]) {
    let key = 1u64;
    let ctx = Context { key: &key, now: Timestamp(1_000), message_id: MessageId::default() };
    for &i in stream {
        let case = &cases[i];
        black_box(decide(black_box(case.state), &case.data, black_box(&case.input), &ctx));
    }
}

fn generated(
    state: OrderState,
    data: &OrderData,
    input: &OrderInput,
    ctx: &Context<'_, u64>,
) -> Decision<Order> {
    Order::decide(state, data, input, ctx)
}

/// Both functions decide every case alike, or the comparison means nothing.
fn assert_same_decisions(cases: &[Case]) {
    let key = 1u64;
    let ctx = Context { key: &key, now: Timestamp(1_000), message_id: MessageId::default() };
    for case in cases {
        let a = Order::decide(case.state, &case.data, &case.input, &ctx);
        let b = hand_decide(case.state, &case.data, &case.input, &ctx);
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "{:?} {:?}", case.state, case.input);
    }
}

fn main() {
    let cases = cases();
    assert_same_decisions(&cases);
    let streams = [("predictable", predictable(&cases)), ("random", random(&cases))];

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    for (name, stream) in &streams {
        let mut group = criterion.benchmark_group(format!("decide/{name}"));
        group.throughput(Throughput::Elements(STREAM as u64));
        group.bench_function("generated", |b| b.iter(|| run(generated, &cases, stream)));
        group.bench_function("hand-written", |b| b.iter(|| run(hand_decide, &cases, stream)));
        group.finish();
    }
    criterion.final_summary();

    // Criterion's `--test` mode (what `cargo test --benches` passes) checks
    // that the bench runs; it records nothing.
    if std::env::args().any(|a| a == "--test") {
        return;
    }
    let mut lines = String::new();
    for (name, stream) in &streams {
        let (generated_ns, hand_ns) = interleaved(&cases, stream);
        let ratio = generated_ns / hand_ns;
        println!(
            "decide/{name}: generated {generated_ns:.2} ns, hand-written {hand_ns:.2} ns, ratio {ratio:.3}"
        );
        lines.push_str(&format!(
            "{{\"name\":\"decide/{name}/generated\",\"unit\":\"ns/decision\",\"value\":{generated_ns:.3},\"baseline\":\"decide/{name}/hand-written\",\"baseline_value\":{hand_ns:.3},\"ratio\":{ratio:.4}}}\n"
        ));
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-results.jsonl");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(lines.as_bytes()));
    match written {
        Ok(()) => println!("appended to {path}"),
        Err(err) => eprintln!("cannot append to {path}: {err}"),
    }
}

/// Nanoseconds per decision of the generated and the hand-written `decide`:
/// the medians of rounds that alternate between the two.
fn interleaved(cases: &[Case], stream: &[usize]) -> (f64, f64) {
    const ROUNDS: usize = 41;
    const PASSES: usize = 50;
    let time = |decide: Decide| {
        let start = Instant::now();
        for _ in 0..PASSES {
            run(decide, cases, stream);
        }
        start.elapsed().as_nanos() as f64 / (PASSES * stream.len()) as f64
    };
    let (mut generated_ns, mut hand_ns) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Alternate which goes first, so that neither always runs on a warm cache.
        if round % 2 == 0 {
            generated_ns.push(time(generated));
            hand_ns.push(time(hand_decide));
        } else {
            hand_ns.push(time(hand_decide));
            generated_ns.push(time(generated));
        }
    }
    (median(generated_ns), median(hand_ns))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
