//! The source formatter behind `switchyard fmt`: one canonical layout for
//! `.yard` files, so that a diff shows what changed and not how it was typed.
//!
//! [`format`] parses the text, prints the tree again and checks its own work:
//! the printed text parses to the same tree (spans aside) with the same
//! comments in the same order. A file that does not parse is never formatted;
//! its diagnostics come back instead.
//!
//! # The canonical layout
//!
//! - Four spaces of indentation per level; one item per line; a file ends with
//!   one line break.
//! - Inside a process, items keep their order. A blank line separates the
//!   groups of consecutive items (correlation rules, data blocks, timers,
//!   states) and each state from the next; consecutive states without a body
//!   (`final state Done`) stay together. A blank line separates processes.
//! - `///` doc comments stay on their line right above their item, as
//!   `/// text`.
//! - `correlate by order_id: OrderId`, `correlate Event by field`, `timer T`,
//!   `ignore A, B, C` (on one line when it fits in 100 columns, else wrapped
//!   with the next lines indented once more), `final state Done` without braces.
//!   A state, handler or block written with braces keeps them; empty braces
//!   print as `{}`.
//! - `data { ... }` holds one `name: Type` or `name: Type = expr` per line,
//!   without commas, but for a field with an initialiser that is followed by
//!   a documented field: the parser needs the comma there to end the
//!   expression before the `///`.
//! - `on Input when guard {` opens a handler; every statement has its own
//!   line, so `-> State` ends up on a line of its own after the others.
//! - `send Command { a: x, b: y }` (and `publish`) stays on one line when the
//!   whole line fits in 100 columns and no comment stands inside it;
//!   otherwise it takes one `field: value,` per line with a trailing comma.
//! - Expressions are printed on one line with single spaces around binary
//!   operators and after commas. Parentheses are exactly the ones written
//!   (the parser keeps them), which is the minimal set for the grouping that
//!   was parsed. Numbers, durations (`15m`) and strings are printed exactly
//!   as written.
//!
//! # Comments
//!
//! Every `//` and `/* */` comment is kept, in its original order. A comment
//! that had code before it on its line stays at the end of the line that code
//! is printed on (one space before it); any other comment takes a line of its
//! own, indented like the item that follows it. A comment inside an
//! expression or a header moves after the line it was in. A blank line
//! written after a comment on its own line is kept, so that a file header or
//! a section heading stays apart from what follows; other blank lines are
//! the layout's.

use crate::ast::*;
use crate::diagnostic::Diagnostic;
use crate::span::Span;

/// The widest line a one-line `send` or `publish` may make.
const WIDTH: usize = 100;
const INDENT: &str = "    ";

/// Formats a whole `.yard` text in the canonical layout, or returns the
/// syntax errors that stop it from being formatted.
pub fn format(text: &str) -> Result<String, Vec<Diagnostic>> {
    let (file, diagnostics) = crate::parse(text);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(diagnostics);
    }
    // A byte order mark stays: formatting changes the layout, not the encoding.
    let bom = if text.starts_with('\u{FEFF}') { "\u{FEFF}" } else { "" };
    let formatted = format!("{bom}{}", print(text, &file));
    // A formatter that changes what a file means, or loses a comment, must
    // not get to overwrite it: the printed text is parsed again and compared.
    let (again, errors) = crate::parse(&formatted);
    let same_comments =
        again.comments.iter().map(|c| &c.text).eq(file.comments.iter().map(|c| &c.text));
    if !errors.is_empty() || !same_comments || erased(again) != erased(file) {
        let diagnostic = Diagnostic::error(
            "formatter",
            Span::new(0, 0),
            "the formatted text would not mean the same as this file",
        )
        .with_help("the file is left as it is; this is a bug of the formatter, please report it with this file");
        return Err(vec![diagnostic]);
    }
    Ok(formatted)
}

/// One printed line: its indentation depth, its text, and what ends it.
struct Line {
    depth: usize,
    text: String,
    /// A comment was appended to the code of this line.
    has_comment: bool,
    /// The line ends in a `//` comment, so nothing more may follow on it.
    ends_in_line_comment: bool,
}

