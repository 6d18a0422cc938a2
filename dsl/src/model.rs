//! The checked model: what the checker proves and code generation reads.
//! Names are resolved to indices, every non-final state has a complete
//! handler table (one entry per input), and nothing here can be wrong.

use crate::ast::{Expr, FieldInit, Ident, StateKind, Type, TypePath};
use crate::span::Span;

#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub processes: Vec<ProcessModel>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProcessModel {
    pub name: Ident,
    pub docs: Vec<String>,
    /// The Rust type of the correlation key.
    pub key_type: Type,
    /// Every event the process takes, in order of first mention.
    pub inputs: Vec<InputModel>,
    pub states: Vec<StateModel>,
    /// Index of the initial state in `states`.
    pub initial: usize,
    /// Every command type the process sends, in order of first mention.
    pub commands: Vec<TypePath>,
}

/// An event type the process takes.
#[derive(Clone, Debug, PartialEq)]
pub struct InputModel {
    /// The Rust type name, as written at its first mention.
    pub name: Ident,
    /// The field of the event that carries the correlation key.
    pub key_field: Ident,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StateModel {
    pub name: Ident,
    pub docs: Vec<String>,
    pub kind: StateKind,
    /// One entry per input, in the order of [`ProcessModel::inputs`].
    pub table: Vec<Handling>,
}

/// What a state does with one input.
#[derive(Clone, Debug, PartialEq)]
pub enum Handling {
    /// Handlers tried in order; the last one has no guard.
    Handled(Vec<HandlerModel>),
    /// Acknowledged, changes nothing.
    Ignored(Span),
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
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Sends a command; `command` indexes [`ProcessModel::commands`].
    Send { command: usize, fields: Option<Vec<FieldInit>>, span: Span },
}

impl ProcessModel {
    pub fn state_index(&self, name: &str) -> Option<usize> {
        self.states.iter().position(|s| s.name.node == name)
    }
}
