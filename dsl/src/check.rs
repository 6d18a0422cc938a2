//! The checker: every rule is one function in [`CHECKS`], each reporting all of
//! its findings, none stopping early. When no rule found an error, the syntax
//! tree is resolved into a [`Model`].

use std::collections::HashMap;

use crate::ast::{self, ProcessItem, StateItem, StateKind, Statement};
use crate::diagnostic::Diagnostic;
use crate::model::*;
use crate::span::Span;

/// Checks a parsed file: the model if nothing is wrong, and every finding.
pub fn check(file: &ast::File) -> (Option<Model>, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    duplicate_processes(file, &mut diagnostics);
    for process in &file.processes {
        let names = Names::of(process);
        for check in CHECKS {
            check(process, &names, &mut diagnostics);
        }
    }
    if diagnostics.iter().any(Diagnostic::is_error) {
        return (None, diagnostics);
    }
    let processes = file.processes.iter().map(|p| resolve(p, &Names::of(p))).collect();
    (Some(Model { processes }), diagnostics)
}

type Check = fn(&ast::Process, &Names<'_>, &mut Vec<Diagnostic>);

/// Every rule about one process, in the order their findings are most useful.
const CHECKS: &[Check] = &[
    one_initial_state,
    final_states_have_no_body,
    duplicate_states,
    correlation_key_declared,
    unknown_states,
    transition_is_last,
    unhandled_inputs,
];

/// The names a process declares, gathered once for every check.
struct Names<'a> {
    states: Vec<&'a ast::State>,
    /// Every input (event type) in order of first mention, with that mention's span.
    inputs: Vec<(&'a str, Span)>,
    default_key: Option<(&'a ast::Ident, &'a ast::Type)>,
    event_keys: HashMap<&'a str, &'a ast::Ident>,
}

impl<'a> Names<'a> {
    fn of(process: &'a ast::Process) -> Names<'a> {
        let mut names = Names {
            states: Vec::new(),
            inputs: Vec::new(),
            default_key: None,
            event_keys: HashMap::new(),
        };
        let mention = |names: &mut Names<'a>, ident: &'a ast::Ident| {
            if !names.inputs.iter().any(|(name, _)| *name == ident.node) {
                names.inputs.push((&ident.node, ident.span));
            }
        };
        for item in &process.items {
            match item {
                ProcessItem::CorrelateDefault { field, ty, .. } => {
                    names.default_key.get_or_insert((field, ty));
                }
                ProcessItem::CorrelateEvent { event, field, .. } => {
                    names.event_keys.entry(&event.node).or_insert(field);
                    mention(&mut names, event);
                }
                ProcessItem::State(state) => {
                    names.states.push(state);
                    for item in state.body.iter().flatten() {
                        match item {
                            StateItem::Handler(handler) => mention(&mut names, &handler.input),
                            StateItem::Ignore(inputs) => {
                                for input in inputs {
                                    mention(&mut names, input);
                                }
                            }
                        }
                    }
                }
            }
        }
        names
    }

    fn state(&self, name: &str) -> Option<usize> {
        self.states.iter().position(|s| s.name.node == name)
    }
}

/// Two processes with one name would generate two types with one name.
fn duplicate_processes(file: &ast::File, out: &mut Vec<Diagnostic>) {
    for (i, process) in file.processes.iter().enumerate() {
        if let Some(first) = file.processes[..i].iter().find(|p| p.name.node == process.name.node) {
            out.push(
                Diagnostic::error(
                    "duplicate",
                    process.name.span,
                    format!("process `{}` is declared twice", process.name.node),
                )
                .with_label(first.name.span, "first declared here")
                .with_help("rename one of the processes"),
            );
        }
    }
}

/// An instance that does not exist yet is in the initial state, so there must
/// be exactly one.
fn one_initial_state(process: &ast::Process, names: &Names<'_>, out: &mut Vec<Diagnostic>) {
    let initials: Vec<_> = names.states.iter().filter(|s| s.kind == StateKind::Initial).collect();
    match initials.as_slice() {
        [] => out.push(
            Diagnostic::error(
                "initial-state",
                process.name.span,
                format!("process `{}` has no initial state", process.name.node),
            )
            .with_help("mark the state where every instance starts with `initial state`"),
        ),
        [_] => {}
        [first, rest @ ..] => {
            for state in rest {
                out.push(
                    Diagnostic::error(
                        "initial-state",
                        state.name.span,
                        format!("process `{}` has more than one initial state", process.name.node),
                    )
                    .with_label(first.name.span, "the first initial state")
                    .with_help(format!("make `{}` a plain `state`", state.name.node)),
                );
            }
        }
    }
}

/// Entering a final state completes the instance: nothing can be handled there.
fn final_states_have_no_body(_: &ast::Process, names: &Names<'_>, out: &mut Vec<Diagnostic>) {
    for state in names.states.iter().filter(|s| s.kind == StateKind::Final) {
        if state.body.is_some() {
            out.push(
                Diagnostic::error(
                    "final-state-body",
                    state.name.span,
                    format!("final state `{}` has a body", state.name.node),
                )
                .with_span_label("an instance that enters a final state is complete")
                .with_help(format!(
                    "write `final state {}` without braces, or make it a plain `state`",
                    state.name.node
                )),
            );
        }
    }
}

/// Two states with one name would make `-> Name` ambiguous.
fn duplicate_states(_: &ast::Process, names: &Names<'_>, out: &mut Vec<Diagnostic>) {
    for (i, state) in names.states.iter().enumerate() {
        if let Some(first) = names.states[..i].iter().find(|s| s.name.node == state.name.node) {
            out.push(
                Diagnostic::error(
                    "duplicate",
                    state.name.span,
                    format!("state `{}` is declared twice", state.name.node),
                )
                .with_label(first.name.span, "first declared here")
                .with_help("rename one of the states"),
            );
        }
    }
}

/// Every input must say where its correlation key is, and the key needs a type.
fn correlation_key_declared(process: &ast::Process, names: &Names<'_>, out: &mut Vec<Diagnostic>) {
    if names.default_key.is_none() {
        out.push(
            Diagnostic::error(
                "correlation",
                process.name.span,
                format!("process `{}` does not say how inputs are correlated", process.name.node),
            )
            .with_help("add `correlate by FIELD: KeyType` naming the field every input carries"),
        );
    }
}

/// `-> S` must name a declared state.
fn unknown_states(_: &ast::Process, names: &Names<'_>, out: &mut Vec<Diagnostic>) {
    for handler in handlers(names) {
        for statement in &handler.body {
            if let Statement::Transition { target, .. } = statement
                && names.state(&target.node).is_none()
            {
                let mut diagnostic = Diagnostic::error(
                    "unknown-name",
                    target.span,
                    format!("no state named `{}`", target.node),
                );
                if let Some(close) =
                    closest(&target.node, names.states.iter().map(|s| s.name.node.as_str()))
                {
                    diagnostic = diagnostic
                        .with_help(format!("a state with a similar name exists: `{close}`"));
                } else {
                    diagnostic = diagnostic.with_help(format!("declare `state {}`", target.node));
                }
                out.push(diagnostic);
            }
        }
    }
}

/// The transition ends a handler: statements after it would read as if they
/// ran in the next state, and two transitions contradict each other.
fn transition_is_last(_: &ast::Process, names: &Names<'_>, out: &mut Vec<Diagnostic>) {
    for handler in handlers(names) {
        let last = handler.body.len().saturating_sub(1);
        for (i, statement) in handler.body.iter().enumerate() {
            if let Statement::Transition { span, .. } = statement
                && i != last
            {
                out.push(
                    Diagnostic::error(
                        "transition-not-last",
                        *span,
                        "a transition must be the last statement of its handler",
                    )
                    .with_help("move the `->` to the end of the handler, and keep only one"),
                );
            }
        }
    }
}

/// The headline rule: a state that neither handles nor ignores one of the
/// process's inputs is the runtime fault of hand-written process managers
/// ("cannot handle this event at this stage"), so it is an error here. All
/// missing inputs of a state are reported in one finding.
fn unhandled_inputs(_: &ast::Process, names: &Names<'_>, out: &mut Vec<Diagnostic>) {
    for state in names.states.iter().filter(|s| s.kind != StateKind::Final) {
        let covered: Vec<&str> = state
            .body
            .iter()
            .flatten()
            .flat_map(|item| match item {
                StateItem::Handler(handler) => vec![handler.input.node.as_str()],
                StateItem::Ignore(inputs) => inputs.iter().map(|i| i.node.as_str()).collect(),
            })
            .collect();
        let missing: Vec<&str> = names
            .inputs
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| !covered.contains(name))
            .collect();
        if missing.is_empty() {
            continue;
        }
        let listed = missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ");
        let label = if missing.len() == 1 {
            format!("{listed} is neither handled nor ignored here")
        } else {
            format!("{listed} are neither handled nor ignored here")
        };
        out.push(
            Diagnostic::error(
                "unhandled-input",
                state.name.span,
                format!("state `{}` does not handle {listed}", state.name.node),
            )
            .with_span_label(label)
            .with_help(format!(
                "add `on {} {{ ... }}` to handle it, or `ignore {}` to drop it, in state `{}`",
                missing[0],
                missing.join(", "),
                state.name.node
            )),
        );
    }
}

fn handlers<'a>(names: &'a Names<'a>) -> impl Iterator<Item = &'a ast::Handler> + 'a {
    names.states.iter().flat_map(|s| s.body.iter().flatten()).filter_map(|item| match item {
        StateItem::Handler(handler) => Some(handler),
        StateItem::Ignore(_) => None,
    })
}