/// The state of printing one file: the output so far and the comments not yet
/// placed. Comments are placed in source order: before printing anything that
/// starts at byte `pos` of the source, every comment before `pos` is written.
struct Printer<'a> {
    source: &'a str,
    comments: &'a [Comment],
    /// The first comment not yet written.
    next: usize,
    lines: Vec<Line>,
    depth: usize,
    /// A blank line is due before the next line that is not a trailing comment.
    blank: bool,
}

fn print(source: &str, file: &File) -> String {
    let mut p = Printer {
        source,
        comments: &file.comments,
        next: 0,
        lines: Vec::new(),
        depth: 0,
        blank: false,
    };
    for process in &file.processes {
        p.process(process);
        p.blank = true;
    }
    p.comments_before(u32::MAX);
    let mut out = String::new();
    for line in &p.lines {
        if !line.text.is_empty() {
            for _ in 0..line.depth {
                out.push_str(INDENT);
            }
            out.push_str(&line.text);
        }
        out.push('\n');
    }
    out
}

impl Printer<'_> {
    /// Starts a new line, after the blank line that is due, if any.
    fn line(&mut self, text: String) {
        if self.blank && !self.lines.is_empty() {
            self.lines.push(Line {
                depth: 0,
                text: String::new(),
                has_comment: false,
                ends_in_line_comment: false,
            });
        }
        self.blank = false;
        self.lines.push(Line {
            depth: self.depth,
            text,
            has_comment: false,
            ends_in_line_comment: false,
        });
    }

    /// Writes every comment that starts before byte `pos` of the source.
    fn comments_before(&mut self, pos: u32) {
        while let Some(comment) = self.comments.get(self.next).filter(|c| c.span.start < pos) {
            self.next += 1;
            let is_line_comment = comment.text.starts_with("//");
            // A trailing comment joins the line printed last, unless that
            // line ends in a `//` comment, which would swallow it.
            if self.is_trailing(comment)
                && let Some(last) = self.lines.last_mut().filter(|l| !l.ends_in_line_comment)
            {
                last.text.push(' ');
                last.text.push_str(&comment.text);
                last.has_comment = true;
                last.ends_in_line_comment = is_line_comment;
                continue;
            }
            self.line(comment.text.clone());
            if let Some(last) = self.lines.last_mut() {
                last.ends_in_line_comment = is_line_comment;
                last.has_comment = true;
            }
            if self.blank_line_after(comment.span) {
                self.blank = true;
            }
        }
    }

    /// Whether anything (code or another comment) precedes the comment on its line.
    fn is_trailing(&self, comment: &Comment) -> bool {
        let start = comment.span.start as usize;
        let before = self.source.get(..start).unwrap_or("");
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        !before[line_start..].trim().is_empty()
    }

    /// Whether the source has a blank line right after `span`.
    fn blank_line_after(&self, span: Span) -> bool {
        let rest = self.source.get(span.end as usize..).unwrap_or("");
        let gap = &rest[..rest.len() - rest.trim_start().len()];
        gap.matches('\n').count() >= 2
    }

    /// Writes `head {` and enters the block; returns the mark that [`Printer::close`] takes.
    fn open(&mut self, head: String) -> usize {
        self.line(head + " {");
        self.depth += 1;
        self.lines.len()
    }

    /// Writes the comments before the closing brace at `end`, then the brace:
    /// on the line of the opening one (`{}`) when nothing came in between.
    fn close(&mut self, mark: usize, end: u32) {
        self.comments_before(end);
        self.blank = false;
        self.depth -= 1;
        let nothing_inside = self.lines.len() == mark;
        match self.lines.last_mut() {
            Some(last) if nothing_inside && !last.has_comment => last.text.push('}'),
            _ => self.line("}".to_owned()),
        }
    }

    /// The doc comments of an item, then the comments between them and the
    /// item's first keyword.
    fn docs(&mut self, docs: &[String], item_start: Span) {
        for doc in docs {
            self.line(if doc.is_empty() { "///".to_owned() } else { format!("/// {doc}") });
        }
        let keyword = code_start(self.source, item_start.start as usize);
        self.comments_before(keyword as u32);
        if !docs.is_empty() {
            // Docs and their item stay together.
            self.blank = false;
        }
    }

    fn process(&mut self, process: &Process) {
        self.comments_before(process.span.start);
        self.docs(&process.docs, process.span);
        let mark = self.open(format!("process {}", process.name.node));
        let mut previous: Option<&ProcessItem> = None;
        for item in &process.items {
            if previous.is_some_and(|previous| separated(previous, item)) {
                self.blank = true;
            }
            self.process_item(item);
            previous = Some(item);
        }
        self.close(mark, closing_brace(process.span));
    }

    fn process_item(&mut self, item: &ProcessItem) {
        match item {
            ProcessItem::CorrelateDefault { field, ty, span } => {
                self.comments_before(span.start);
                self.line(format!("correlate by {}: {}", field.node, print_type(ty)));
            }
            ProcessItem::CorrelateEvent { event, field, span } => {
                self.comments_before(span.start);
                self.line(format!("correlate {} by {}", event.node, field.node));
            }
            ProcessItem::Data { fields, span } => {
                self.comments_before(span.start);
                let mark = self.open("data".to_owned());
                for (i, field) in fields.iter().enumerate() {
                    self.comments_before(field.span.start);
                    self.docs(&field.docs, field.span);
                    let mut line = format!("{}: {}", field.name.node, print_type(&field.ty));
                    if let Some(init) = &field.init {
                        line = format!("{line} = {}", self.expr(init));
                        // The parser would read `///` right after an
                        // expression as `/` and a comment: a comma ends it.
                        if fields.get(i + 1).is_some_and(|next| !next.docs.is_empty()) {
                            line.push(',');
                        }
                    }
                    self.line(line);
                }
                self.close(mark, closing_brace(*span));
            }
            ProcessItem::Timer { docs, name, span } => {
                self.comments_before(span.start);
                self.docs(docs, *span);
                self.line(format!("timer {}", name.node));
            }
            ProcessItem::AnyState { docs, body, span } => {
                self.comments_before(span.start);
                self.docs(docs, *span);
                let mark = self.open("any state".to_owned());
                self.state_items(body);
                self.close(mark, closing_brace(*span));
            }
            ProcessItem::State(state) => {
                self.comments_before(state.span.start);
                self.docs(&state.docs, state.span);
                let head = match state.kind {
                    StateKind::Initial => format!("initial state {}", state.name.node),
                    StateKind::Normal => format!("state {}", state.name.node),
                    StateKind::Final => format!("final state {}", state.name.node),
                };
                match &state.body {
                    None => self.line(head),
                    Some(body) => {
                        let mark = self.open(head);
                        self.state_items(body);
                        self.close(mark, closing_brace(state.span));
                    }
                }
            }
        }
    }

    fn state_items(&mut self, items: &[StateItem]) {
        for item in items {
            match item {
                StateItem::Ignore { inputs, span } => {
                    self.comments_before(span.start);
                    self.ignore(inputs);
                }
                StateItem::Handler(handler) => self.handler(handler),
            }
        }
    }

    /// `ignore A, B, C` on one line when it fits in the width; otherwise as
    /// many names per line as fit, the next lines indented once more.
    fn ignore(&mut self, inputs: &[crate::ast::Ident]) {
        let indent = 4 * self.depth;
        let mut lines: Vec<String> = vec!["ignore".to_owned()];
        for (i, input) in inputs.iter().enumerate() {
            let comma = if i + 1 < inputs.len() { "," } else { "" };
            let word = format!("{}{comma}", input.node);
            let width = indent + if lines.len() > 1 { 4 } else { 0 };
            let current = lines.last_mut().expect("one line at least");
            if current.len() > "ignore".len() && width + current.len() + 1 + word.len() > WIDTH {
                lines.push(word);
            } else {
                current.push(' ');
                current.push_str(&word);
            }
        }
        let mut lines = lines.into_iter();
        self.line(lines.next().expect("one line at least"));
        self.depth += 1;
        for line in lines {
            self.line(line);
        }
        self.depth -= 1;
    }

    fn handler(&mut self, handler: &Handler) {
        self.comments_before(handler.span.start);
        self.docs(&handler.docs, handler.span);
        let mut head = format!("on {}", handler.input.node);
        if let Some(guard) = &handler.guard {
            head = format!("{head} when {}", self.expr(guard));
        }
        let mark = self.open(head);
        for statement in &handler.body {
            self.comments_before(statement.span().start);
            self.statement(statement);
        }
        self.close(mark, closing_brace(handler.span));
    }

    fn statement(&mut self, statement: &Statement) {
        match statement {
            Statement::Send { command, fields, span } => {
                self.message("send", command, fields.as_deref(), *span)
            }
            Statement::Publish { event, fields, span } => {
                self.message("publish", event, fields.as_deref(), *span)
            }
            Statement::Set { field, value, .. } => {
                let line = format!("set {} = {}", field.node, self.expr(value));
                self.line(line);
            }
            Statement::Schedule { timer, when, .. } => {
                let line = match when {
                    ScheduleWhen::After(e) => {
                        format!("schedule {} after {}", timer.node, self.expr(e))
                    }
                    ScheduleWhen::At(e) => format!("schedule {} at {}", timer.node, self.expr(e)),
                };
                self.line(line);
            }
            Statement::Cancel { timer, .. } => self.line(format!("cancel {}", timer.node)),
            Statement::Transition { target, .. } => self.line(format!("-> {}", target.node)),
        }
    }

    /// `send` or `publish`: on one line when it fits and holds no comment,
    /// otherwise one field per line.
    fn message(
        &mut self,
        keyword: &str,
        path: &TypePath,
        fields: Option<&[FieldInit]>,
        span: Span,
    ) {
        let head = format!("{keyword} {}", print_type_path(path));
        let Some(fields) = fields else {
            self.line(head);
            return;
        };
        let has_comment = self.comments.get(self.next).is_some_and(|c| c.span.start < span.end);
        if !has_comment {
            let line = if fields.is_empty() {
                format!("{head} {{}}")
            } else {
                let fields: Vec<String> = fields.iter().map(|f| self.field_init(f)).collect();
                format!("{head} {{ {} }}", fields.join(", "))
            };
            if self.depth * INDENT.len() + line.chars().count() <= WIDTH {
                self.line(line);
                return;
            }
        }
        let mark = self.open(head);
        for field in fields {
            self.comments_before(field.name.span.start);
            let line = format!("{},", self.field_init(field));
            self.line(line);
        }
        self.close(mark, closing_brace(span));
    }

    fn field_init(&self, field: &FieldInit) -> String {
        format!("{}: {}", field.name.node, self.expr(&field.value))
    }

    fn expr(&self, e: &Expr) -> String {
        match &e.kind {
            ExprKind::Lit(lit) => self.lit(lit, e.span),
            ExprKind::Name(name) => name.clone(),
            ExprKind::Path(segments) => join_idents(segments, "::"),
            ExprKind::Field(base, field) => {
                let base_text = self.operand(base, POSTFIX);
                // `1 .0` is a field of an integer; `1.0` would be a float.
                let is_int = matches!(base.kind, ExprKind::Lit(Lit::Int(_)));
                let gap = if is_int && field.node.starts_with(|c: char| c.is_ascii_digit()) {
                    " "
                } else {
                    ""
                };
                format!("{base_text}{gap}.{}", field.node)
            }
            ExprKind::Call(callee, args) => {
                format!("{}({})", self.operand(callee, POSTFIX), self.list(args))
            }
            ExprKind::MethodCall(receiver, method, args) => {
                let receiver = self.operand(receiver, POSTFIX);
                format!("{receiver}.{}({})", method.node, self.list(args))
            }
            ExprKind::Struct(path, fields) => {
                let fields: Vec<String> = fields.iter().map(|f| self.field_init(f)).collect();
                format!("{} {{ {} }}", print_type_path(path), fields.join(", "))
            }
            ExprKind::Unary(op, operand) => {
                let op = match op {
                    UnaryOp::Not => "!",
                    UnaryOp::Neg => "-",
                };
                format!("{op}{}", self.operand(operand, UNARY))
            }
            ExprKind::Binary(op, left, right) => {
                let level = op.precedence();
                // Every operator is left-associative, so a right operand of the
                // same level needs parentheses and a left one does not.
                let left = self.operand(left, level);
                let right = self.operand(right, level + 1);
                format!("{left} {} {right}", op.as_str())
            }
            ExprKind::List(items) => format!("[{}]", self.list(items)),
            ExprKind::Paren(inner) => format!("({})", self.expr(inner)),
        }
    }

    /// An operand that must bind at least as tightly as `level`. The parser
    /// keeps every written parenthesis as [`ExprKind::Paren`], so a parsed
    /// tree never needs more; they are added only for a tree built by hand.
    fn operand(&self, e: &Expr, level: u8) -> String {
        if precedence(e) < level { format!("({})", self.expr(e)) } else { self.expr(e) }
    }

    fn list(&self, items: &[Expr]) -> String {
        items.iter().map(|e| self.expr(e)).collect::<Vec<_>>().join(", ")
    }

    /// Numbers and durations as written (`1_000`, `15m`); strings as written
    /// between their quotes.
    fn lit(&self, lit: &Lit, span: Span) -> String {
        let written = self.source.get(span.range()).filter(|s| !s.is_empty());
        match lit {
            Lit::Str(content) => format!("\"{content}\""),
            Lit::Bool(value) => value.to_string(),
            Lit::Int(value) => written.map_or_else(|| value.to_string(), str::to_owned),
            Lit::Float(text) => written.unwrap_or(text.as_str()).to_owned(),
            Lit::Duration(value, unit) => {
                written.map_or_else(|| format!("{value}{}", unit.suffix()), str::to_owned)
            }
        }
    }
}

