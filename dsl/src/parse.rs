//! Text to syntax tree. pest's `Pair` and `Rule` never leave this module:
//! the rest of the compiler sees only [`crate::ast`] and [`Diagnostic`]s, and a
//! pest error is turned into words here (what was expected, what was found,
//! and a `help:` where the fix is obvious).

use pest::Parser as _;
use pest::iterators::Pair;
use pest::pratt_parser::{Assoc, Op, PrattParser};

use crate::ast::*;
use crate::diagnostic::Diagnostic;
use crate::span::{Span, Spanned};

mod depth;

#[derive(pest_derive::Parser)]
#[grammar = "grammar.pest"]
struct Grammar;

thread_local! {
    /// The operator table, built once per thread.
    static PRATT: PrattParser<Rule> = pratt();
}

/// Parses a whole file. On a syntax error the tree is empty and the one
/// diagnostic says where and why; so it is for a text nested deeper than
/// the limits of [`depth`], with a diagnostic for each place too deep.
pub fn parse(text: &str) -> (File, Vec<Diagnostic>) {
    if let Some(diagnostic) = depth::check_text(text) {
        return (File::default(), vec![diagnostic]);
    }
    match parse_quickly(text) {
        Ok(mut pairs) => {
            let file = pairs.next().expect("`file` is the top rule");
            let too_deep = depth::check_tree(file.clone());
            if !too_deep.is_empty() {
                return (File::default(), too_deep);
            }
            let processes =
                children(file).filter(|p| p.as_rule() == Rule::process).map(process).collect();
            (File { processes, comments: comments(text) }, Vec::new())
        }
        Err(error) => {
            let diagnostic = match parse_in_detail(text) {
                Err(detailed) => syntax_error(text, &detailed),
                Ok(_) => syntax_error(text, &error),
            };
            (File::default(), vec![diagnostic])
        }
    }
}

/// pest's switch for tracking every attempt is global. Tracking makes it
/// several times slower, so texts are parsed without it, under a shared lock,
/// and only a text known to be wrong is parsed again with it, under the
/// exclusive lock, so that no other parse sees the switch on.
static DETAIL: std::sync::RwLock<()> = std::sync::RwLock::new(());

type Parsed<'i> = Result<pest::iterators::Pairs<'i, Rule>, pest::error::Error<Rule>>;

/// Whether the grammar accepts `text`, and nothing more: the baseline that
/// the benchmarks compare the whole front end with.
#[doc(hidden)]
pub fn recognise(text: &str) -> bool {
    parse_quickly(text).is_ok()
}

fn parse_quickly(text: &str) -> Parsed<'_> {
    let _shared = DETAIL.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    Grammar::parse(Rule::file, text)
}

fn parse_in_detail(text: &str) -> Parsed<'_> {
    let _exclusive = DETAIL.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    pest::set_error_detail(true);
    let parsed = Grammar::parse(Rule::file, text);
    pest::set_error_detail(false);
    parsed
}

/// Every `//` and `/* */` comment of a text that parsed, with its span. Doc
/// comments (`///`) are part of the tree instead.
fn comments(text: &str) -> Vec<Comment> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Skip a string literal, escapes included.
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'/' if text[i..].starts_with("///") && !text[i..].starts_with("////") => {
                i += text[i..].find('\n').unwrap_or(text.len() - i);
            }
            b'/' if text[i..].starts_with("//") => {
                let end = i + text[i..].find('\n').unwrap_or(text.len() - i);
                found.push(Comment {
                    text: text[i..end].trim_end().to_owned(),
                    span: Span::new(i, end),
                });
                i = end;
            }
            b'/' if text[i..].starts_with("/*") => {
                let end = text[i + 2..].find("*/").map_or(text.len(), |e| i + 2 + e + 2);
                found.push(Comment { text: text[i..end].to_owned(), span: Span::new(i, end) });
                i = end;
            }
            _ => i += 1,
        }
    }
    found
}

/// The children of a pair, without keyword tokens.
fn children<'i>(pair: Pair<'i, Rule>) -> impl Iterator<Item = Pair<'i, Rule>> {
    pair.into_inner().filter(|p| keyword_word(p.as_rule()).is_none())
}

