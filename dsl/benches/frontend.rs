//! Parse and check speed on a generated file of about 10,000 lines and 200
//! states, side by side with a baseline in the same run: pest alone
//! recognising the same text (no tree, no checks), so the ratio says what the
//! syntax tree and the checker cost on top of the grammar.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

/// A process with `states` states in a chain, each handling or ignoring
/// every one of `events` events, with guards, data updates and timers.
pub fn generated(states: usize, events: usize) -> String {
    let mut text = String::from("/// A long generated process.\nprocess Long {\n    correlate by id: u64\n\n");
    text.push_str("    data {\n        count: u64 = 0\n        last: Option<u64>\n    }\n\n    timer Deadline\n\n");
    for s in 0..states {
        let kind = if s == 0 { "initial state" } else { "state" };
        text.push_str(&format!("    /// Step {s}.\n    {kind} S{s} {{\n"));
        let next = if s + 1 == states { "Done".to_owned() } else { format!("S{}", s + 1) };
        for e in 0..events {
            if e == s % events {
                text.push_str(&format!(
                    "        on E{e} when event.amount > data.count + {s} {{\n            set count = data.count + 1\n            set last = Some(event.amount)\n            send Step{e} {{ id: id, amount: event.amount * 2, note: \"s{s}\" }}\n            schedule Deadline after 15m\n            -> {next}\n        }}\n        on E{e} {{\n            send Retry {{ id: id }}\n        }}\n"
                ));
            }
        }
        let ignored: Vec<String> = (0..events).filter(|e| *e != s % events).map(|e| format!("E{e}")).collect();
        text.push_str(&format!("        ignore {}\n", ignored.join(", ")));
        if s > 0 {
            text.push_str(&format!("        on Deadline {{\n            send Expire {{ id: id }}\n            -> Done\n        }}\n"));
        }
        text.push_str("    }\n\n");
    }
    text.push_str("    final state Done\n}\n");
    text
}

fn bench(c: &mut Criterion) {
    let text = generated(200, 5);
    let lines = text.lines().count();
    let (model, diagnostics) = switchyard_dsl::compile(&text);
    assert!(model.is_some(), "the generated file must compile: {diagnostics:#?}");
    let mut group = c.benchmark_group(format!("frontend/{lines}-lines"));
    group.bench_function("parse+check", |b| b.iter(|| switchyard_dsl::compile(black_box(&text))));
    group.bench_function("parse", |b| b.iter(|| switchyard_dsl::parse(black_box(&text))));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