const UNARY: u8 = 6;
const POSTFIX: u8 = 7;

fn precedence(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::Binary(op, _, _) => op.precedence(),
        ExprKind::Unary(..) => UNARY,
        ExprKind::Field(..) | ExprKind::Call(..) | ExprKind::MethodCall(..) => POSTFIX,
        _ => POSTFIX + 1,
    }
}

/// Whether a blank line separates two consecutive items of a process.
fn separated(previous: &ProcessItem, item: &ProcessItem) -> bool {
    fn group(item: &ProcessItem) -> u8 {
        match item {
            ProcessItem::CorrelateDefault { .. } | ProcessItem::CorrelateEvent { .. } => 0,
            ProcessItem::Data { .. } => 1,
            ProcessItem::Timer { .. } => 2,
            ProcessItem::AnyState { .. } | ProcessItem::State(_) => 3,
        }
    }
    let bodiless = |item: &ProcessItem| matches!(item, ProcessItem::State(s) if s.body.is_none());
    match (group(previous), group(item)) {
        (1, 1) => true,
        (3, 3) => !(bodiless(previous) && bodiless(item)),
        (a, b) => a != b,
    }
}

/// The offset of the `}` that ends a node written with braces.
fn closing_brace(span: Span) -> u32 {
    span.end.saturating_sub(1)
}

