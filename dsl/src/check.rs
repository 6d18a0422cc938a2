//! The checker. Every rule is one function in [`CHECKS`], with a comment
//! saying the rule and why it exists; each reports all of its findings and
//! none stops early. The rules read a [`Ctx`] built once per process: the
//! declared names, the handler table of every state with `any state` applied,
//! and the timer and reachability analyses. When no rule found an error, the
//! same context is resolved into a [`ProcessModel`].

use std::collections::hash_map::{self, HashMap};
use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hash;

use crate::ast::{
    self, ExprKind, Ident, ProcessItem, ScheduleWhen, StateItem, StateKind, Statement,
};
use crate::diagnostic::Diagnostic;
use crate::model::*;
use crate::span::Span;

/// Checks a parsed file: the model if nothing is wrong, and every finding.
pub fn check(file: &ast::File) -> (Option<Model>, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    duplicate_processes(file, &mut diagnostics);
    let contexts: Vec<Ctx<'_>> = file.processes.iter().map(Ctx::new).collect();
    for ctx in &contexts {
        let mut found = Vec::new();
        for check in CHECKS {
            check(ctx, &mut found);
        }
        // Warnings are only worth giving once a process is sound: a misspelt
        // `->` would otherwise bring warnings about the states it cut off.
        if !found.iter().any(Diagnostic::is_error) {
            for check in WARNINGS {
                check(ctx, &mut found);
            }
        }
        diagnostics.extend(found);
    }
    diagnostics.sort_by_key(|d| (d.span.start, d.span.end));
    if diagnostics.iter().any(Diagnostic::is_error) {
        return (None, diagnostics);
    }
    let processes = contexts.iter().map(resolve).collect();
    (Some(Model { processes }), diagnostics)
}

type Check = fn(&Ctx<'_>, &mut Vec<Diagnostic>);

/// Every rule about one process.
const CHECKS: &[Check] = &[
    one_initial_state,
    final_states_have_no_body,
    duplicate_declarations,
    correlation,
    takes_inputs,
    unknown_names,
    misplaced_names,
    transition_is_last,
    handled_and_ignored,
    unreachable_handlers,
    guard_gaps,
    output_names,
    unhandled_inputs,
    timers_may_fire_unhandled,
];

/// The rules that only warn, run on processes without errors.
const WARNINGS: &[Check] = &[unreachable_states, cannot_complete, waits_forever, unused];

/// The instance names an expression may read.
const INSTANCE_NAMES: [&str; 4] = ["event", "data", "id", "now"];

/// What a process declares, and what the analyses found, gathered once for every rule.
struct Ctx<'a> {
    process: &'a ast::Process,
    states: Vec<&'a ast::State>,
    /// The first `any state` block, if any.
    any_state: Option<&'a [StateItem]>,
    data: Vec<&'a ast::DataField>,
    timers: Vec<&'a Ident>,
    default_key: Option<(&'a Ident, &'a ast::Type)>,
    event_keys: Vec<(&'a Ident, &'a Ident)>,
    /// Every input: events in order of first mention in `on` or `ignore`, then timers.
    inputs: Vec<Input<'a>>,
    /// Per state, per input: what the state does with it.
    tables: Vec<Vec<Entry<'a>>>,
    /// Per state: the timers that may be pending on entry, each with one
    /// `schedule` that can leave it pending.
    may_pending: Vec<BTreeMap<usize, Span>>,
    /// Per state: the timers pending on entry on every path.
    must_pending: Vec<BTreeSet<usize>>,
    reachable: Vec<bool>,
    /// Whether a final state can be reached from each state.
    can_complete: Vec<bool>,
}

struct Input<'a> {
    name: &'a str,
    span: Span,
    /// Index into `Ctx::timers` for timers.
    timer: Option<usize>,
}

/// What one state does with one input.
#[derive(Default)]
struct Entry<'a> {
    handlers: Vec<&'a ast::Handler>,
    ignored: Option<Span>,
    /// Whether the entry comes from `any state`.
    shared: bool,
}

impl Entry<'_> {
    fn covered(&self) -> bool {
        !self.handlers.is_empty() || self.ignored.is_some()
    }
}

