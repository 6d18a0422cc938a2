//! Parse and check speed on a generated file of about 10,000 lines and 200
//! states, side by side with a baseline in the same run: the grammar alone
//! recognising the same text (no tree, no checks), so the ratio says what the
//! syntax tree and the checker cost on top of the grammar. The goal is parse
//! plus check in under 50 ms.
//!
//! Run: `cargo bench -p switchyard-dsl --bench frontend`. Besides criterion's
//! report, the means are appended as JSON lines to `target/bench-results.jsonl`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

/// A process with `states` states in a chain over `events` events; each
/// state handles `handled` of them (a guarded handler with data updates, a
/// send and a timer, then a fallback) and ignores the rest.
pub fn generated(states: usize, events: usize, handled: usize) -> String {
    let mut text =
        String::from("/// A long generated process.\nprocess Long {\n    correlate by id: u64\n\n");
    text.push_str("    data {\n        count: u64 = 0\n        last: Option<u64>\n    }\n\n    timer Deadline\n\n");
    for s in 0..states {
        let kind = if s == 0 { "initial state" } else { "state" };
        text.push_str(&format!("    /// Step {s}.\n    {kind} S{s} {{\n"));
        let next = if s + 1 == states { "Done".to_owned() } else { format!("S{}", s + 1) };
        let mine: Vec<usize> = (0..handled).map(|h| (s + h) % events).collect();
        for e in &mine {
            text.push_str(&format!(
                "        on E{e} when event.amount > data.count + {s} && !event.flags.is_empty() {{\n            set count = data.count + 1\n            set last = Some(event.amount)\n            send Step{e} {{\n                id: id,\n                amount: event.amount * 2,\n                note: \"s{s}\",\n            }}\n            schedule Deadline after 15m\n            -> {next}\n        }}\n        on E{e} {{\n            send Retry {{ id: id, attempt: data.count }}\n        }}\n"
            ));
        }
        let ignored: Vec<String> =
            (0..events).filter(|e| !mine.contains(e)).map(|e| format!("E{e}")).collect();
        text.push_str(&format!("        ignore {}\n", ignored.join(", ")));
        if s > 0 {
            text.push_str("        on Deadline {\n            send Expire { id: id }\n            -> Done\n        }\n");
        }
        text.push_str("    }\n\n");
    }
    text.push_str("    final state Done\n}\n");
    text
}

fn bench(c: &mut Criterion) {
    let text = generated(200, 12, 3);
    let lines = text.lines().count();
    let (model, diagnostics) = switchyard_dsl::compile(&text);
    assert!(model.is_some(), "the generated file must compile: {diagnostics:#?}");
    assert!(switchyard_dsl::recognise(&text));
    let group_name = format!("frontend-{lines}-lines");
    let mut group = c.benchmark_group(&group_name);
    group.bench_function("parse-and-check", |b| {
        b.iter(|| switchyard_dsl::compile(black_box(&text)))
    });
    group.bench_function("parse", |b| b.iter(|| switchyard_dsl::parse(black_box(&text))));
    group
        .bench_function("grammar-only", |b| b.iter(|| switchyard_dsl::recognise(black_box(&text))));
    group.finish();
    record(&group_name, "parse-and-check", "grammar-only");
    record(&group_name, "parse", "grammar-only");
}

/// Appends criterion's mean estimates of `name` and its baseline, and their
/// ratio, to `target/bench-results.jsonl`.
fn record(group: &str, name: &str, baseline: &str) {
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").to_owned());
    let mean = |bench: &str| -> Option<f64> {
        let path = format!("{target}/criterion/{group}/{bench}/new/estimates.json");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
        json["mean"]["point_estimate"].as_f64().map(|ns| ns / 1e6)
    };
    let (Some(value), Some(baseline_value)) = (mean(name), mean(baseline)) else { return };
    let line = serde_json::json!({
        "name": format!("{group}/{name}"),
        "unit": "ms",
        "value": value,
        "baseline": format!("{group}/{baseline}"),
        "baseline_value": baseline_value,
        "ratio": value / baseline_value,
    });
    use std::io::Write as _;
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(format!("{target}/bench-results.jsonl"))
    {
        let _ = writeln!(file, "{line}");
    }
    println!("{line}");
}

criterion_group!(benches, bench);
criterion_main!(benches);
