//! The formatter's promises, checked on every good corpus file and example,
//! on random processes, and pinned as snapshots of messy inputs: formatting
//! twice changes nothing, the formatted text parses to the same tree (spans
//! aside), and every comment survives exactly once and in order.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use switchyard_dsl::ast::File;
use switchyard_dsl::{Source, compile, format, parse};

/// The tree of a file as text with every span replaced by `_`, so that two
/// parses of differently laid out sources compare equal when they say the
/// same thing. Spans print as `start..end`; string literals are printed in
/// both trees alike, so a `1..2` inside one is replaced on both sides.
fn shape(file: &File) -> String {
    let text = format!("{:#?}", file.processes);
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = |from: usize| bytes[from..].iter().take_while(|b| b.is_ascii_digit()).count();
        let start = digits(i);
        if start > 0 && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            let dots = i + start;
            if text[dots..].starts_with("..") && digits(dots + 2) > 0 {
                out.push('_');
                i = dots + 2 + digits(dots + 2);
                continue;
            }
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

fn comment_texts(file: &File) -> Vec<String> {
    file.comments.iter().map(|c| c.text.clone()).collect()
}

/// Formats `text` and checks every promise of the formatter on it; returns
/// the formatted text.
#[track_caller]
fn formatted(name: &str, text: &str) -> String {
    let once = format(text).unwrap_or_else(|diagnostics| {
        panic!("{name} does not format:\n{}", Source::new(name, text).render_all(&diagnostics))
    });
    let twice = format(&once).unwrap_or_else(|diagnostics| {
        panic!(
            "{name} formatted does not format:\n{}",
            Source::new(name, &once).render_all(&diagnostics)
        )
    });
    assert_eq!(twice, once, "{name}: formatting the formatted text changed it\n{once}");

    let (before, errors) = parse(text);
    assert!(errors.is_empty());
    let (after, errors) = parse(&once);
    assert!(errors.is_empty(), "{name}: the formatted text does not parse\n{once}");
    assert_eq!(shape(&after), shape(&before), "{name}: the tree changed\n{once}");
    assert_eq!(comment_texts(&after), comment_texts(&before), "{name}: comments changed\n{once}");
    once
}

/// The comparison forgets layout and nothing else, so that it can fail.
#[test]
fn the_tree_comparison_sees_grouping_and_names_but_not_layout() {
    let shape_of = |text: &str| shape(&parse(text).0);
    let process =
        |guard: &str| format!("process P {{ state A {{ on X when {guard} {{ -> A }} }} }}");
    let spaced = "process  P {\n  state A {\n on X when a + b * c\n { -> A } } }";
    assert_eq!(shape_of(&process("a + b * c")), shape_of(spaced));
    assert_ne!(shape_of(&process("a + b * c")), shape_of(&process("(a + b) * c")));
    assert_ne!(shape_of(&process("a + b * c")), shape_of(&process("a + (b * c)")));
    assert_ne!(shape_of(&process("a + b * c")), shape_of(&process("a + b * d")));
}

fn yard_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yard"))
        .collect();
    files.sort();
    files
}

/// The good corpus as it stands when the test runs, and the examples.
fn good_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = yard_files(&root.join("tests/corpus/good"));
    for entry in std::fs::read_dir(root.join("../examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(yard_files(&path));
        }
    }
    files
}

#[test]
fn every_good_file_formats_to_a_fixed_point_with_the_same_tree_and_comments() {
    let files = good_files();
    assert!(files.len() >= 2, "the corpus and the examples hold no file: {files:?}");
    for path in files {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let once = formatted(&name, &text);
        // The checker sees the same process: same findings, same words.
        let words = |text: &str| {
            let (model, diagnostics) = compile(text);
            let findings: Vec<_> =
                diagnostics.into_iter().map(|d| (d.code, d.severity, d.message)).collect();
            (model.is_some(), findings)
        };
        assert_eq!(words(&once), words(&text), "{name}: the checker's findings changed");
    }
}

#[test]
fn a_file_that_does_not_parse_is_not_formatted() {
    let text = "process P {\n    initial state A {\n        on X { => B }\n    }\n}\n";
    let diagnostics = format(text).unwrap_err();
    assert_eq!(diagnostics.iter().map(|d| d.code).collect::<Vec<_>>(), ["syntax"]);
}