/// The first byte at or after `from` that is neither blank nor part of a
/// comment or doc comment: where an item's first keyword stands.
fn code_start(source: &str, mut from: usize) -> usize {
    while let Some(rest) = source.get(from..) {
        let trimmed = rest.trim_start();
        from += rest.len() - trimmed.len();
        if trimmed.starts_with("//") {
            from += trimmed.find('\n').unwrap_or(trimmed.len());
        } else if let Some(body) = trimmed.strip_prefix("/*") {
            from += body.find("*/").map_or(trimmed.len(), |end| end + 4);
        } else {
            break;
        }
    }
    from
}

fn print_type(ty: &Type) -> String {
    match ty {
        Type::Path(path) => print_type_path(path),
        // A one-element tuple keeps its comma, as in Rust.
        Type::Tuple(items, _) if items.len() == 1 => format!("({},)", print_type(&items[0])),
        Type::Tuple(items, _) => {
            format!("({})", items.iter().map(print_type).collect::<Vec<_>>().join(", "))
        }
    }
}

fn print_type_path(path: &TypePath) -> String {
    let mut text = join_idents(&path.segments, "::");
    if !path.args.is_empty() {
        let args: Vec<String> = path.args.iter().map(print_type).collect();
        text = format!("{text}<{}>", args.join(", "));
    }
    text
}