/// The word a keyword rule matches.
fn keyword_word(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::kw_process => "process",
        Rule::kw_data => "data",
        Rule::kw_timer => "timer",
        Rule::kw_any => "any",
        Rule::kw_publish => "publish",
        Rule::kw_set => "set",
        Rule::kw_schedule => "schedule",
        Rule::kw_after => "after",
        Rule::kw_at => "at",
        Rule::kw_cancel => "cancel",
        Rule::kw_correlate => "correlate",
        Rule::kw_by => "by",
        Rule::kw_initial => "initial",
        Rule::kw_final => "final",
        Rule::kw_state => "state",
        Rule::kw_on => "on",
        Rule::kw_when => "when",
        Rule::kw_ignore => "ignore",
        Rule::kw_send => "send",
        Rule::kw_true => "true",
        Rule::kw_false => "false",
        _ => return None,
    })
}

/// The span of a pair, without the whitespace and comments that pest takes
/// in when a rule ends with an optional or repeated part that did not match:
/// a span ends at its last token.
fn span(pair: &Pair<'_, Rule>) -> Span {
    let s = pair.as_span();
    Span::new(s.start(), s.start() + without_trailing_trivia(s.as_str()).len())
}

fn without_trailing_trivia(mut text: &str) -> &str {
    loop {
        let trimmed = text.trim_end();
        let line_start = trimmed.rfind('\n').map_or(0, |i| i + 1);
        if let Some(comment) = line_comment_start(&trimmed[line_start..]) {
            text = &trimmed[..line_start + comment];
        } else if let Some(open) = trimmed.strip_suffix("*/").and_then(|t| t.rfind("/*")) {
            text = &trimmed[..open];
        } else {
            return trimmed;
        }
    }
}

/// Where a `//` comment starts on one line, outside string literals.
fn line_comment_start(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn ident(pair: Pair<'_, Rule>) -> Ident {
    Spanned::new(pair.as_str().to_owned(), span(&pair))
}

fn doc_text(pair: &Pair<'_, Rule>) -> String {
    let text = pair.as_str().trim_start_matches("///");
    text.strip_prefix(' ').unwrap_or(text).trim_end().to_owned()
}

fn process(pair: Pair<'_, Rule>) -> Process {
    let span = span(&pair);
    let mut docs = Vec::new();
    let mut name = None;
    let mut items = Vec::new();
    for inner in children(pair) {
        match inner.as_rule() {
            Rule::doc => docs.push(doc_text(&inner)),
            Rule::ident => name = Some(ident(inner)),
            Rule::correlate_default => {
                let span = self::span(&inner);
                let mut parts = children(inner);
                let field = ident(parts.next().expect("field"));
                let ty = ty(parts.next().expect("type"));
                items.push(ProcessItem::CorrelateDefault { field, ty, span });
            }
            Rule::correlate_event => {
                let span = self::span(&inner);
                let mut parts = children(inner);
                let event = ident(parts.next().expect("event"));
                let field = ident(parts.next().expect("field"));
                items.push(ProcessItem::CorrelateEvent { event, field, span });
            }
            Rule::data_block => {
                let span = self::span(&inner);
                let fields = children(inner).map(data_field).collect();
                items.push(ProcessItem::Data { fields, span });
            }
            Rule::timer_decl => {
                let span = self::span(&inner);
                let (docs, mut rest) = docs_and_rest(inner);
                let name = ident(rest.next().expect("timer name"));
                items.push(ProcessItem::Timer { docs, name, span });
            }
            Rule::any_state => {
                let span = self::span(&inner);
                let (docs, mut rest) = docs_and_rest(inner);
                let body = children(rest.next().expect("any state body")).map(state_item).collect();
                items.push(ProcessItem::AnyState { docs, body, span });
            }
            Rule::state => items.push(ProcessItem::State(state(inner))),
            rule => unreachable!("process item {rule:?}"),
        }
    }
    Process { docs, name: name.expect("process name"), items, span }
}

/// The doc comments at the start of a pair, and the children after them.
fn docs_and_rest<'i>(pair: Pair<'i, Rule>) -> (Vec<String>, impl Iterator<Item = Pair<'i, Rule>>) {
    let mut docs = Vec::new();
    let mut rest = children(pair).peekable();
    while let Some(doc) = rest.next_if(|p| p.as_rule() == Rule::doc) {
        docs.push(doc_text(&doc));
    }
    (docs, rest)
}