#[test]
fn an_empty_file_stays_empty_and_a_comment_only_file_keeps_its_comments() {
    assert_eq!(format("").unwrap(), "");
    assert_eq!(format("  \n\n").unwrap(), "");
    assert_eq!(format("  // one\n/* two */   // three\n").unwrap(), "// one\n/* two */ // three\n");
}

#[test]
fn a_byte_order_mark_is_kept() {
    let text = "\u{FEFF}process P {\ncorrelate by id: u64\n}\n";
    assert_eq!(format(text).unwrap(), "\u{FEFF}process P {\n    correlate by id: u64\n}\n");
}

const MESSY_INDENTATION: &str = r#"
  /// Coordinates an order.
process   Registration{
correlate by order_id:OrderId
  correlate SeatsReserved by reservation_id
 data{conference_id:ConferenceId,seats:Vec<SeatQuantity>
     reservation_attempts : u32=0,}
        timer Expiry timer   Reminder
 initial state NotStarted{on OrderPlaced{set conference_id=event.conference_id send MakeSeatReservation{conference_id:event.conference_id,reservation_id:id,seats:event.seats} schedule Expiry after 15m -> AwaitingReservation}
ignore SeatsReserved,PaymentCompleted,}
  any state { ignore OrderPlaced }
state AwaitingReservation { on SeatsReserved when event.reserved==data.seats{-> Completed} on SeatsReserved {set reservation_attempts=data.reservation_attempts+1 -> Completed}
on Expiry{send RejectOrder{order_id:id}->Expired} ignore PaymentCompleted
on Reminder {}
}
   final state Completed final state Expired
 }
process Second{correlate by id:u64 initial state A{on X{->Done}} final state Done}"#;

#[test]
fn messy_indentation() {
    insta::assert_snapshot!("messy_indentation", formatted("messy", MESSY_INDENTATION));
}

const COMMENTS_EVERYWHERE: &str = r#"// c01 a file header: the blank line after it stays.

// c02 before the docs
/// The process.
// c03 between the docs and the process
process P { // c04 after the brace
    correlate by id: u64 // c05 the key
    /* c06 before data */ data {
        // c07 before a field
        count: u32 = 0, // c08 trailing on a field
        /// A documented field.
        total: u64 = 1 + /* c09 inside an expression */ 2
    }
    timer T /* c10 after a timer */


    initial state A {
        on X when a // c11 inside a guard
            && b {
            send C { a: 1, /* c12 inside a send */ b: 2 }
            set count = data.count // c13 first
                + 1 /* c14 second, after a line comment */
            -> B // c15 the transition
        }
        ignore Y, // c16 inside an ignore list
            Z
        on Z { /* c17 in an empty body */ }
        // c18 before the closing brace
    }
    /* c19 a block
       over two lines */
    final state B
    final /* c20 inside a header */ state C
} // c21 after the process
// c22 after everything
"#;

#[test]
fn comments_everywhere() {
    insta::assert_snapshot!("comments_everywhere", formatted("comments", COMMENTS_EVERYWHERE));
}

/// No comment is lost or printed twice: each of the numbered comments above
/// stands exactly once in the output.
#[test]
fn every_comment_is_kept_exactly_once() {
    let (file, _) = parse(COMMENTS_EVERYWHERE);
    assert_eq!(file.comments.len(), 22);
    let once = formatted("comments", COMMENTS_EVERYWHERE);
    assert_eq!(parse(&once).0.comments.len(), 22);
    for comment in &file.comments {
        assert_eq!(once.matches(&comment.text).count(), 1, "`{}` in\n{once}", comment.text);
    }
    for n in 1..=22 {
        assert_eq!(once.matches(&format!("c{n:02} ")).count(), 1, "c{n:02} in\n{once}");
    }
}

const LONG_SENDS: &str = r#"process P {
    correlate by id: u64
    initial state A {
        on X {
            send Short { a: 1 }
            send Empty {}
            send Unit
            publish Published { order_id: id, at: now }
            send ExactlyOneHundredColumns { conference_id: data.conference_id, seats: event.seats1 }
            send OneColumnTooMany { conference_id: data.conference_id, seats: event.seats_and_more1 }
            send TooLong { conference_id: data.conference_id, reservation_id: id, seats: event.seats.clone() }
            send Nested { money: Money { cents: event.amount, currency: Currency::Eur }, list: [1, 2, 3] }
            send Trailing { a: 1, b: 2, }
            send
                Broken
                {
                    a: 1
                }
            send orders::Generic<T, (u8, u16)> { value: 1 }
            -> A
        }
    }
}"#;

