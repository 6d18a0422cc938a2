//! The graph back end: a checked [`ProcessModel`] drawn as a state diagram, in
//! Graphviz DOT ([`dot`]) or Mermaid `stateDiagram-v2` ([`mermaid`]) text.
//!
//! Both views draw the same edges: one per handler, from its state to its
//! target (or back to itself when the handler stays), labelled
//! `Input [guard] / Command, ^Event`. A guard is printed from the syntax tree,
//! so it reads as written up to spacing; `^` marks an event the process
//! publishes, unmarked names are commands it sends. Ignored inputs, timers that
//! cannot be pending, and the inputs of final states are not drawn: they
//! change nothing. Handlers from `any state` are drawn on every state that
//! takes them.
//!
//! The initial state is marked by an arrow from a start point (DOT: an
//! invisible point; Mermaid: `[*] --> Initial`), and every final state by a
//! double border (DOT: `peripheries=2`) or an arrow to the end point (Mermaid:
//! `Final --> [*]`).
//!
//! Timer edges are dashed in DOT. Mermaid's `stateDiagram-v2` has no dashed
//! edges, so there a timer edge's label starts with `⏱` instead.
//!
//! Mermaid reads a transition label up to the next `:` or `;`, takes `#` for
//! the start of an entity and a line holding `direction TB` for a layout
//! statement, so labels there escape those characters as Mermaid entities
//! (`#58;`, `#59;`, `#35;`, ...). A state whose name is a Mermaid keyword
//! (`Default`, `Note`, `Class`, ...) is declared under a safe id with its name
//! as the shown text.

use std::fmt::Write as _;

use crate::ast::{Expr, ExprKind, Lit, StateKind, UnaryOp};
use crate::model::{
    Action, HandlerModel, Handling, InputKind, OutputKind, ProcessModel, StateModel,
};

/// The process as a Graphviz `digraph`, laid out left to right.
pub fn dot(process: &ProcessModel) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", dot_string(&process.name.node));
    for doc in &process.docs {
        let _ = writeln!(out, "    // {doc}");
    }
    out.push_str("    rankdir=LR;\n");
    out.push_str("    node [shape=box, style=rounded, fontname=\"Helvetica\"];\n");
    out.push_str("    edge [fontname=\"Helvetica\", fontsize=10];\n");
    // The start point's id has a space in it, so that no state can be named so.
    out.push_str("    \"initial state\" [shape=point, label=\"\", width=0.15];\n");

    for state in &process.states {
        let mut attributes = Vec::new();
        if state.kind == StateKind::Final {
            attributes.push("peripheries=2".to_owned());
        }
        if !state.docs.is_empty() {
            attributes.push(format!("tooltip={}", dot_string(&state.docs.join("\n"))));
        }
        let name = dot_string(&state.name.node);
        if attributes.is_empty() {
            let _ = writeln!(out, "    {name};");
        } else {
            let _ = writeln!(out, "    {name} [{}];", attributes.join(", "));
        }
    }

    if let Some(initial) = process.states.get(process.initial) {
        let _ = writeln!(out, "    \"initial state\" -> {};", dot_string(&initial.name.node));
    }
    for edge in edges(process) {
        let mut attributes = vec![format!("label={}", dot_string(&edge.label))];
        if edge.timer {
            attributes.push("style=dashed".to_owned());
        }
        if !edge.docs.is_empty() {
            attributes.push(format!("tooltip={}", dot_string(&edge.docs.join("\n"))));
        }
        let _ = writeln!(
            out,
            "    {} -> {} [{}];",
            dot_string(&edge.from.name.node),
            dot_string(&edge.to.name.node),
            attributes.join(", ")
        );
    }
    out.push_str("}\n");
    out
}