fn data_field(pair: Pair<'_, Rule>) -> DataField {
    let span = span(&pair);
    let (docs, mut rest) = docs_and_rest(pair);
    let name = ident(rest.next().expect("field name"));
    let ty = ty(rest.next().expect("field type"));
    let init = rest.next().map(expr);
    DataField { docs, name, ty, init, span }
}

fn state(pair: Pair<'_, Rule>) -> State {
    let span = span(&pair);
    let mut docs = Vec::new();
    let mut kind = StateKind::Normal;
    let mut name = None;
    let mut body = None;
    for inner in children(pair) {
        match inner.as_rule() {
            Rule::doc => docs.push(doc_text(&inner)),
            Rule::state_modifier => {
                kind = match inner.into_inner().next().map(|p| p.as_rule()) {
                    Some(Rule::kw_initial) => StateKind::Initial,
                    _ => StateKind::Final,
                }
            }
            Rule::ident => name = Some(ident(inner)),
            Rule::state_body => body = Some(children(inner).map(state_item).collect()),
            rule => unreachable!("state part {rule:?}"),
        }
    }
    State { docs, kind, name: name.expect("state name"), body, span }
}

fn state_item(pair: Pair<'_, Rule>) -> StateItem {
    match pair.as_rule() {
        Rule::handler => StateItem::Handler(handler(pair)),
        Rule::ignore => {
            let span = span(&pair);
            StateItem::Ignore { inputs: children(pair).map(ident).collect(), span }
        }
        rule => unreachable!("state item {rule:?}"),
    }
}

fn handler(pair: Pair<'_, Rule>) -> Handler {
    let span = span(&pair);
    let mut docs = Vec::new();
    let mut input = None;
    let mut guard = None;
    let mut body = Vec::new();
    for inner in children(pair) {
        match inner.as_rule() {
            Rule::doc => docs.push(doc_text(&inner)),
            Rule::ident => input = Some(ident(inner)),
            Rule::guard => guard = children(inner).next().map(expr),
            Rule::send | Rule::publish | Rule::set | Rule::schedule | Rule::cancel => {
                body.push(statement(inner))
            }
            Rule::transition => {
                let span = self::span(&inner);
                let target = ident(children(inner).next().expect("target"));
                body.push(Statement::Transition { target, span });
            }
            rule => unreachable!("handler part {rule:?}"),
        }
    }
    Handler { docs, input: input.expect("handler input"), guard, body, span }
}

fn statement(pair: Pair<'_, Rule>) -> Statement {
    let span = span(&pair);
    let rule = pair.as_rule();
    let mut parts = children(pair);
    match rule {
        Rule::send | Rule::publish => {
            let path = type_path(parts.next().expect("type"));
            let fields = parts.next().map(|inits| children(inits).map(field_init).collect());
            if rule == Rule::send {
                Statement::Send { command: path, fields, span }
            } else {
                Statement::Publish { event: path, fields, span }
            }
        }
        Rule::set => {
            let field = ident(parts.next().expect("field"));
            let value = expr(parts.next().expect("value"));
            Statement::Set { field, value, span }
        }
        Rule::schedule => {
            let timer = ident(parts.next().expect("timer"));
            let when = parts.next().expect("when");
            let is_after = when.as_rule() == Rule::schedule_after;
            let value = expr(children(when).next().expect("time"));
            let when = if is_after { ScheduleWhen::After(value) } else { ScheduleWhen::At(value) };
            Statement::Schedule { timer, when, span }
        }
        Rule::cancel => Statement::Cancel { timer: ident(parts.next().expect("timer")), span },
        rule => unreachable!("statement {rule:?}"),
    }
}

fn field_init(pair: Pair<'_, Rule>) -> FieldInit {
    let mut parts = children(pair);
    let name = ident(parts.next().expect("field name"));
    let value = expr(parts.next().expect("field value"));
    FieldInit { name, value }
}

fn ty(pair: Pair<'_, Rule>) -> Type {
    match pair.as_rule() {
        Rule::type_path => Type::Path(type_path(pair)),
        Rule::tuple_ty => {
            let span = span(&pair);
            Type::Tuple(children(pair).map(ty).collect(), span)
        }
        rule => unreachable!("type {rule:?}"),
    }
}

