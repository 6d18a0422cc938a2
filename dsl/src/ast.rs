//! The syntax tree of a `.yard` file, exactly as written, every node with its
//! span. The parser builds it; the checker resolves it into a [`crate::Model`].
//! Nothing here knows about pest.

use crate::span::{Span, Spanned};

/// A name as written (a process, state, input, field or type segment).
pub type Ident = Spanned<String>;

/// One source file: any number of processes, and the comments between them
/// (kept for the formatter; they mean nothing to the compiler).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct File {
    pub processes: Vec<Process>,
    pub comments: Vec<Comment>,
}

/// A `//` or `/* */` comment; doc comments (`///`) belong to the item they precede.
#[derive(Clone, Debug, PartialEq)]
pub struct Comment {
    /// The comment as written, markers included.
    pub text: String,
    pub span: Span,
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
    /// `data { name: Type (= expr)? ... }`.
    Data {
        fields: Vec<DataField>,
        span: Span,
    },
    /// `timer NAME`.
    Timer {
        docs: Vec<String>,
        name: Ident,
        span: Span,
    },
    /// `any state { ... }`: handlers and ignores shared by every non-final state.
    AnyState {
        docs: Vec<String>,
        body: Vec<StateItem>,
        span: Span,
    },
    State(State),
}

/// `name: Type = init` in a `data` block.
#[derive(Clone, Debug, PartialEq)]
pub struct DataField {
    pub docs: Vec<String>,
    pub name: Ident,
    pub ty: Type,
    pub init: Option<Expr>,
    pub span: Span,
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
    Ignore { inputs: Vec<Ident>, span: Span },
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
    /// `publish EVENT { field: expr, ... }`: an event of the process itself.
    Publish { event: TypePath, fields: Option<Vec<FieldInit>>, span: Span },
    /// `set FIELD = expr`.
    Set { field: Ident, value: Expr, span: Span },
    /// `schedule TIMER after DURATION` or `schedule TIMER at INSTANT`.
    Schedule { timer: Ident, when: ScheduleWhen, span: Span },
    /// `cancel TIMER`.
    Cancel { timer: Ident, span: Span },
    /// `-> STATE`.
    Transition { target: Ident, span: Span },
}

/// When a scheduled timer fires.
#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleWhen {
    /// `after DURATION`: a `std::time::Duration` from the time of the message being handled.
    After(Expr),
    /// `at INSTANT`: a `Timestamp`.
    At(Expr),
}

impl Statement {
    pub fn span(&self) -> Span {
        match self {
            Statement::Send { span, .. }
            | Statement::Publish { span, .. }
            | Statement::Set { span, .. }
            | Statement::Schedule { span, .. }
            | Statement::Cancel { span, .. }
            | Statement::Transition { span, .. } => *span,
        }
    }
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
    /// The string's content as written between the quotes, escapes not yet resolved.
    Str(String),
    Bool(bool),
    Duration(u64, DurationUnit),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurationUnit {
    Millis,
    Seconds,
    Minutes,
    Hours,
    Days,
}

impl DurationUnit {
    pub fn suffix(self) -> &'static str {
        match self {
            DurationUnit::Millis => "ms",
            DurationUnit::Seconds => "s",
            DurationUnit::Minutes => "m",
            DurationUnit::Hours => "h",
            DurationUnit::Days => "d",
        }
    }

    pub fn millis(self) -> u64 {
        match self {
            DurationUnit::Millis => 1,
            DurationUnit::Seconds => 1_000,
            DurationUnit::Minutes => 60_000,
            DurationUnit::Hours => 3_600_000,
            DurationUnit::Days => 86_400_000,
        }
    }
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

impl Expr {
    /// Calls `f` on this expression and every expression inside it.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Expr)) {
        f(self);
        match &self.kind {
            ExprKind::Lit(_) | ExprKind::Name(_) | ExprKind::Path(_) => {}
            ExprKind::Field(base, _) => base.walk(f),
            ExprKind::Call(callee, args) => {
                callee.walk(f);
                args.iter().for_each(|a| a.walk(f));
            }
            ExprKind::MethodCall(receiver, _, args) => {
                receiver.walk(f);
                args.iter().for_each(|a| a.walk(f));
            }
            ExprKind::Struct(_, fields) => fields.iter().for_each(|field| field.value.walk(f)),
            ExprKind::Unary(_, operand) | ExprKind::Paren(operand) => operand.walk(f),
            ExprKind::Binary(_, left, right) => {
                left.walk(f);
                right.walk(f);
            }
            ExprKind::List(items) => items.iter().for_each(|i| i.walk(f)),
        }
    }

    /// `data.NAME` when this expression is a read of a data field.
    pub fn data_field(&self) -> Option<&Ident> {
        match &self.kind {
            ExprKind::Field(base, field) if matches!(&base.kind, ExprKind::Name(n) if n == "data") => {
                Some(field)
            }
            _ => None,
        }
    }
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

    /// Rust's binding strength, higher binds tighter: the parser's Pratt
    /// table, and what the printers of expressions parenthesise by.
    pub fn precedence(self) -> u8 {
        match self {
            BinaryOp::Or => 1,
            BinaryOp::And => 2,
            BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Gt
            | BinaryOp::Ge => 3,
            BinaryOp::Add | BinaryOp::Sub => 4,
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Rem => 5,
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
