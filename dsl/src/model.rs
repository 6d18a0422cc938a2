//! The checked model: what the checker proves and the back ends read. Names
//! are resolved to indices, every non-final state has a complete handler
//! table (one entry per input, `any state` applied), and the timer analysis
//! says which timers may be pending on entry to each state.

use crate::ast::{Expr, FieldInit, Ident, ScheduleWhen, StateKind, Type, TypePath};
use crate::span::Span;

#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub processes: Vec<ProcessModel>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProcessModel {
    pub name: Ident,
    pub docs: Vec<String>,
    pub span: Span,
    /// The Rust type of the correlation key.
    pub key_type: Type,
    pub data: Vec<DataFieldModel>,
    pub timers: Vec<TimerModel>,
    /// Every input: the event types in order of first mention, then the timers
    /// in declaration order.
    pub inputs: Vec<InputModel>,
    /// Every message type the process sends or publishes, in order of first mention.
    pub outputs: Vec<OutputModel>,
    pub states: Vec<StateModel>,
    /// Index of the initial state in `states`.
    pub initial: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DataFieldModel {
    pub name: Ident,
    pub docs: Vec<String>,
    pub ty: Type,
    /// Without one, the field starts at `Default::default()`.
    pub init: Option<Expr>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TimerModel {
    pub name: Ident,
    pub docs: Vec<String>,
}

/// An event type the process takes, or one of its timers.
#[derive(Clone, Debug, PartialEq)]
pub struct InputModel {
    /// The Rust type name of an event, or the timer's name.
    pub name: Ident,
    pub kind: InputKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum InputKind {
    /// The event carries the correlation key in `key_field`.
    Event { key_field: Ident },
    /// The timer with this index in [`ProcessModel::timers`].
    Timer(usize),
}

/// A message type the process emits.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputModel {
    pub path: TypePath,
    pub kind: OutputKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// `send`: a command to another context.
    Command,
    /// `publish`: an event of the process itself.
    Event,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StateModel {
    pub name: Ident,
    pub docs: Vec<String>,
    pub kind: StateKind,
    /// One entry per input, in the order of [`ProcessModel::inputs`].
    pub table: Vec<Handling>,
    /// Indices of the timers that may be pending on entry to this state.
    pub pending_timers: Vec<usize>,
    /// Whether a path from the initial state leads here.
    pub reachable: bool,
}

/// What a state does with one input.
#[derive(Clone, Debug, PartialEq)]
pub enum Handling {
    /// Handlers tried in order; the last one has no guard.
    Handled(Vec<HandlerModel>),
    /// Acknowledged, changes nothing.
    Ignored(Span),
    /// A timer that cannot be pending in this state, so it never arrives here.
    NotPending,
    /// Only in final states: the instance is complete and takes nothing more.
    Completed,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HandlerModel {
    pub docs: Vec<String>,
    pub guard: Option<Expr>,
    pub actions: Vec<Action>,
    /// Index of the next state, or `None` to stay.
    pub target: Option<usize>,
    pub span: Span,
    /// Whether the handler comes from `any state` rather than the state itself.
    pub shared: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// `send` or `publish`: `output` indexes [`ProcessModel::outputs`].
    Emit { output: usize, fields: Option<Vec<FieldInit>>, span: Span },
    /// `set`: `field` indexes [`ProcessModel::data`].
    Set { field: usize, value: Expr, span: Span },
    /// `schedule`: `timer` indexes [`ProcessModel::timers`].
    Schedule { timer: usize, when: ScheduleWhen, span: Span },
    /// `cancel`.
    Cancel { timer: usize, span: Span },
}

impl ProcessModel {
    pub fn state_index(&self, name: &str) -> Option<usize> {
        self.states.iter().position(|s| s.name.node == name)
    }

    /// The event inputs, with their index in [`ProcessModel::inputs`].
    pub fn events(&self) -> impl Iterator<Item = (usize, &InputModel)> {
        self.inputs.iter().enumerate().filter(|(_, i)| matches!(i.kind, InputKind::Event { .. }))
    }
}