fn type_path(pair: Pair<'_, Rule>) -> TypePath {
    let span = span(&pair);
    let mut segments = Vec::new();
    let mut args = Vec::new();
    for inner in children(pair) {
        match inner.as_rule() {
            Rule::raw_ident => segments.push(ident(inner)),
            Rule::generic_args => args = children(inner).map(ty).collect(),
            rule => unreachable!("type path part {rule:?}"),
        }
    }
    TypePath { segments, args, span }
}

fn pratt() -> PrattParser<Rule> {
    // Lowest precedence first, as in Rust's reference.
    PrattParser::new()
        .op(Op::infix(Rule::op_or, Assoc::Left))
        .op(Op::infix(Rule::op_and, Assoc::Left))
        .op(Op::infix(Rule::op_eq, Assoc::Left)
            | Op::infix(Rule::op_ne, Assoc::Left)
            | Op::infix(Rule::op_lt, Assoc::Left)
            | Op::infix(Rule::op_le, Assoc::Left)
            | Op::infix(Rule::op_gt, Assoc::Left)
            | Op::infix(Rule::op_ge, Assoc::Left))
        .op(Op::infix(Rule::op_add, Assoc::Left) | Op::infix(Rule::op_sub, Assoc::Left))
        .op(Op::infix(Rule::op_mul, Assoc::Left)
            | Op::infix(Rule::op_div, Assoc::Left)
            | Op::infix(Rule::op_rem, Assoc::Left))
        .op(Op::prefix(Rule::op_not) | Op::prefix(Rule::op_neg))
        .op(Op::postfix(Rule::member) | Op::postfix(Rule::call_args))
}

fn expr(pair: Pair<'_, Rule>) -> Expr {
    PRATT.with(|pratt| {
        pratt
            .map_primary(primary)
            .map_prefix(|op, operand| {
                let span = span(&op).to(operand.span);
                let op = match op.as_rule() {
                    Rule::op_not => UnaryOp::Not,
                    _ => UnaryOp::Neg,
                };
                Expr { kind: ExprKind::Unary(op, Box::new(operand)), span }
            })
            .map_postfix(|operand, op| {
                let span = operand.span.to(self::span(&op));
                let kind = match op.as_rule() {
                    Rule::member => {
                        let mut parts = children(op);
                        let name = ident(parts.next().expect("member name"));
                        match parts.next() {
                            Some(call) => ExprKind::MethodCall(Box::new(operand), name, args(call)),
                            None => ExprKind::Field(Box::new(operand), name),
                        }
                    }
                    _ => ExprKind::Call(Box::new(operand), args(op)),
                };
                Expr { kind, span }
            })
            .map_infix(|left, op, right| {
                let op = match op.as_rule() {
                    Rule::op_or => BinaryOp::Or,
                    Rule::op_and => BinaryOp::And,
                    Rule::op_eq => BinaryOp::Eq,
                    Rule::op_ne => BinaryOp::Ne,
                    Rule::op_lt => BinaryOp::Lt,
                    Rule::op_le => BinaryOp::Le,
                    Rule::op_gt => BinaryOp::Gt,
                    Rule::op_ge => BinaryOp::Ge,
                    Rule::op_add => BinaryOp::Add,
                    Rule::op_sub => BinaryOp::Sub,
                    Rule::op_mul => BinaryOp::Mul,
                    Rule::op_div => BinaryOp::Div,
                    _ => BinaryOp::Rem,
                };
                let span = left.span.to(right.span);
                Expr { kind: ExprKind::Binary(op, Box::new(left), Box::new(right)), span }
            })
            .parse(pair.into_inner())
    })
}

fn args(pair: Pair<'_, Rule>) -> Vec<Expr> {
    children(pair).map(expr).collect()
}

