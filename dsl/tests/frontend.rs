//! Parser and checker tests: each feeds a source text through `compile` and
//! compares every rendered finding, spans included, with the expectation.

use switchyard_dsl::ast::{Expr, ExprKind, ProcessItem, StateItem, Statement};
use switchyard_dsl::{Handling, Severity, Source, compile, parse};

/// Compiles `text` and compares all its findings, rendered as plain text, with `expected`.
#[track_caller]
fn check(text: &str, expected: &str) {
    let (_, diagnostics) = compile(text);
    let rendered = Source::new("test.yard", text).render_all(&diagnostics);
    assert_eq!(rendered.trim_end(), expected.trim(), "\n--- rendered ---\n{rendered}");
}

const CAMPAIGN: &str = include_str!("../../examples/campaign/campaign.yard");

#[test]
fn the_campaign_saga_is_clean() {
    let (model, diagnostics) = compile(CAMPAIGN);
    // The publisher may never answer: the saga has no deadline, and says so.
    let codes: Vec<_> = diagnostics.iter().map(|d| (d.code, d.severity)).collect();
    assert_eq!(codes, [("waits-forever", Severity::Warning)], "{diagnostics:#?}");
    let model = model.unwrap();
    let process = &model.processes[0];
    assert_eq!(process.name.node, "CampaignPublishing");
    let inputs: Vec<_> = process.inputs.iter().map(|i| i.name.node.as_str()).collect();
    assert_eq!(inputs, ["CampaignActivated", "PublishingConfirmed", "PublishingRejected"]);
    let idle = &process.states[process.initial];
    assert_eq!(idle.name.node, "Idle");
    assert!(
        matches!(&idle.table[0], Handling::Handled(h) if h.len() == 1 && h[0].target == Some(1))
    );
    assert!(matches!(idle.table[1], Handling::Ignored(_)));
    let commands: Vec<_> = process.outputs.iter().map(|c| c.path.name().node.as_str()).collect();
    assert_eq!(
        commands,
        ["SubmitAdvertisement", "TrackPublishingConfirmation", "TrackPublishingRejection"]
    );
}

#[test]
fn every_unhandled_input_of_every_state_is_reported_at_once() {
    check(
        r#"process P {
    correlate by id: u64
    initial state A {
        on X { -> B }
    }
    state B {
        on Y { -> Done }
    }
    final state Done
}"#,
        r#"
error[unhandled-input]: state `A` does not handle `Y`
 --> test.yard:3:19
  |
3 |     initial state A {
  |                   ^ `Y` is neither handled nor ignored here
  |
  = help: add `on Y { ... }` to handle it, or `ignore Y` to drop it, in state `A`

error[unhandled-input]: state `B` does not handle `X`
 --> test.yard:6:11
  |
6 |     state B {
  |           ^ `X` is neither handled nor ignored here
  |
  = help: add `on X { ... }` to handle it, or `ignore X` to drop it, in state `B`
"#,
    );
}

#[test]
fn one_finding_lists_all_inputs_a_state_misses() {
    check(
        r#"process P {
    correlate by id: u64
    initial state A { on X { -> Done } ignore Y, Z }
    state B { }
    final state Done
}"#,
        r#"
error[unhandled-input]: state `B` does not handle `X`, `Y`, `Z`
 --> test.yard:4:11
  |
4 |     state B { }
  |           ^ `X`, `Y`, `Z` are neither handled nor ignored here
  |
  = help: add `on X { ... }` to handle it, or `ignore X, Y, Z` to drop it, in state `B`
"#,
    );
}

#[test]
fn unknown_target_state_suggests_a_near_name() {
    check(
        r#"process P {
    correlate by id: u64
    initial state Waiting { on X { -> Shiped } }
    final state Shipped
}"#,
        r#"
error[unknown-name]: no state named `Shiped`
 --> test.yard:3:39
  |
3 |     initial state Waiting { on X { -> Shiped } }
  |                                       ^^^^^^
  |
  = help: a state with a similar name exists: `Shipped`
"#,
    );
}