/// The process as a Mermaid `stateDiagram-v2`.
pub fn mermaid(process: &ProcessModel) -> String {
    let ids = mermaid_ids(process);
    let mut out = String::from("stateDiagram-v2\n");
    for doc in &process.docs {
        let _ = writeln!(out, "    %% {}", mermaid_comment(doc));
    }
    out.push_str("    direction LR\n");
    // Every state is declared, in source order, so that a state without edges
    // is still drawn and the layout follows the file.
    for (state, id) in process.states.iter().zip(&ids) {
        for doc in &state.docs {
            let _ = writeln!(out, "    %% {}", mermaid_comment(doc));
        }
        if *id == state.name.node {
            let _ = writeln!(out, "    {id}");
        } else {
            let _ = writeln!(out, "    state \"{}\" as {id}", state.name.node);
        }
    }
    if let Some(initial) = ids.get(process.initial) {
        let _ = writeln!(out, "    [*] --> {initial}");
    }
    for edge in edges(process) {
        for doc in edge.docs {
            let _ = writeln!(out, "    %% {}", mermaid_comment(doc));
        }
        let timer = if edge.timer { "⏱ " } else { "" };
        let _ = writeln!(
            out,
            "    {} --> {}: {timer}{}",
            ids[edge.from_index],
            ids[edge.to_index],
            mermaid_text(&edge.label)
        );
    }
    for (state, id) in process.states.iter().zip(&ids) {
        if state.kind == StateKind::Final {
            let _ = writeln!(out, "    {id} --> [*]");
        }
    }
    out
}

/// One drawn transition.
struct Edge<'m> {
    from_index: usize,
    from: &'m StateModel,
    to_index: usize,
    to: &'m StateModel,
    label: String,
    /// The handler's doc comment.
    docs: &'m [String],
    timer: bool,
}

/// Every drawn handler of every state: by state in declaration order, then by
/// input in the order of [`ProcessModel::inputs`], then in the order the
/// handlers are tried.
fn edges(process: &ProcessModel) -> Vec<Edge<'_>> {
    let mut edges = Vec::new();
    for (from_index, from) in process.states.iter().enumerate() {
        for (input, handling) in process.inputs.iter().zip(&from.table) {
            let Handling::Handled(handlers) = handling else { continue };
            // A timer's handler runs only where the timer may be pending: a
            // handler from `any state` can reach states it never fires in.
            let timer = match input.kind {
                InputKind::Timer(t) if !from.pending_timers.contains(&t) => continue,
                InputKind::Timer(_) => true,
                InputKind::Event { .. } => false,
            };
            for handler in handlers {
                let to_index = handler.target.unwrap_or(from_index);
                let Some(to) = process.states.get(to_index) else { continue };
                edges.push(Edge {
                    from_index,
                    from,
                    to_index,
                    to,
                    label: label(process, &input.name.node, handler),
                    docs: &handler.docs,
                    timer,
                });
            }
        }
    }
    edges
}

/// `Input [guard] / Command, ^Event`, leaving out the parts a handler lacks.
fn label(process: &ProcessModel, input: &str, handler: &HandlerModel) -> String {
    let mut label = input.to_owned();
    if let Some(guard) = &handler.guard {
        let _ = write!(label, " [{}]", expr(guard));
    }
    let emitted: Vec<String> = handler
        .actions
        .iter()
        .filter_map(|action| match action {
            Action::Emit { output, .. } => process.outputs.get(*output),
            _ => None,
        })
        .map(|output| {
            let name = &output.path.name().node;
            match output.kind {
                OutputKind::Command => name.clone(),
                OutputKind::Event => format!("^{name}"),
            }
        })
        .collect();
    if !emitted.is_empty() {
        let _ = write!(label, " / {}", emitted.join(", "));
    }
    label
}