fn primary(pair: Pair<'_, Rule>) -> Expr {
    let span = span(&pair);
    let kind = match pair.as_rule() {
        Rule::int => {
            let digits: String = pair.as_str().chars().filter(|c| *c != '_').collect();
            // The grammar admits only digits; an overflowing literal becomes the
            // largest value and rustc reports it as out of range for its type.
            ExprKind::Lit(Lit::Int(digits.parse().unwrap_or(u128::MAX)))
        }
        Rule::float => ExprKind::Lit(Lit::Float(pair.as_str().to_owned())),
        Rule::duration => {
            let text = pair.as_str();
            let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
            let unit = match &text[digits_end..] {
                "ms" => DurationUnit::Millis,
                "s" => DurationUnit::Seconds,
                "m" => DurationUnit::Minutes,
                "h" => DurationUnit::Hours,
                _ => DurationUnit::Days,
            };
            // Overflow saturates; the checker reports durations too long to represent.
            ExprKind::Lit(Lit::Duration(text[..digits_end].parse().unwrap_or(u64::MAX), unit))
        }
        Rule::string => {
            let quoted = pair.as_str();
            ExprKind::Lit(Lit::Str(quoted[1..quoted.len() - 1].to_owned()))
        }
        Rule::list => ExprKind::List(children(pair).map(expr).collect()),
        Rule::paren => ExprKind::Paren(Box::new(expr(children(pair).next().expect("inner")))),
        Rule::path_expr => {
            let mut parts = children(pair);
            let path = parts.next().expect("path");
            let path_span = self::span(&path);
            let mut segments: Vec<Ident> = children(path).map(ident).collect();
            match parts.next() {
                Some(body) => {
                    let fields = children(body).map(field_init).collect();
                    ExprKind::Struct(
                        TypePath { segments, args: Vec::new(), span: path_span },
                        fields,
                    )
                }
                None if segments.len() == 1 => match segments.pop().expect("one segment").node {
                    // `true` and `false` are keywords, so never a Rust name.
                    word if word == "true" => ExprKind::Lit(Lit::Bool(true)),
                    word if word == "false" => ExprKind::Lit(Lit::Bool(false)),
                    name => ExprKind::Name(name),
                },
                None => ExprKind::Path(segments),
            }
        }
        Rule::expr => return expr(pair),
        rule => unreachable!("primary {rule:?}"),
    };
    Expr { kind, span }
}

/// Turns a pest error into a diagnostic in words.
fn syntax_error(text: &str, error: &pest::error::Error<Rule>) -> Diagnostic {
    let offset = match error.location {
        pest::error::InputLocation::Pos(pos) => pos,
        pest::error::InputLocation::Span((start, _)) => start,
    };
    let mut expected: Vec<String> = Vec::new();
    let mut push = |word: String| {
        if !expected.contains(&word) {
            expected.push(word);
        }
    };
    if let pest::error::ErrorVariant::ParsingError { positives, .. } = &error.variant {
        for rule in positives {
            if let Some(word) = describe_rule(*rule) {
                push(word.to_owned());
            }
        }
    }
    if let Some(attempts) = error.parse_attempts() {
        for token in attempts.expected_tokens() {
            // `ParsingToken` is not exported; its display is the literal for
            // literals, `a..z` for ranges and `BUILTIN_RULE` for the rest.
            // Words come from keyword rules already, so only punctuation is
            // taken from here.
            let token = token.to_string();
            let is_range = token.chars().count() == 4 && token.chars().nth(1) == Some('.');
            let is_word = token.chars().all(|c| c.is_alphanumeric() || c == '_');
            if !token.trim().is_empty() && !is_word && !is_range && !token.starts_with('/') {
                push(format!("`{token}`"));
            }
        }
    }
    // What can start an expression is said by "an expression".
    if expected.iter().any(|e| e == "an expression") {
        expected.retain(|e| !matches!(e.as_str(), "`!`" | "`\"`" | "`(`" | "`-`" | "`[`"));
    }
    // Doc comments may stand almost anywhere; mentioning them only adds noise.
    if expected.len() > 1 {
        expected.retain(|word| word != "a doc comment");
    }

    let (mut found, found_len) = found_at(text, offset);
    if is_keyword(found.trim_matches('`')) && expected.iter().any(|e| e == "a name") {
        found = format!("the keyword {found}");
    }
    let message = if expected.is_empty() {
        format!("unexpected {found}")
    } else {
        format!("expected {}, found {found}", join_or(&expected))
    };
    let span = Span::new(offset, offset + found_len);
    let mut diagnostic = Diagnostic::error("syntax", span, message);
    if let Some(help) = syntax_help(text, offset, &expected) {
        diagnostic = diagnostic.with_help(help);
    }
    diagnostic
}