#[test]
fn initial_and_final_state_rules() {
    check(
        r#"process P {
    correlate by id: u64
    state A { on X { -> B } }
    final state B { ignore X }
}
process Q {
    correlate by id: u64
    initial state A { on X { -> B } }
    initial state B { on X { -> A } }
}"#,
        r#"
error[initial-state]: process `P` has no initial state
 --> test.yard:1:9
  |
1 | process P {
  |         ^
  |
  = help: mark the state where every instance starts with `initial state`

error[final-state-body]: final state `B` has a body
 --> test.yard:4:17
  |
4 |     final state B { ignore X }
  |                 ^ an instance that enters a final state is complete
  |
  = help: write `final state B` without braces, or make it a plain `state`

error[initial-state]: process `Q` has more than one initial state
 --> test.yard:9:19
  |
8 |     initial state A { on X { -> B } }
  |                   - the first initial state
9 |     initial state B { on X { -> A } }
  |                   ^
  |
  = help: make `B` a plain `state`
"#,
    );
}

#[test]
fn missing_correlation_and_misplaced_transition() {
    check(
        r#"process P {
    initial state A { on X { -> Done send C } }
    final state Done
}"#,
        r#"
error[correlation]: process `P` does not say how inputs are correlated
 --> test.yard:1:9
  |
1 | process P {
  |         ^
  |
  = help: add `correlate by FIELD: KeyType`, naming the field that carries the key and its type

error[transition-not-last]: a transition must be the last statement of its handler
 --> test.yard:2:30
  |
2 |     initial state A { on X { -> Done send C } }
  |                              ^^^^^^^
  |
  = help: move the `->` to the end of the handler, and keep only one
"#,
    );
}

#[test]
fn syntax_errors_say_what_was_expected_in_words() {
    check(
        "process P {\n    correlate by id: u64\n    initial state A { on X { => B } }\n}",
        r#"
error[syntax]: expected `publish`, `set`, `schedule`, `cancel`, `send`, `->` or `}`, found `=>`
 --> test.yard:3:30
  |
3 |     initial state A { on X { => B } }
  |                              ^^
  |
  = help: a transition is written `-> State`
"#,
    );
    check(
        "process P {\n    correlate by id: u64\n    initial stat A { }\n}",
        r#"
error[syntax]: expected `state`, found `stat`
 --> test.yard:3:13
  |
3 |     initial stat A { }
  |             ^^^^
  |
  = help: did you mean `state`?
"#,
    );
    check(
        "process P {\n    initial state A {\n        on X { -> A }\n",
        r#"
error[syntax]: expected `ignore`, `on` or `}`, found end of file
 --> test.yard:4:1
  |
4 | 
  | ^
  |
  = help: add the missing `}`
"#,
    );
}

#[test]
fn absurd_nesting_is_an_error_not_a_stack_overflow() {
    let deep = format!(
        "process P {{ correlate by id: u64 initial state A {{ on X when {}true{} {{ }} }} }}",
        "(".repeat(10_000),
        ")".repeat(10_000)
    );
    let (model, diagnostics) = compile(&deep);
    assert!(model.is_none());
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(diagnostics[0].message, "brackets nested more than 64 deep");
}