#[test]
fn long_sends() {
    let once = formatted("sends", LONG_SENDS);
    let widths: Vec<usize> = once.lines().map(|l| l.chars().count()).collect();
    assert!(widths.contains(&100), "the send that fits exactly is not on one line:\n{once}");
    insta::assert_snapshot!("long_sends", once);
}

const NESTED_EXPRESSIONS: &str = r#"process P {
    correlate by id: u64
    data {
        a: i64 = -(1 + 2) * 3
        b: bool = !(x || y) && z
        c: f64 = 1.50
        d: u64 = 1_000_000
        e: String = "a \"quoted\" // not a comment /* nor this */"
        f: Vec<u8> = [1,2,3,]
        g: (u8, (u16,), ()) = (((1)))
        h: Duration = 0500ms
        i: i64 = a - (b - c) - d
        j: i64 = a - b - c * (d % e) / f
        k: bool = a == b == c
        l: u64 = (1).0 + 1 . 0
    }
    initial state A {
        on X when (event.a + 1) * 2 >= data.limit.max(3) && !event.flags.is_empty() || event.t.0 == (1 - 2) - 3 {
            set a = -x.abs() + (-x).abs()
            set b = f(a, b)(c)
            set c = Money::cents(event.amount).add(Money { cents: 1, currency: Currency::Eur })
            set d = ! ! -  - x
            schedule T at now + Duration::from_secs(60 * 60)
            -> A
        }
    }
}"#;

#[test]
fn nested_expressions() {
    insta::assert_snapshot!("nested_expressions", formatted("expressions", NESTED_EXPRESSIONS));
}

const ALL_STATEMENTS: &str = r#"
/// Every kind of item and statement.
process Everything {
    correlate by order_id: OrderId
    correlate PaymentCompleted by payment_id
    correlate SeatsReserved by reservation_id
    data { attempts: u32 = 0,
      /// Documented.
      seats: Vec<Seat>   deadline: Timestamp }
    data {}
    /// A documented timer.
    timer Expiry
    timer Reminder
    /// Shared.
    any state { ignore OrderPlaced }
    initial state Start {
        /// A documented handler.
        on OrderPlaced {
            send Reserve { order_id: id, seats: event.seats }
            publish OrderAccepted { order_id: id }
            set attempts = data.attempts + 1
            schedule Expiry after 15m
            schedule Reminder at event.placed_at + 7d
            cancel Reminder
            -> Waiting
        }
        ignore PaymentCompleted, SeatsReserved, Expiry, Reminder
    }
    state Waiting { on SeatsReserved { -> Done } on Expiry { -> Done } on Reminder {} ignore PaymentCompleted }
    state Empty {}
    final state Done
    final state Failed
    final state Odd {}
    state Last
}"#;

#[test]
fn all_statements() {
    insta::assert_snapshot!("all_statements", formatted("statements", ALL_STATEMENTS));
}

// Random processes: the generator writes token by token from the grammar, and
// puts a random separator (blanks, line breaks, block and line comments)
// between every two tokens, so that the formatter meets layouts and comment
// positions nobody would think of writing by hand.

type Tokens = Vec<String>;

fn one(token: &str) -> Tokens {
    vec![token.to_owned()]
}

fn name() -> impl Strategy<Value = String> + Clone {
    prop::sample::select(vec!["A", "B", "Order", "x", "seats", "Expiry", "id2"])
        .prop_map(str::to_owned)
}

fn seq(parts: impl IntoIterator<Item = Tokens>) -> Tokens {
    parts.into_iter().flatten().collect()
}

/// `items` separated by `,`, with a trailing comma when `trailing`.
fn comma_list(items: Vec<Tokens>, trailing: bool) -> Tokens {
    let count = items.len();
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        out.extend(item);
        if i + 1 < count || (trailing && count > 0) {
            out.push(",".to_owned());
        }
    }
    out
}

fn ty() -> impl Strategy<Value = Tokens> {
    let leaf = prop::sample::select(vec!["u32", "OrderId", "String"]).prop_map(one);
    leaf.prop_recursive(2, 8, 2, |inner| {
        prop_oneof![
            (name(), prop::collection::vec(inner.clone(), 1..3)).prop_map(|(path, args)| {
                seq([
                    vec![path, "::".into(), "Vec".into(), "<".into()],
                    comma_list(args, false),
                    one(">"),
                ])
            }),
            (prop::collection::vec(inner, 0..3), any::<bool>()).prop_map(|(items, trailing)| seq(
                [one("("), comma_list(items, trailing), one(")")]
            )),
        ]
    })
}