fn join_idents(idents: &[Ident], separator: &str) -> String {
    idents.iter().map(|i| i.node.as_str()).collect::<Vec<_>>().join(separator)
}

/// The processes of a file with every span set to zero, for comparing two
/// parses of differently laid out texts. Comments are compared apart.
fn erased(mut file: File) -> File {
    file.comments.clear();
    for process in &mut file.processes {
        erase_process(process);
    }
    file
}

fn erase_process(process: &mut Process) {
    process.span = Span::default();
    process.name.span = Span::default();
    for item in &mut process.items {
        match item {
            ProcessItem::CorrelateDefault { field, ty, span } => {
                *span = Span::default();
                field.span = Span::default();
                erase_type(ty);
            }
            ProcessItem::CorrelateEvent { event, field, span } => {
                *span = Span::default();
                event.span = Span::default();
                field.span = Span::default();
            }
            ProcessItem::Data { fields, span } => {
                *span = Span::default();
                for field in fields {
                    field.span = Span::default();
                    field.name.span = Span::default();
                    erase_type(&mut field.ty);
                    field.init.iter_mut().for_each(erase_expr);
                }
            }
            ProcessItem::Timer { name, span, .. } => {
                *span = Span::default();
                name.span = Span::default();
            }
            ProcessItem::AnyState { body, span, .. } => {
                *span = Span::default();
                body.iter_mut().for_each(erase_state_item);
            }
            ProcessItem::State(state) => {
                state.span = Span::default();
                state.name.span = Span::default();
                state.body.iter_mut().flatten().for_each(erase_state_item);
            }
        }
    }
}