/// Writes an expression fully parenthesised, to show how it was grouped.
fn grouped(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Lit(lit) => format!("{lit:?}"),
        ExprKind::Name(name) => name.clone(),
        ExprKind::Path(segments) => {
            segments.iter().map(|s| s.node.as_str()).collect::<Vec<_>>().join("::")
        }
        ExprKind::Field(base, field) => format!("{}.{}", grouped(base), field.node),
        ExprKind::Call(callee, args) => format!("{}({})", grouped(callee), list(args)),
        ExprKind::MethodCall(receiver, method, args) => {
            format!("{}.{}({})", grouped(receiver), method.node, list(args))
        }
        ExprKind::Struct(path, fields) => format!(
            "{} {{ {} }}",
            path.name().node,
            fields
                .iter()
                .map(|f| format!("{}: {}", f.name.node, grouped(&f.value)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        ExprKind::Unary(op, operand) => format!("({op:?} {})", grouped(operand)),
        ExprKind::Binary(op, left, right) => {
            format!("({} {} {})", grouped(left), op.as_str(), grouped(right))
        }
        ExprKind::List(items) => format!("[{}]", list(items)),
        ExprKind::Paren(inner) => grouped(inner),
    }
}

fn list(items: &[Expr]) -> String {
    items.iter().map(grouped).collect::<Vec<_>>().join(", ")
}

fn guard_of(text: &str) -> String {
    let source = format!("process P {{ initial state A {{ on X when {text} {{ }} }} }}");
    let (file, diagnostics) = parse(&source);
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    let ProcessItem::State(state) = &file.processes[0].items[0] else { panic!("not a state") };
    let StateItem::Handler(handler) = &state.body.as_ref().unwrap()[0] else {
        panic!("not a handler")
    };
    grouped(handler.guard.as_ref().unwrap())
}

#[test]
fn operators_group_with_rust_precedence() {
    assert_eq!(guard_of("a || b && c == d + e * f"), "(a || (b && (c == (d + (e * f)))))");
    assert_eq!(guard_of("-a.b * !c - d / e % f"), "(((Neg a.b) * (Not c)) - ((d / e) % f))");
}

#[test]
fn postfix_paths_calls_and_literals() {
    assert_eq!(
        guard_of(
            "event.items.len() >= data.limit(1, \"x\") && Money::cents(event.amount) != Money { cents: 0 }"
        ),
        "((event.items.len() >= data.limit(Int(1), Str(\"x\"))) && (Money::cents(event.amount) != Money { cents: Int(0) }))"
    );
    assert_eq!(
        guard_of("[1, 2.5, true] == event.tuple.0"),
        "([Int(1), Float(\"2.5\"), Bool(true)] == event.tuple.0)"
    );
}

#[test]
fn send_fields_and_docs_are_kept() {
    let (file, _) = parse(
        "/// The process.\nprocess P {\n  /// A state.\n  initial state A {\n    /// A handler.\n    on X { send C { a: event.a, b: 1 } -> A }\n  }\n}",
    );
    let process = &file.processes[0];
    assert_eq!(process.docs, ["The process."]);
    let ProcessItem::State(state) = &process.items[0] else { panic!("not a state") };
    assert_eq!(state.docs, ["A state."]);
    let StateItem::Handler(handler) = &state.body.as_ref().unwrap()[0] else {
        panic!("not a handler")
    };
    assert_eq!(handler.docs, ["A handler."]);
    let Statement::Send { command, fields, .. } = &handler.body[0] else { panic!("not a send") };
    assert_eq!(command.name().node, "C");
    let fields = fields.as_ref().unwrap();
    assert_eq!(fields.iter().map(|f| f.name.node.as_str()).collect::<Vec<_>>(), ["a", "b"]);
}

/// A process whose handler's guard is `guard`, and whose statements are `body`.
fn with_guard(guard: &str, body: &str) -> String {
    format!(
        "process P {{\n    correlate by id: u64\n    data {{ a: u64 = 0 }}\n    initial state A {{\n        on X when {guard} {{ {body} -> Done }}\n        on X {{ -> Done }}\n    }}\n    final state Done\n}}\n"
    )
}

/// Only brackets of the language count towards the limit of 64: not those
/// in comments and strings, and not `<`, which compares as often as it opens
/// generic arguments.
#[test]
fn brackets_in_comments_strings_and_comparisons_do_not_nest() {
    let comparisons = vec!["data.a < 1"; 100].join(" && ");
    let opening = format!("// {}\n/* {} */", "(".repeat(100), "{".repeat(100));
    let string = format!("send C {{ text: \"{}\" }}", "[".repeat(100));
    for text in [
        with_guard(&comparisons, ""),
        with_guard("true", &format!("{opening}\n")),
        with_guard("true", &string),
        with_guard(&vec!["data.a < f(data.a)"; 100].join(" || "), ""),
    ] {
        let (model, diagnostics) = compile(&text);
        assert!(model.is_some(), "{text}\n{diagnostics:#?}");
    }
}

/// Some editors open a file with a byte order mark.
#[test]
fn a_byte_order_mark_opens_a_file() {
    let text =
        "\u{FEFF}process P {\n    correlate by id: u64\n    initial state A { on X { -> A } }\n}\n";
    let (model, diagnostics) = compile(text);
    assert!(model.is_some(), "{diagnostics:#?}");
    // Spans count the mark's three bytes, like any other text before them.
    assert_eq!(&text[model.unwrap().processes[0].name.span.range()], "P");
}