fn expr() -> BoxedStrategy<Tokens> {
    let leaf = prop_oneof![
        prop::sample::select(vec![
            "0",
            "42",
            "1_000",
            "2.50",
            "15m",
            "0500ms",
            "true",
            "false",
            "event",
            "data",
            "id",
            "now",
            "\"a // b\"",
            "\"q \\\" /* c */\"",
        ])
        .prop_map(one),
        Just(vec!["Money".to_owned(), "::".to_owned(), "cents".to_owned()]),
    ];
    leaf.prop_recursive(3, 24, 3, |inner| {
        let ops = prop::sample::select(vec![
            "||", "&&", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%",
        ]);
        prop_oneof![
            (prop::sample::select(vec!["!", "-"]), inner.clone())
                .prop_map(|(op, e)| seq([one(op), e])),
            (inner.clone(), ops, inner.clone()).prop_map(|(l, op, r)| seq([l, one(op), r])),
            (inner.clone(), prop::sample::select(vec!["seats", "0", "x"]))
                .prop_map(|(e, field)| seq([e, one("."), one(field)])),
            (inner.clone(), name(), prop::collection::vec(inner.clone(), 0..3)).prop_map(
                |(e, method, args)| seq([
                    e,
                    one("."),
                    vec![method],
                    one("("),
                    comma_list(args, false),
                    one(")")
                ])
            ),
            (inner.clone(), prop::collection::vec(inner.clone(), 0..3))
                .prop_map(|(e, args)| seq([e, one("("), comma_list(args, true), one(")")])),
            inner.clone().prop_map(|e| seq([one("("), e, one(")")])),
            (prop::collection::vec(inner.clone(), 0..3), any::<bool>()).prop_map(
                |(items, trailing)| seq([one("["), comma_list(items, trailing), one("]")])
            ),
            prop::collection::vec((name(), inner), 1..3).prop_map(|fields| {
                let fields = fields.into_iter().map(|(n, e)| seq([vec![n], one(":"), e])).collect();
                seq([one("S"), one("{"), comma_list(fields, false), one("}")])
            }),
        ]
    })
    .boxed()
}

fn docs() -> impl Strategy<Value = Tokens> {
    prop::collection::vec(
        prop::sample::select(vec!["///", "/// doc", "///  indented /// doc"]),
        0..2,
    )
    .prop_map(|docs| docs.into_iter().map(|d| format!("{d}\n")).collect())
}

fn fields() -> impl Strategy<Value = Option<Tokens>> {
    prop::option::of((prop::collection::vec((name(), expr()), 0..4), any::<bool>()).prop_map(
        |(fields, trailing)| {
            let fields = fields.into_iter().map(|(n, e)| seq([vec![n], one(":"), e])).collect();
            seq([one("{"), comma_list(fields, trailing), one("}")])
        },
    ))
}

fn statement() -> impl Strategy<Value = Tokens> {
    prop_oneof![
        (prop::sample::select(vec!["send", "publish"]), name(), fields())
            .prop_map(|(kw, path, fields)| seq([one(kw), vec![path], fields.unwrap_or_default()])),
        (name(), expr()).prop_map(|(field, e)| seq([one("set"), vec![field], one("="), e])),
        (name(), prop::sample::select(vec!["after", "at"]), expr())
            .prop_map(|(timer, kw, e)| seq([one("schedule"), vec![timer], one(kw), e])),
        name().prop_map(|timer| seq([one("cancel"), vec![timer]])),
        name().prop_map(|state| seq([one("->"), vec![state]])),
    ]
}

fn state_item() -> impl Strategy<Value = Tokens> {
    prop_oneof![
        (docs(), name(), prop::option::of(expr()), prop::collection::vec(statement(), 0..4))
            .prop_map(|(docs, input, guard, body)| {
                let guard = guard.map(|g| seq([one("when"), g])).unwrap_or_default();
                seq([docs, one("on"), vec![input], guard, one("{"), body.concat(), one("}")])
            }),
        (prop::collection::vec(name(), 1..4), any::<bool>()).prop_map(|(names, trailing)| {
            seq([one("ignore"), comma_list(names.into_iter().map(|n| vec![n]).collect(), trailing)])
        }),
    ]
}

fn body() -> impl Strategy<Value = Tokens> {
    prop::collection::vec(state_item(), 0..3)
        .prop_map(|items| seq([one("{"), items.concat(), one("}")]))
}