/// A human name for what a rule matches, or `None` for rules that say nothing useful.
fn describe_rule(rule: Rule) -> Option<&'static str> {
    if let Some(word) = keyword_word(rule) {
        return Some(match word {
            "process" => "`process`",
            "correlate" => "`correlate`",
            "by" => "`by`",
            "initial" => "`initial`",
            "final" => "`final`",
            "state" => "`state`",
            "on" => "`on`",
            "when" => "`when`",
            "ignore" => "`ignore`",
            "send" => "`send`",
            "data" => "`data`",
            "timer" => "`timer`",
            "any" => "`any`",
            "publish" => "`publish`",
            "set" => "`set`",
            "schedule" => "`schedule`",
            "after" => "`after`",
            "at" => "`at`",
            "cancel" => "`cancel`",
            _ => "an expression",
        });
    }
    Some(match rule {
        Rule::EOI => "end of file",
        Rule::process => "`process`",
        Rule::doc => "a doc comment",
        Rule::ident | Rule::raw_ident => "a name",
        Rule::correlate_default | Rule::correlate_event => "`correlate`",
        Rule::state | Rule::state_modifier => "a state",
        Rule::state_body => "`{`",
        Rule::handler => "`on`",
        Rule::guard => "`when`",
        Rule::ignore => "`ignore`",
        Rule::send => "`send`",
        Rule::publish => "`publish`",
        Rule::set => "`set`",
        Rule::schedule => "`schedule`",
        Rule::schedule_after => "`after`",
        Rule::schedule_at => "`at`",
        Rule::cancel => "`cancel`",
        Rule::data_block => "`data`",
        Rule::data_field => "a data field",
        Rule::timer_decl => "`timer`",
        Rule::any_state => "`any state`",
        Rule::duration => "an expression",
        Rule::transition => "`->`",
        Rule::field_inits => "`{`",
        Rule::field_init | Rule::struct_body => "a field",
        Rule::tuple_ty | Rule::type_path => "a type",
        Rule::generic_args => "`<`",
        Rule::expr
        | Rule::int
        | Rule::float
        | Rule::string
        | Rule::path_expr
        | Rule::list
        | Rule::paren
        | Rule::expr_path => "an expression",
        Rule::op_not | Rule::op_neg => "an expression",
        Rule::member => "`.`",
        Rule::call_args => "`(`",
        Rule::op_or
        | Rule::op_and
        | Rule::op_eq
        | Rule::op_ne
        | Rule::op_le
        | Rule::op_ge
        | Rule::op_lt
        | Rule::op_gt
        | Rule::op_add
        | Rule::op_sub
        | Rule::op_mul
        | Rule::op_div
        | Rule::op_rem => "an operator",
        _ => return None,
    })
}

/// What stands at `offset`, in words, and how many bytes of it to underline.
fn found_at(text: &str, offset: usize) -> (String, usize) {
    let rest = text.get(offset..).unwrap_or("");
    let Some(first) = rest.chars().next() else {
        return ("end of file".to_owned(), 0);
    };
    if first.is_alphanumeric() || first == '_' {
        let word: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let len = word.len();
        return (format!("`{word}`"), len);
    }
    for two in ["->", "=>", "::", "==", "!=", "<=", ">=", "&&", "||"] {
        if rest.starts_with(two) {
            return (format!("`{two}`"), 2);
        }
    }
    (format!("`{first}`"), first.len_utf8())
}

fn is_keyword(word: &str) -> bool {
    Grammar::parse(Rule::keyword, word).is_ok_and(|pairs| pairs.as_str() == word)
}

/// A fix for the mistakes whose fix is obvious.
fn syntax_help(text: &str, offset: usize, expected: &[String]) -> Option<String> {
    let rest = text.get(offset..).unwrap_or("");
    if rest.starts_with("=>") {
        return Some("a transition is written `-> State`".to_owned());
    }
    if rest.trim().is_empty() && expected.iter().any(|e| e == "`}`") {
        return Some("add the missing `}`".to_owned());
    }
    let word: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    if is_keyword(&word) && expected.iter().any(|e| e == "a name") {
        return Some(format!("`{word}` is a keyword of the language; choose another name"));
    }
    if !word.is_empty() {
        for candidate in expected {
            let keyword = candidate.trim_matches('`');
            if keyword.chars().all(|c| c.is_ascii_lowercase())
                && keyword != word
                && edit_distance(keyword, &word) <= 2
            {
                return Some(format!("did you mean `{keyword}`?"));
            }
        }
    }
    None
}

/// Levenshtein distance, for "did you mean" suggestions.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

fn join_or(words: &[String]) -> String {
    match words {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}
