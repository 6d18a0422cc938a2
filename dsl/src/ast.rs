//! The syntax tree of a `.yard` file, exactly as written, every node with its
//! span. The parser builds it; the checker resolves it into a [`crate::Model`].
//! Nothing here knows about pest.

use crate::span::{Span, Spanned};

/// A name as written (a process, state, input, field or type segment).
pub type Ident = Spanned<String>;

/// One source file: any number of processes.
#[derive(Clone, Debug, PartialEq)]
pub struct File {
    pub processes: Vec<Process>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Process {
    pub docs: Vec<String>,
    pub name: Ident,
    pub items: Vec<ProcessItem>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ProcessItem {
    /// `correlate by FIELD: TYPE`.
    CorrelateDefault {
        field: Ident,
        ty: Type,
        span: Span,
    },
    /// `correlate EVENT by FIELD`.
    CorrelateEvent {
        event: Ident,
        field: Ident,
        span: Span,
    },
    State(State),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateKind {
    Initial,
    Normal,
    Final,
}

#[derive(Clone, Debug, PartialEq)]
pub struct State {
    pub docs: Vec<String>,
    pub kind: StateKind,
    pub name: Ident,
    /// `None` when the state has no `{ ... }` at all (the form of final states).
    pub body: Option<Vec<StateItem>>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StateItem {
    Handler(Handler),
    Ignore(Vec<Ident>),
}

/// `on INPUT (when EXPR)? { STATEMENTS }`.
#[derive(Clone, Debug, PartialEq)]
pub struct Handler {
    pub docs: Vec<String>,
    pub input: Ident,
    pub guard: Option<Expr>,
    pub body: Vec<Statement>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Statement {
    /// `send COMMAND { field: expr, ... }`, or `send COMMAND` for a unit command.
    Send { command: TypePath, fields: Option<Vec<FieldInit>>, span: Span },
    /// `-> STATE`.
    Transition { target: Ident, span: Span },
}

/// `name: expr` inside a struct literal or `send`.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldInit {
    pub name: Ident,
    pub value: Expr,
}

/// A Rust type as the language accepts it: a path with generic arguments, or a tuple.
#[derive(Clone, Debug, PartialEq)]
pub enum Type {
    Path(TypePath),
    Tuple(Vec<Type>, Span),
}

/// `a::b::C<T, U>`: the generic arguments belong to the last segment.
#[derive(Clone, Debug, PartialEq)]
pub struct TypePath {
    pub segments: Vec<Ident>,
    pub args: Vec<Type>,
    pub span: Span,
}

impl TypePath {
    /// The last segment, which names the type.
    pub fn name(&self) -> &Ident {
        self.segments.last().expect("the grammar gives a type path at least one segment")
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Lit(Lit),
    /// A bare name: `event`, `data`, `id`, `now`, or a Rust constant or function.
    Name(String),
    /// A Rust path with at least two segments: `Currency::Eur`, `Money::cents`.
    Path(Vec<Ident>),
    Field(Box<Expr>, Ident),
    Call(Box<Expr>, Vec<Expr>),
    MethodCall(Box<Expr>, Ident, Vec<Expr>),
    Struct(TypePath, Vec<FieldInit>),
    Unary(UnaryOp, Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    List(Vec<Expr>),
    Paren(Box<Expr>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    Int(u128),
    Float(String),
    Str(String),
    Bool(bool),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Not,
    Neg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinaryOp {
    pub fn as_str(self) -> &'static str {
        match self {
            BinaryOp::Or => "||",
            BinaryOp::And => "&&",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
        }
    }

    /// Comparisons borrow their operands; everything else consumes values.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge
        )
    }
}