impl<'a> Ctx<'a> {
    fn new(process: &'a ast::Process) -> Ctx<'a> {
        let mut ctx = Ctx {
            process,
            states: Vec::new(),
            any_state: None,
            data: Vec::new(),
            timers: Vec::new(),
            default_key: None,
            event_keys: Vec::new(),
            inputs: Vec::new(),
            tables: Vec::new(),
            may_pending: Vec::new(),
            must_pending: Vec::new(),
            reachable: Vec::new(),
            can_complete: Vec::new(),
        };
        for item in &process.items {
            match item {
                ProcessItem::CorrelateDefault { field, ty, .. } => {
                    ctx.default_key.get_or_insert((field, ty));
                }
                ProcessItem::CorrelateEvent { event, field, .. } => {
                    ctx.event_keys.push((event, field))
                }
                ProcessItem::Data { fields, .. } => ctx.data.extend(fields),
                ProcessItem::Timer { name, .. } => ctx.timers.push(name),
                ProcessItem::AnyState { body, .. } => {
                    ctx.any_state.get_or_insert(body);
                }
                ProcessItem::State(state) => ctx.states.push(state),
            }
        }
        let bodies = ctx
            .states
            .iter()
            .flat_map(|s| s.body.iter().flatten())
            .chain(ctx.any_state.into_iter().flatten());
        for item in bodies {
            for name in item_inputs(item) {
                let is_timer = ctx.timers.iter().any(|t| t.node == name.node);
                if !is_timer && !ctx.inputs.iter().any(|i| i.name == name.node) {
                    ctx.inputs.push(Input { name: &name.node, span: name.span, timer: None });
                }
            }
        }
        for (index, timer) in ctx.timers.iter().enumerate() {
            if !ctx.inputs.iter().any(|i| i.name == timer.node) {
                ctx.inputs.push(Input { name: &timer.node, span: timer.span, timer: Some(index) });
            }
        }
        ctx.tables = ctx.states.iter().map(|state| ctx.table(state)).collect();
        ctx.analyse_timers();
        ctx.can_complete = ctx.completion();
        ctx
    }

    fn state(&self, name: &str) -> Option<usize> {
        self.states.iter().position(|s| s.name.node == name)
    }

    fn timer(&self, name: &str) -> Option<usize> {
        self.timers.iter().position(|t| t.node == name)
    }

    fn input(&self, name: &str) -> Option<usize> {
        self.inputs.iter().position(|i| i.name == name)
    }

    fn field(&self, name: &str) -> Option<usize> {
        self.data.iter().position(|f| f.name.node == name)
    }

    /// The handler table of one state: its own handlers and ignores, and for
    /// inputs it says nothing about, those of `any state` (final states take none).
    fn table(&self, state: &'a ast::State) -> Vec<Entry<'a>> {
        let mut table: Vec<Entry<'a>> = self.inputs.iter().map(|_| Entry::default()).collect();
        self.fill(&mut table, state.body.iter().flatten(), false);
        if state.kind != StateKind::Final
            && let Some(shared) = self.any_state
        {
            let mut from_any: Vec<Entry<'a>> =
                self.inputs.iter().map(|_| Entry::default()).collect();
            self.fill(&mut from_any, shared.iter(), true);
            for (own, shared) in table.iter_mut().zip(from_any) {
                if !own.covered() {
                    *own = shared;
                }
            }
        }
        table
    }

    fn fill(
        &self,
        table: &mut [Entry<'a>],
        items: impl Iterator<Item = &'a StateItem>,
        shared: bool,
    ) {
        for item in items {
            match item {
                StateItem::Handler(handler) => {
                    if let Some(i) = self.input(&handler.input.node) {
                        table[i].handlers.push(handler);
                        table[i].shared = shared;
                    }
                }
                StateItem::Ignore { inputs, .. } => {
                    for input in inputs {
                        if let Some(i) = self.input(&input.node) {
                            table[i].ignored.get_or_insert(input.span);
                            table[i].shared = shared;
                        }
                    }
                }
            }
        }
    }

    /// The edges leaving `state`: one per handler, and one per ignored timer
    /// (which is consumed when it fires). Final states have none.
    fn edges(&self, state: usize) -> Vec<Edge> {
        let mut edges = Vec::new();
        if self.states[state].kind == StateKind::Final {
            return edges;
        }
        for (input, entry) in self.tables[state].iter().enumerate() {
            let consumed = self.inputs[input].timer;
            if entry.ignored.is_some() && consumed.is_some() {
                edges.push(Edge { target: state, consumed, effects: Vec::new() });
            }
            for handler in &entry.handlers {
                let mut edge = Edge { target: state, consumed, effects: Vec::new() };
                for statement in &handler.body {
                    match statement {
                        Statement::Schedule { timer, span, .. } => {
                            if let Some(t) = self.timer(&timer.node) {
                                edge.effects.push(Effect::Schedule(t, *span));
                            }
                        }
                        Statement::Cancel { timer, .. } => {
                            if let Some(t) = self.timer(&timer.node) {
                                edge.effects.push(Effect::Cancel(t));
                            }
                        }
                        Statement::Transition { target, .. } => {
                            edge.target = self.state(&target.node).unwrap_or(state);
                        }
                        _ => {}
                    }
                }
                edges.push(edge);
            }
        }
        edges
    }

    /// The timer data-flow analysis: which timers may be pending on entry to
    /// each state (a union over paths, with a `schedule` that leaves each one
    /// pending) and which must be (an intersection), starting from an initial
    /// state with none. A timer's handler runs only where the timer may be
    /// pending; reachability falls out of the same walk.
    fn analyse_timers(&mut self) {
        let count = self.states.len();
        self.may_pending = vec![BTreeMap::new(); count];
        self.must_pending = vec![BTreeSet::new(); count];
        self.reachable = vec![false; count];
        let Some(initial) = self.states.iter().position(|s| s.kind == StateKind::Initial) else {
            return;
        };
        let edges: Vec<Vec<Edge>> = (0..count).map(|s| self.edges(s)).collect();
        let live = Edge::is_live;

        self.reachable[initial] = true;
        let mut work = vec![initial];
        while let Some(state) = work.pop() {
            let pending = self.may_pending[state].clone();
            for edge in edges[state].iter().filter(|e| live(e, &pending)) {
                let mut out = pending.clone();
                edge.apply(
                    &mut out,
                    |set, t| set.remove(&t).is_some(),
                    |set, t, span| {
                        set.insert(t, span);
                    },
                );
                let entry = &mut self.may_pending[edge.target];
                let before = entry.len();
                for (timer, span) in out {
                    entry.entry(timer).or_insert(span);
                }
                if entry.len() != before || !self.reachable[edge.target] {
                    self.reachable[edge.target] = true;
                    work.push(edge.target);
                }
            }
        }

        // The greatest fixpoint: start from every timer everywhere but the
        // initial state, and intersect over the live edges in until stable.
        // States are visited in the order the walk above reached them, and
        // each update is used at once, so a chain settles in two passes.
        let order: Vec<usize> = {
            let mut order = vec![initial];
            let mut seen = vec![false; count];
            seen[initial] = true;
            let mut next = 0;
            while next < order.len() {
                let state = order[next];
                next += 1;
                for edge in edges[state].iter().filter(|e| live(e, &self.may_pending[state])) {
                    if !seen[edge.target] {
                        seen[edge.target] = true;
                        order.push(edge.target);
                    }
                }
            }
            order
        };
        let mut incoming: Vec<Vec<(usize, usize)>> = vec![Vec::new(); count];
        for &state in &order {
            for (index, edge) in edges[state].iter().enumerate() {
                if live(edge, &self.may_pending[state]) {
                    incoming[edge.target].push((state, index));
                }
            }
        }
        let all: BTreeSet<usize> = (0..self.timers.len()).collect();
        self.must_pending =
            (0..count).map(|s| if s == initial { BTreeSet::new() } else { all.clone() }).collect();
        let mut changed = true;
        while changed {
            changed = false;
            for &state in &order {
                // A new instance enters the initial state with no timer.
                let mut must: Option<BTreeSet<usize>> = (state == initial).then(BTreeSet::new);
                for &(from, index) in &incoming[state] {
                    let mut out = self.must_pending[from].clone();
                    edges[from][index].apply(
                        &mut out,
                        |set, t| set.remove(&t),
                        |set, t, _| {
                            set.insert(t);
                        },
                    );
                    must = Some(match must {
                        Some(acc) => acc.intersection(&out).copied().collect(),
                        None => out,
                    });
                }
                let must = must.unwrap_or_default();
                if must != self.must_pending[state] {
                    self.must_pending[state] = must;
                    changed = true;
                }
            }
        }
    }

    /// Whether some final state is reachable from each state: a walk
    /// backwards from the final states, over the same live edges as
    /// reachability, so that the handler of a timer that is never pending in
    /// a state is no way out of it.
    fn completion(&self) -> Vec<bool> {
        let count = self.states.len();
        let mut predecessors: Vec<Vec<usize>> = vec![Vec::new(); count];
        for state in 0..count {
            for edge in self.edges(state) {
                if edge.is_live(&self.may_pending[state]) {
                    predecessors[edge.target].push(state);
                }
            }
        }
        let mut done: Vec<bool> = self.states.iter().map(|s| s.kind == StateKind::Final).collect();
        let mut work: Vec<usize> = (0..count).filter(|s| done[*s]).collect();
        while let Some(state) = work.pop() {
            for &from in &predecessors[state] {
                if !done[from] {
                    done[from] = true;
                    work.push(from);
                }
            }
        }
        done
    }

    /// Every handler of the process, with the `any state` ones, and whether the
    /// input it handles is a timer.
    fn handlers(&self) -> impl Iterator<Item = &'a ast::Handler> + '_ {
        self.groups().flat_map(|(_, items)| items.iter()).filter_map(|item| match item {
            StateItem::Handler(handler) => Some(handler),
            StateItem::Ignore { .. } => None,
        })
    }

    /// The groups of state items as written: each state's body, and `any state`.
    fn groups(&self) -> impl Iterator<Item = (Option<&'a ast::State>, &'a [StateItem])> + '_ {
        self.states
            .iter()
            .filter_map(|s| s.body.as_deref().map(|body| (Some(*s), body)))
            .chain(self.any_state.map(|body| (None, body)))
    }

    /// Every expression of the process with the handler it is in, if any.
    fn expressions(&self) -> Vec<(Option<&'a ast::Handler>, &'a ast::Expr)> {
        let mut found: Vec<(Option<&'a ast::Handler>, &'a ast::Expr)> = Vec::new();
        for field in &self.data {
            if let Some(init) = &field.init {
                found.push((None, init));
            }
        }
        for handler in self.handlers() {
            if let Some(guard) = &handler.guard {
                found.push((Some(handler), guard));
            }
            for statement in &handler.body {
                match statement {
                    Statement::Send { fields: Some(fields), .. }
                    | Statement::Publish { event: _, fields: Some(fields), .. } => {
                        found.extend(fields.iter().map(|f| (Some(handler), &f.value)));
                    }
                    Statement::Set { value, .. } => found.push((Some(handler), value)),
                    Statement::Schedule {
                        when: ScheduleWhen::After(e) | ScheduleWhen::At(e),
                        ..
                    } => found.push((Some(handler), e)),
                    _ => {}
                }
            }
        }
        found
    }

    fn is_timer_input(&self, name: &str) -> bool {
        self.timer(name).is_some()
    }
}

/// A way out of a state: where it leads, the timer it consumes (when the
/// input is a timer), and its timer statements in order.
struct Edge {
    target: usize,
    consumed: Option<usize>,
    effects: Vec<Effect>,
}

enum Effect {
    Schedule(usize, Span),
    Cancel(usize),
}

impl Edge {
    /// Whether the edge can be taken in a state where `pending` may be
    /// pending: a timer's handler runs only when the timer may be pending.
    fn is_live(&self, pending: &BTreeMap<usize, Span>) -> bool {
        self.consumed.is_none_or(|t| pending.contains_key(&t))
    }

    /// Applies the edge to a set of pending timers, whatever its representation.
    fn apply<S, R>(
        &self,
        set: &mut S,
        mut remove: impl FnMut(&mut S, usize) -> R,
        mut insert: impl FnMut(&mut S, usize, Span),
    ) {
        if let Some(timer) = self.consumed {
            remove(set, timer);
        }
        for effect in &self.effects {
            match effect {
                Effect::Schedule(timer, span) => insert(set, *timer, *span),
                Effect::Cancel(timer) => {
                    remove(set, *timer);
                }
            }
        }
    }
}

/// The inputs a state item names.
fn item_inputs(item: &StateItem) -> Vec<&Ident> {
    match item {
        StateItem::Handler(handler) => vec![&handler.input],
        StateItem::Ignore { inputs, .. } => inputs.iter().collect(),
    }
}

fn ticks(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// For each key that an earlier key equals, its index and the earlier one's,
/// in order. One pass with a map: a file of many processes, or a process of
/// many states, is checked in time linear in their number.
fn duplicates<K: Hash + Eq>(keys: impl IntoIterator<Item = K>) -> Vec<(usize, usize)> {
    let mut first = HashMap::new();
    let mut found = Vec::new();
    for (index, key) in keys.into_iter().enumerate() {
        match first.entry(key) {
            hash_map::Entry::Occupied(earlier) => found.push((index, *earlier.get())),
            hash_map::Entry::Vacant(entry) => {
                entry.insert(index);
            }
        }
    }
    found
}

/// Two processes with one name would generate two types with one name.
fn duplicate_processes(file: &ast::File, out: &mut Vec<Diagnostic>) {
    let names = file.processes.iter().map(|p| p.name.node.as_str());
    for (again, first) in duplicates(names) {
        let (process, first) = (&file.processes[again], &file.processes[first]);
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

/// An instance that does not exist yet is in the initial state, so there must
/// be exactly one.
fn one_initial_state(ctx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    let process = ctx.process;
    let initials: Vec<_> = ctx.states.iter().filter(|s| s.kind == StateKind::Initial).collect();
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
fn final_states_have_no_body(ctx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    for state in ctx.states.iter().filter(|s| s.kind == StateKind::Final) {
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

/// Two declarations with one name make every use of the name ambiguous; two
/// `any state` blocks, data blocks or key declarations contradict each other.
fn duplicate_declarations(ctx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    let mut report = |what: &str, first: Span, again: Span, name: &str| {
        out.push(
            Diagnostic::error("duplicate", again, format!("{what} `{name}` is declared twice"))
                .with_label(first, "first declared here")
                .with_help(format!("remove or rename one of the two {what}s")),
        );
    };
    let mut names: Vec<(&str, &str, Span)> = Vec::new();
    for state in &ctx.states {
        names.push(("state", &state.name.node, state.name.span));
    }
    for field in &ctx.data {
        names.push(("data field", &field.name.node, field.name.span));
    }
    for timer in &ctx.timers {
        names.push(("timer", &timer.node, timer.span));
    }
    for (event, _) in &ctx.event_keys {
        names.push(("correlation rule for", &event.node, event.span));
    }
    for (again, first) in duplicates(names.iter().map(|(what, name, _)| (*what, *name))) {
        let (what, name, span) = names[again];
        report(what, names[first].2, span, name);
    }

    let mut blocks: Vec<(&str, Span)> = Vec::new();
    for item in &ctx.process.items {
        match item {
            ProcessItem::AnyState { span, .. } => blocks.push(("any state", *span)),
            ProcessItem::Data { span, .. } => blocks.push(("data", *span)),
            ProcessItem::CorrelateDefault { span, .. } => blocks.push(("correlate by", *span)),
            _ => {}
        }
    }
    for (i, (what, span)) in blocks.iter().enumerate() {
        if let Some((_, first)) = blocks[..i].iter().find(|(w, _)| w == what) {
            out.push(
                Diagnostic::error(
                    "duplicate",
                    *span,
                    format!("a second `{what}` in process `{}`", ctx.process.name.node),
                )
                .with_label(*first, "the first one")
                .with_help(format!("merge the two `{what}` declarations into one")),
            );
        }
    }

    // Ignoring an input twice in one group says nothing new and hides typos.
    for (_, items) in ctx.groups() {
        let ignored: Vec<&Ident> = items
            .iter()
            .filter_map(|item| match item {
                StateItem::Ignore { inputs, .. } => Some(inputs),
                StateItem::Handler(_) => None,
            })
            .flatten()
            .collect();
        for (again, first) in duplicates(ignored.iter().map(|input| input.node.as_str())) {
            let (input, first) = (ignored[again], ignored[first]);
            out.push(
                Diagnostic::error(
                    "duplicate",
                    input.span,
                    format!("`{}` is ignored twice", input.node),
                )
                .with_label(first.span, "first ignored here")
                .with_help(format!("remove the second `{}`", input.node)),
            );
        }
    }
}

/// Every event input needs a field carrying the key, and the key needs a
/// type; timers carry the key of the instance that scheduled them.
fn correlation(ctx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    if ctx.default_key.is_none() {
        let mut diagnostic = Diagnostic::error(
            "correlation",
            ctx.process.name.span,
            format!("process `{}` does not say how inputs are correlated", ctx.process.name.node),
        )
        .with_help(
            "add `correlate by FIELD: KeyType`, naming the field that carries the key and its type",
        );
        if let Some((event, _)) = ctx.event_keys.first() {
            diagnostic =
                diagnostic.with_label(event.span, "this rule names a field but not the key's type");
        }
        out.push(diagnostic);
    }
    for (event, _) in &ctx.event_keys {
        if ctx.is_timer_input(&event.node) {
            out.push(
                Diagnostic::error(
                    "correlation",
                    event.span,
                    format!("`{}` is a timer, not an event", event.node),
                )
                .with_span_label("timers carry the key of the instance that scheduled them")
                .with_help("remove this `correlate` rule"),
            );
        }
    }
}

/// A process that takes no input can never start.
fn takes_inputs(ctx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    if !ctx.inputs.iter().any(|i| i.timer.is_none()) {
        out.push(
            Diagnostic::error(
                "no-inputs",
                ctx.process.name.span,
                format!(
                    "process `{}` takes no event, so no instance can ever start",
                    ctx.process.name.node
                ),
            )
            .with_help(
                "handle the event that starts the process in the initial state: `on Event { ... }`",
            ),
        );
    }
}

/// Names the language owns must be declared: states after `->`, data fields
/// after `set` and `data.`, timers after `schedule` and `cancel`.
fn unknown_names(ctx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    let unknown = |what: &str, name: &Ident, candidates: Vec<&str>, declare: String| {
        let diagnostic = Diagnostic::error(
            "unknown-name",
            name.span,
            format!("no {what} named `{}`", name.node),
        );
        match closest(&name.node, candidates.into_iter()) {
            Some(close) => {
                diagnostic.with_help(format!("a {what} with a similar name exists: `{close}`"))
            }
            None => diagnostic.with_help(declare),
        }
    };
    let states = || ctx.states.iter().map(|s| s.name.node.as_str()).collect::<Vec<_>>();
    let fields = || ctx.data.iter().map(|f| f.name.node.as_str()).collect::<Vec<_>>();
    let timers = || ctx.timers.iter().map(|t| t.node.as_str()).collect::<Vec<_>>();
    for handler in ctx.handlers() {
        for statement in &handler.body {
            match statement {
                Statement::Transition { target, .. } if ctx.state(&target.node).is_none() => {
                    out.push(unknown(
                        "state",
                        target,
                        states(),
                        format!("declare `state {}`", target.node),
                    ));
                }
                Statement::Set { field, .. } if ctx.field(&field.node).is_none() => {
                    let declare = format!("declare it: `data {{ {}: Type }}`", field.node);
                    out.push(unknown("data field", field, fields(), declare));
                }
                Statement::Schedule { timer, .. } | Statement::Cancel { timer, .. }
                    if ctx.timer(&timer.node).is_none() =>
                {
                    out.push(unknown(
                        "timer",
                        timer,
                        timers(),
                        format!("declare `timer {}`", timer.node),
                    ));
                }
                _ => {}
            }
        }
    }
    for (_, expr) in ctx.expressions() {
        expr.walk(&mut |e| {
            if let Some(field) = e.data_field()
                && ctx.field(&field.node).is_none()
            {
                let declare = format!("declare it: `data {{ {}: Type }}`", field.node);
                out.push(unknown("data field", field, fields(), declare));
            }
        });
    }
}

/// A timer carries no event, so `event` means nothing in its handler; and a
/// data initialiser runs before any instance exists, so it cannot read one.
fn misplaced_names(ctx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    for (handler, expr) in ctx.expressions() {
        expr.walk(&mut |e| {
            let ExprKind::Name(name) = &e.kind else { return };
            match handler {
                Some(handler) if name == "event" && ctx.is_timer_input(&handler.input.node) => out.push(
                    Diagnostic::error(
                        "misplaced-event",
                        e.span,
                        format!("`event` in a handler of timer `{}`", handler.input.node),
                    )
                    .with_label(handler.input.span, "a timer carries no event")
                    .with_help("read what the timer needs from `data`, saved there when it was scheduled"),
                ),
                None if INSTANCE_NAMES.contains(&name.as_str()) => out.push(
                    Diagnostic::error(
                        "misplaced-name",
                        e.span,
                        format!("`{name}` in a data field's initial value"),
                    )
                    .with_span_label("initial values are computed before any instance exists")
                    .with_help("start the field with a constant and `set` it in the handler that creates the instance"),
                ),
                _ => {}
            }
        });
    }
}

/// The transition ends a handler: statements after it would read as if they
/// ran in the next state, and two transitions contradict each other.
fn transition_is_last(ctx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    for handler in ctx.handlers() {
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

/// Handling and ignoring one input in one place contradict each other.
fn handled_and_ignored(ctx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    for (state, items) in ctx.groups() {
        let where_ = state.map_or("`any state`".to_owned(), |s| format!("state `{}`", s.name.node));
        for item in items {
            let StateItem::Ignore { inputs, .. } = item else { continue };
            for input in inputs {
                let handler = items.iter().find_map(|i| match i {
                    StateItem::Handler(h) if h.input.node == input.node => Some(h),
                    _ => None,
                });
                if let Some(handler) = handler {
                    out.push(
                        Diagnostic::error(
                            "handled-and-ignored",
                            input.span,
                            format!("`{}` is both handled and ignored in {where_}", input.node),
                        )
                        .with_label(handler.input.span, "handled here")
                        .with_help(format!(
                            "remove `{}` from the `ignore` list, or remove its handler",
                            input.node
                        )),
                    );
                }
            }
        }
    }
}

/// Handlers of one input are tried in order and the first unguarded one
/// always runs, so any handler after it is dead code.
fn unreachable_handlers(ctx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    for (_, items) in ctx.groups() {
        let handlers: Vec<&ast::Handler> = items
            .iter()
            .filter_map(|i| match i {
                StateItem::Handler(h) => Some(h),
                StateItem::Ignore { .. } => None,
            })
            .collect();
        for (i, handler) in handlers.iter().enumerate() {
            let earlier = handlers[..i]
                .iter()
                .find(|h| h.input.node == handler.input.node && h.guard.is_none());
            if let Some(earlier) = earlier {
                out.push(
                    Diagnostic::error(
                        "unreachable-handler",
                        handler.input.span,
                        format!("this handler of `{}` can never run", handler.input.node),
                    )
                    .with_label(
                        earlier.input.span,
                        "this handler has no `when` guard and always runs first",
                    )
                    .with_help(
                        "give the earlier handler a `when` guard, or merge the two handlers",
                    ),
                );
            }
        }
    }
}

/// When every handler of an input has a guard and none holds, the input
/// would fall through with nothing decided: a fallback is required.
fn guard_gaps(ctx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    for (_, items) in ctx.groups() {
        let mut inputs: Vec<&str> = Vec::new();
        for item in items {
            if let StateItem::Handler(h) = item
                && !inputs.contains(&h.input.node.as_str())
            {
                inputs.push(&h.input.node);
            }
        }
        for input in inputs {
            let handlers: Vec<&ast::Handler> = items
                .iter()
                .filter_map(|i| match i {
                    StateItem::Handler(h) if h.input.node == input => Some(h),
                    _ => None,
                })
                .collect();
            if handlers.iter().all(|h| h.guard.is_some()) {
                let last = handlers.last().expect("at least one handler");
                out.push(
                    Diagnostic::error(
                        "guard-gap",
                        last.input.span,
                        format!("every handler of `{input}` here has a `when` guard"),
                    )
                    .with_span_label("when no guard holds, nothing handles the input")
                    .with_help(format!(
                        "add an unguarded `on {input} {{ ... }}` after the guarded ones"
                    )),
                );
            }
        }
    }
}

/// Each message type becomes a variant of the process's output enum, named
/// after the type: two types with one name would clash there.
fn output_names(ctx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    let mut seen: Vec<&ast::TypePath> = Vec::new();
    for handler in ctx.handlers() {
        for statement in &handler.body {
            let (Statement::Send { command: path, .. } | Statement::Publish { event: path, .. }) =
                statement
            else {
                continue;
            };
            match seen.iter().find(|p| p.name().node == path.name().node) {
                Some(first) if !same_path(first, path) => out.push(
                    Diagnostic::error(
                        "duplicate",
                        path.span,
                        format!("two different message types are named `{}`", path.name().node),
                    )
                    .with_label(first.span, "the other one")
                    .with_help("refer to one type by one path, or rename one of the types"),
                ),
                Some(_) => {}
                None => seen.push(path),
            }
        }
    }
}

/// The headline rule: a state that neither handles nor ignores one of the
/// process's events is the runtime fault of hand-written process managers
/// ("cannot handle this event at this stage"), so it is an error here. All
/// events a state misses are reported in one finding.
fn unhandled_inputs(ctx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    for (index, state) in ctx.states.iter().enumerate() {
        if state.kind == StateKind::Final {
            continue;
        }
        let missing: Vec<&str> = ctx
            .inputs
            .iter()
            .zip(&ctx.tables[index])
            .filter(|(input, entry)| input.timer.is_none() && !entry.covered())
            .map(|(input, _)| input.name)
            .collect();
        if missing.is_empty() {
            continue;
        }
        let listed = ticks(&missing);
        let verb = if missing.len() == 1 { "is" } else { "are" };
        out.push(
            Diagnostic::error(
                "unhandled-input",
                state.name.span,
                format!("state `{}` does not handle {listed}", state.name.node),
            )
            .with_span_label(format!("{listed} {verb} neither handled nor ignored here"))
            .with_help(format!(
                "add `on {} {{ ... }}` to handle it, or `ignore {}` to drop it, in state `{}`",
                missing[0],
                missing.join(", "),
                state.name.node
            )),
        );
    }
}

/// A timer that may still be pending when an instance enters a state fires
/// there; if the state does not handle it, that is the same fault as an
/// unhandled event, found by following every path that schedules it.
fn timers_may_fire_unhandled(ctx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    for (index, state) in ctx.states.iter().enumerate() {
        if state.kind == StateKind::Final || !ctx.reachable[index] {
            continue;
        }
        for (timer, scheduled) in &ctx.may_pending[index] {
            let name = &ctx.timers[*timer].node;
            let Some(input) = ctx.input(name) else { continue };
            if ctx.tables[index][input].covered() {
                continue;
            }
            out.push(
                Diagnostic::error(
                    "timer-unhandled",
                    state.name.span,
                    format!("timer `{name}` may fire in state `{}`, which does not handle it", state.name.node),
                )
                .with_label(*scheduled, format!("`{name}` is scheduled here and still pending on some path into `{}`", state.name.node))
                .with_help(format!(
                    "add `on {name} {{ ... }}` or `ignore {name}` to state `{}`, or `cancel {name}` on every way into it",
                    state.name.node
                )),
            );
        }
    }
}

/// A state no path leads to is dead code, often a transition's typo.
fn unreachable_states(ctx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    if !ctx.states.iter().any(|s| s.kind == StateKind::Initial) {
        return;
    }
    for (index, state) in ctx.states.iter().enumerate() {
        if !ctx.reachable[index] {
            out.push(
                Diagnostic::warning(
                    "unreachable-state",
                    state.name.span,
                    format!("state `{}` is never entered", state.name.node),
                )
                .with_span_label("no path from the initial state leads here")
                .with_help(format!(
                    "add a transition `-> {}`, or remove the state",
                    state.name.node
                )),
            );
        }
    }
}

/// Instances that can never reach a final state never complete: they hold
/// their state and timers forever.
fn cannot_complete(ctx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    if !ctx.states.iter().any(|s| s.kind == StateKind::Final) {
        out.push(
            Diagnostic::warning(
                "cannot-complete",
                ctx.process.name.span,
                format!(
                    "process `{}` has no final state, so its instances never complete",
                    ctx.process.name.node
                ),
            )
            .with_help("declare where the process ends: `final state Done`"),
        );
        return;
    }
    for (index, state) in ctx.states.iter().enumerate() {
        if ctx.reachable[index] && !ctx.can_complete[index] {
            out.push(
                Diagnostic::warning(
                    "cannot-complete",
                    state.name.span,
                    format!("no final state can be reached from state `{}`", state.name.node),
                )
                .with_span_label("instances that enter this state never complete")
                .with_help("add a transition from this state towards a final state"),
            );
        }
    }
}

/// A state that only an outside event can leave, entered on some path with
/// no timer pending that it handles, may wait forever: there is no deadline.
fn waits_forever(ctx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    for (index, state) in ctx.states.iter().enumerate() {
        if state.kind != StateKind::Normal || !ctx.reachable[index] {
            continue;
        }
        let deadline = ctx.must_pending[index].iter().any(|t| {
            ctx.input(&ctx.timers[*t].node)
                .is_some_and(|i| !ctx.tables[index][i].handlers.is_empty())
        });
        if !deadline {
            out.push(
                Diagnostic::warning(
                    "waits-forever",
                    state.name.span,
                    format!("state `{}` may wait forever", state.name.node),
                )
                .with_span_label("on some path into this state no timer it handles is pending")
                .with_help(format!(
                    "schedule a timer on every way into `{}` and handle it there, to give the wait a deadline",
                    state.name.node
                )),
            );
        }
    }
}

/// Declarations nothing uses are noise at best and a forgotten step at worst.
fn unused(ctx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    let mut read: BTreeSet<&str> = BTreeSet::new();
    for (_, expr) in ctx.expressions() {
        expr.walk(&mut |e| {
            if let Some(field) = e.data_field() {
                read.insert(&field.node);
            }
        });
    }
    for field in &ctx.data {
        if !read.contains(field.name.node.as_str()) {
            out.push(
                Diagnostic::warning(
                    "unused",
                    field.name.span,
                    format!("data field `{}` is never read", field.name.node),
                )
                .with_help(format!("read it as `data.{}`, or remove it", field.name.node)),
            );
        }
    }
    let scheduled: BTreeSet<&str> = ctx
        .handlers()
        .flat_map(|h| h.body.iter())
        .filter_map(|s| match s {
            Statement::Schedule { timer, .. } => Some(timer.node.as_str()),
            _ => None,
        })
        .collect();
    for timer in &ctx.timers {
        if !scheduled.contains(timer.node.as_str()) {
            out.push(
                Diagnostic::warning(
                    "unused",
                    timer.span,
                    format!("timer `{}` is never scheduled", timer.node),
                )
                .with_help(format!(
                    "schedule it with `schedule {} after 15m`, or remove it",
                    timer.node
                )),
            );
        }
    }
    for (event, _) in &ctx.event_keys {
        if !ctx.is_timer_input(&event.node) && ctx.input(&event.node).is_none() {
            out.push(
                Diagnostic::warning(
                    "unused",
                    event.span,
                    format!(
                        "correlation rule for `{}`, which no state handles or ignores",
                        event.node
                    ),
                )
                .with_help(format!("handle `{}` in some state, or remove the rule", event.node)),
            );
        }
    }
}

/// The candidate nearest to `name`, if it is near enough to be a typo.
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (crate::parse::edit_distance(&name.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn same_path(a: &ast::TypePath, b: &ast::TypePath) -> bool {
    a.segments.iter().map(|s| &s.node).eq(b.segments.iter().map(|s| &s.node))
}

/// Builds the model of a process that passed every check.
fn resolve(ctx: &Ctx<'_>) -> ProcessModel {
    let (default_field, key_type) = ctx.default_key.expect("checked: correlation");
    let inputs: Vec<InputModel> = ctx
        .inputs
        .iter()
        .map(|input| {
            let name = Ident::new(input.name.to_owned(), input.span);
            let kind = match input.timer {
                Some(timer) => InputKind::Timer(timer),
                None => {
                    let field = ctx
                        .event_keys
                        .iter()
                        .find(|(e, _)| e.node == input.name)
                        .map_or(default_field, |(_, f)| f);
                    InputKind::Event { key_field: field.clone() }
                }
            };
            InputModel { name, kind }
        })
        .collect();

    let mut outputs: Vec<OutputModel> = Vec::new();
    let mut states = Vec::new();
    for (index, state) in ctx.states.iter().enumerate() {
        let table = ctx.tables[index]
            .iter()
            .zip(&ctx.inputs)
            .map(|(entry, input)| {
                if state.kind == StateKind::Final {
                    Handling::Completed
                } else if !entry.handlers.is_empty() {
                    let handlers = entry
                        .handlers
                        .iter()
                        .map(|h| resolve_handler(ctx, h, entry.shared, &mut outputs))
                        .collect();
                    Handling::Handled(handlers)
                } else if let Some(span) = entry.ignored {
                    Handling::Ignored(span)
                } else {
                    debug_assert!(input.timer.is_some(), "checked: unhandled_inputs");
                    Handling::NotPending
                }
            })
            .collect();
        states.push(StateModel {
            name: state.name.clone(),
            docs: state.docs.clone(),
            kind: state.kind,
            table,
            pending_timers: ctx.may_pending[index].keys().copied().collect(),
            reachable: ctx.reachable[index],
        });
    }
    let initial = ctx
        .states
        .iter()
        .position(|s| s.kind == StateKind::Initial)
        .expect("checked: one_initial_state");
    ProcessModel {
        name: ctx.process.name.clone(),
        docs: ctx.process.docs.clone(),
        span: ctx.process.span,
        key_type: key_type.clone(),
        data: ctx
            .data
            .iter()
            .map(|f| DataFieldModel {
                name: f.name.clone(),
                docs: f.docs.clone(),
                ty: f.ty.clone(),
                init: f.init.clone(),
            })
            .collect(),
        timers: ctx
            .process
            .items
            .iter()
            .filter_map(|item| match item {
                ProcessItem::Timer { docs, name, .. } => {
                    Some(TimerModel { name: name.clone(), docs: docs.clone() })
                }
                _ => None,
            })
            .collect(),
        inputs,
        outputs,
        states,
        initial,
    }
}

fn resolve_handler(
    ctx: &Ctx<'_>,
    handler: &ast::Handler,
    shared: bool,
    outputs: &mut Vec<OutputModel>,
) -> HandlerModel {
    let mut actions = Vec::new();
    let mut target = None;
    for statement in &handler.body {
        match statement {
            Statement::Send { command: path, fields, span }
            | Statement::Publish { event: path, fields, span } => {
                let kind = if matches!(statement, Statement::Send { .. }) {
                    OutputKind::Command
                } else {
                    OutputKind::Event
                };
                let output =
                    outputs.iter().position(|o| same_path(&o.path, path)).unwrap_or_else(|| {
                        outputs.push(OutputModel { path: path.clone(), kind });
                        outputs.len() - 1
                    });
                actions.push(Action::Emit { output, fields: fields.clone(), span: *span });
            }
            Statement::Set { field, value, span } => actions.push(Action::Set {
                field: ctx.field(&field.node).expect("checked: unknown_names"),
                value: value.clone(),
                span: *span,
            }),
            Statement::Schedule { timer, when, span } => actions.push(Action::Schedule {
                timer: ctx.timer(&timer.node).expect("checked: unknown_names"),
                when: when.clone(),
                span: *span,
            }),
            Statement::Cancel { timer, span } => actions.push(Action::Cancel {
                timer: ctx.timer(&timer.node).expect("checked: unknown_names"),
                span: *span,
            }),
            Statement::Transition { target: name, .. } => target = ctx.state(&name.node),
        }
    }
    HandlerModel {
        docs: handler.docs.clone(),
        guard: handler.guard.clone(),
        actions,
        target,
        span: handler.span,
        shared,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::hash::{Hash, Hasher};

    use super::duplicates;

    /// A key that counts how often it is compared.
    struct Counted<'a> {
        name: String,
        comparisons: &'a Cell<usize>,
    }

    impl PartialEq for Counted<'_> {
        fn eq(&self, other: &Self) -> bool {
            self.comparisons.set(self.comparisons.get() + 1);
            self.name == other.name
        }
    }

    impl Eq for Counted<'_> {}

    impl Hash for Counted<'_> {
        fn hash<H: Hasher>(&self, state: &mut H) {
            self.name.hash(state);
        }
    }

    /// The duplicate check compares each name with about one other, not with
    /// every earlier one: 80,000 processes took 21 s when it did.
    #[test]
    fn finding_duplicates_compares_each_key_about_once() {
        let comparisons = Cell::new(0);
        let count = 20_000;
        // Every tenth name repeats the one before it.
        let keys = (0..count).map(|i| Counted {
            name: format!("P{}", i - usize::from(i % 10 == 9)),
            comparisons: &comparisons,
        });
        let found = duplicates(keys);
        assert_eq!(found.len(), count / 10);
        assert_eq!(found[0], (9, 8));
        assert!(comparisons.get() <= 2 * count, "{} comparisons", comparisons.get());
    }
}