fn process_item() -> impl Strategy<Value = Tokens> {
    let data_field = (docs(), name(), ty(), prop::option::of(expr()), any::<bool>());
    let data = prop::collection::vec(data_field, 0..3).prop_map(|fields| {
        let mut tokens = seq([one("data"), one("{")]);
        for (i, (docs, field, ty, init, comma)) in fields.iter().enumerate() {
            // A `///` right after an expression would be read as a division
            // followed by a comment: the language needs a comma there.
            let next_has_docs = fields.get(i + 1).is_some_and(|next| !next.0.is_empty());
            let comma = *comma || (init.is_some() && next_has_docs);
            tokens.extend(seq([docs.clone(), vec![field.clone(), ":".into()], ty.clone()]));
            if let Some(init) = init {
                tokens.extend(seq([one("="), init.clone()]));
            }
            if comma {
                tokens.push(",".into());
            }
        }
        tokens.push("}".into());
        tokens
    });
    prop_oneof![
        (name(), ty()).prop_map(|(field, ty)| seq([
            one("correlate"),
            one("by"),
            vec![field],
            one(":"),
            ty
        ])),
        (name(), name()).prop_map(|(event, field)| seq([
            one("correlate"),
            vec![event],
            one("by"),
            vec![field]
        ])),
        data,
        (docs(), name()).prop_map(|(docs, timer)| seq([docs, one("timer"), vec![timer]])),
        (docs(), body()).prop_map(|(docs, body)| seq([docs, one("any"), one("state"), body])),
        (
            docs(),
            prop::sample::select(vec!["", "initial", "final"]),
            name(),
            prop::option::of(body())
        )
            .prop_map(|(docs, modifier, state, body)| {
                let modifier = if modifier.is_empty() { Vec::new() } else { one(modifier) };
                seq([docs, modifier, one("state"), vec![state], body.unwrap_or_default()])
            }),
    ]
}

fn process() -> impl Strategy<Value = Tokens> {
    (docs(), name(), prop::collection::vec(process_item(), 0..6)).prop_map(|(docs, name, items)| {
        seq([docs, one("process"), vec![name], one("{"), items.concat(), one("}")])
    })
}

/// What may stand between two tokens; every choice starts with a blank, so
/// that no two tokens run together.
const SEPARATORS: &[&str] = &[
    " ",
    " ",
    " ",
    " ",
    "\n",
    "\n        ",
    "\n\n",
    "\t",
    " /* c */ ",
    " // c\n",
    "\n// own line\n\n",
    " /* two\n   lines */\n",
];

fn layout(tokens: &[String], separators: &[usize]) -> String {
    let mut text = String::new();
    for (i, token) in tokens.iter().enumerate() {
        text.push_str(token);
        text.push_str(SEPARATORS[separators[i % separators.len()]]);
    }
    text
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // A failure prints its minimal input; no regression file is written.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_processes_format_to_a_fixed_point_with_the_same_tree_and_comments(
        processes in prop::collection::vec(process(), 0..3),
        separators in prop::collection::vec(0..SEPARATORS.len(), 1..40),
    ) {
        let text = layout(&processes.concat(), &separators);
        let (_, errors) = parse(&text);
        prop_assert!(errors.is_empty(), "the generator wrote text that does not parse:\n{}\n{}",
            text, Source::new("random", &text).render_all(&errors));
        formatted("random", &text);
    }
}

#[test]
fn a_long_ignore_list_wraps_at_the_width() {
    let names: Vec<String> = (0..30).map(|i| format!("SomeLongEvent{i}")).collect();
    let text = format!(
        "process P {{\n    correlate by id: u64\n    initial state A {{\n        on Start {{ -> A }}\n        ignore {}\n    }}\n}}\n",
        names.join(", ")
    );
    let formatted = switchyard_dsl::format(&text).unwrap();
    assert!(formatted.lines().all(|line| line.len() <= 100), "{formatted}");
    let ignore_lines: Vec<&str> = formatted
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("ignore"))
        .take_while(|l| !l.contains('}'))
        .collect();
    assert!(ignore_lines.len() > 1, "{formatted}");
    assert!(
        ignore_lines[1..].iter().all(|l| l.starts_with("            ")),
        "continuations are indented once more:\n{formatted}"
    );
    assert_eq!(switchyard_dsl::format(&formatted).unwrap(), formatted);
}