/// The candidate nearest to `name`, if it is near enough to be a typo.
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (crate::parse::edit_distance(&name.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Builds the model of a process that passed every check.
fn resolve(process: &ast::Process, names: &Names<'_>) -> ProcessModel {
    let (default_field, key_type) = names.default_key.expect("checked: correlation_key_declared");
    let inputs: Vec<InputModel> = names
        .inputs
        .iter()
        .map(|(name, span)| InputModel {
            name: ast::Ident::new((*name).to_owned(), *span),
            key_field: names.event_keys.get(name).copied().unwrap_or(default_field).clone(),
        })
        .collect();
    let input_index = |name: &str| inputs.iter().position(|i| i.name.node == name);

    let mut commands: Vec<ast::TypePath> = Vec::new();
    let mut states = Vec::new();
    for state in &names.states {
        let mut table: Vec<Handling> = vec![Handling::Completed; inputs.len()];
        for item in state.body.iter().flatten() {
            match item {
                StateItem::Ignore(ignored) => {
                    for input in ignored {
                        if let Some(i) = input_index(&input.node) {
                            table[i] = Handling::Ignored(input.span);
                        }
                    }
                }
                StateItem::Handler(handler) => {
                    let Some(i) = input_index(&handler.input.node) else {
                        continue;
                    };
                    let model = resolve_handler(handler, names, &mut commands);
                    match &mut table[i] {
                        Handling::Handled(list) => list.push(model),
                        slot => *slot = Handling::Handled(vec![model]),
                    }
                }
            }
        }
        states.push(StateModel {
            name: state.name.clone(),
            docs: state.docs.clone(),
            kind: state.kind,
            table,
        });
    }
    let initial = names
        .states
        .iter()
        .position(|s| s.kind == StateKind::Initial)
        .expect("checked: one_initial_state");
    ProcessModel {
        name: process.name.clone(),
        docs: process.docs.clone(),
        key_type: key_type.clone(),
        inputs,
        states,
        initial,
        commands,
    }
}

fn resolve_handler(
    handler: &ast::Handler,
    names: &Names<'_>,
    commands: &mut Vec<ast::TypePath>,
) -> HandlerModel {
    let mut actions = Vec::new();
    let mut target = None;
    for statement in &handler.body {
        match statement {
            Statement::Send { command, fields, span } => {
                let index =
                    commands.iter().position(|c| same_path(c, command)).unwrap_or_else(|| {
                        commands.push(command.clone());
                        commands.len() - 1
                    });
                actions.push(Action::Send { command: index, fields: fields.clone(), span: *span });
            }
            Statement::Transition { target: name, .. } => target = names.state(&name.node),
        }
    }
    HandlerModel {
        docs: handler.docs.clone(),
        guard: handler.guard.clone(),
        actions,
        target,
        span: handler.span,
    }
}

fn same_path(a: &ast::TypePath, b: &ast::TypePath) -> bool {
    a.segments.iter().map(|s| &s.node).eq(b.segments.iter().map(|s| &s.node))
}