fn erase_state_item(item: &mut StateItem) {
    match item {
        StateItem::Ignore { inputs, span } => {
            *span = Span::default();
            inputs.iter_mut().for_each(|i| i.span = Span::default());
        }
        StateItem::Handler(handler) => {
            handler.span = Span::default();
            handler.input.span = Span::default();
            handler.guard.iter_mut().for_each(erase_expr);
            for statement in &mut handler.body {
                match statement {
                    Statement::Send { command: path, fields, span }
                    | Statement::Publish { event: path, fields, span } => {
                        *span = Span::default();
                        erase_type_path(path);
                        fields.iter_mut().flatten().for_each(erase_field_init);
                    }
                    Statement::Set { field, value, span } => {
                        *span = Span::default();
                        field.span = Span::default();
                        erase_expr(value);
                    }
                    Statement::Schedule { timer, when, span } => {
                        *span = Span::default();
                        timer.span = Span::default();
                        match when {
                            ScheduleWhen::After(e) | ScheduleWhen::At(e) => erase_expr(e),
                        }
                    }
                    Statement::Cancel { timer: name, span }
                    | Statement::Transition { target: name, span } => {
                        *span = Span::default();
                        name.span = Span::default();
                    }
                }
            }
        }
    }
}

fn erase_field_init(field: &mut FieldInit) {
    field.name.span = Span::default();
    erase_expr(&mut field.value);
}

fn erase_type(ty: &mut Type) {
    match ty {
        Type::Path(path) => erase_type_path(path),
        Type::Tuple(items, span) => {
            *span = Span::default();
            items.iter_mut().for_each(erase_type);
        }
    }
}

fn erase_type_path(path: &mut TypePath) {
    path.span = Span::default();
    path.segments.iter_mut().for_each(|s| s.span = Span::default());
    path.args.iter_mut().for_each(erase_type);
}

fn erase_expr(e: &mut Expr) {
    e.span = Span::default();
    match &mut e.kind {
        ExprKind::Lit(_) | ExprKind::Name(_) => {}
        ExprKind::Path(segments) => segments.iter_mut().for_each(|s| s.span = Span::default()),
        ExprKind::Field(base, field) => {
            erase_expr(base);
            field.span = Span::default();
        }
        ExprKind::Call(callee, args) => {
            erase_expr(callee);
            args.iter_mut().for_each(erase_expr);
        }
        ExprKind::MethodCall(receiver, method, args) => {
            erase_expr(receiver);
            method.span = Span::default();
            args.iter_mut().for_each(erase_expr);
        }
        ExprKind::Struct(path, fields) => {
            erase_type_path(path);
            fields.iter_mut().for_each(erase_field_init);
        }
        ExprKind::Unary(_, operand) | ExprKind::Paren(operand) => erase_expr(operand),
        ExprKind::Binary(_, left, right) => {
            erase_expr(left);
            erase_expr(right);
        }
        ExprKind::List(items) => items.iter_mut().for_each(erase_expr),
    }
}