/// An expression written back as source text. The tree keeps parentheses as
/// written, so operators need none added.
fn expr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Lit(lit) => match lit {
            Lit::Int(n) => n.to_string(),
            Lit::Float(text) => text.clone(),
            Lit::Str(content) => format!("\"{content}\""),
            Lit::Bool(b) => b.to_string(),
            Lit::Duration(n, unit) => format!("{n}{}", unit.suffix()),
        },
        ExprKind::Name(name) => name.clone(),
        ExprKind::Path(segments) => {
            segments.iter().map(|s| s.node.as_str()).collect::<Vec<_>>().join("::")
        }
        ExprKind::Field(base, field) => format!("{}.{}", expr(base), field.node),
        ExprKind::Call(callee, args) => format!("{}({})", expr(callee), list(args)),
        ExprKind::MethodCall(receiver, method, args) => {
            format!("{}.{}({})", expr(receiver), method.node, list(args))
        }
        ExprKind::Struct(path, fields) => {
            let path = path.segments.iter().map(|s| s.node.as_str()).collect::<Vec<_>>();
            let fields = fields
                .iter()
                .map(|f| format!("{}: {}", f.name.node, expr(&f.value)))
                .collect::<Vec<_>>();
            format!("{} {{ {} }}", path.join("::"), fields.join(", "))
        }
        ExprKind::Unary(op, operand) => {
            let op = match op {
                UnaryOp::Not => "!",
                UnaryOp::Neg => "-",
            };
            format!("{op}{}", expr(operand))
        }
        ExprKind::Binary(op, left, right) => {
            format!("{} {} {}", expr(left), op.as_str(), expr(right))
        }
        ExprKind::List(items) => format!("[{}]", list(items)),
        ExprKind::Paren(inner) => format!("({})", expr(inner)),
    }
}

fn list(items: &[Expr]) -> String {
    items.iter().map(expr).collect::<Vec<_>>().join(", ")
}

/// A DOT quoted string. Inside quotes only `"` needs escaping, but a
/// backslash starts DOT's own escapes (`\n`, `\l`, `\N`) in labels, so it is
/// doubled, and a line break becomes DOT's centred `\n`.
fn dot_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Mermaid label text: the characters that end or confuse a transition label
/// become entities, which Mermaid decodes when it draws.
fn mermaid_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            ':' => out.push_str("#58;"),
            ';' => out.push_str("#59;"),
            '#' => out.push_str("#35;"),
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    mermaid_comment(&out)
}

/// Text for a Mermaid `%%` comment. Mermaid takes any line holding
/// `direction` and a direction after it for a layout statement, wherever it
/// stands, comments included; an entity in place of the space breaks the
/// match.
fn mermaid_comment(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.to_ascii_lowercase().find("direction") {
        let after = at + "direction".len();
        escaped.push_str(&rest[..after]);
        rest = &rest[after..];
        if let Some(space) = rest.chars().next().filter(|c| c.is_whitespace()) {
            escaped.push_str("#32;");
            rest = &rest[space.len_utf8()..];
        }
    }
    escaped.push_str(rest);
    escaped
}

/// Words that Mermaid's state-diagram lexer takes for keywords at the start of
/// a statement (compared without case), so they cannot be state ids.
const MERMAID_KEYWORDS: &[&str] = &[
    "class",
    "classdef",
    "click",
    "default",
    "href",
    "note",
    "scale",
    "state",
    "statediagram",
    "style",
];

/// The Mermaid id of every state: its name, or for a keyword the name with
/// underscores appended until it clashes with no other state.
fn mermaid_ids(process: &ProcessModel) -> Vec<String> {
    let names: Vec<&str> = process.states.iter().map(|s| s.name.node.as_str()).collect();
    names
        .iter()
        .map(|name| {
            let mut id = (*name).to_owned();
            if MERMAID_KEYWORDS.contains(&name.to_ascii_lowercase().as_str()) {
                id.push('_');
                while names.contains(&id.as_str()) {
                    id.push('_');
                }
            }
            id
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mermaid_text_escapes_what_ends_a_label() {
        assert_eq!(
            mermaid_text("A [x == \"a:b\" && y >= 1 % 2] / #C; direction LR"),
            "A [x == #quot;a#58;b#quot; && y #gt;= 1 % 2] / #35;C#59; direction#32;LR"
        );
    }

    #[test]
    fn dot_string_escapes_quotes_and_backslashes() {
        assert_eq!(dot_string(r#"a "b" \n"#), r#""a \"b\" \\n""#);
    }
}
