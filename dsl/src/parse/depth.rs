//! How deep a text may nest. Every stage after parsing walks the tree by
//! recursion (the checker, code generation, the formatter, the graphs, and
//! dropping the tree itself), and pest recurses while it parses brackets and
//! generic arguments, so a tree deeper than the stack would abort the process,
//! and through `process!` rustc. The limits below are checked before any
//! recursive stage sees the text: brackets and `<` on the text itself, before
//! pest runs; the depth of every expression and type on pest's output, before
//! the tree is built. Both passes are loops or recurse only as deep as the
//! limits already checked allow. `docs/language.md` documents the limits.

use pest::iterators::Pair;

use super::{PRATT, Rule, span};
use crate::diagnostic::Diagnostic;
use crate::span::Span;

/// Brackets `(`, `[` and `{` nest at most this deep.
const MAX_BRACKETS: usize = 64;
/// At most this many `<` may be open at once; see [`check_text`].
const MAX_ANGLES: usize = 256;
/// The tree of an expression is at most this deep.
const MAX_EXPR_DEPTH: u32 = 256;
/// The tree of a type is at most this deep.
const MAX_TYPE_DEPTH: u32 = 64;

/// Refuses, before pest recurses over them, brackets nested more than
/// [`MAX_BRACKETS`] deep and more than [`MAX_ANGLES`] `<` open at once.
/// Comments and string literals are skipped. `<` is not a bracket, since it
/// is also a comparison: it counts as open until a `>` closes it or a token
/// that cannot stand in a type (anything but names, `::`, `,`, `(` and `)`)
/// ends the run, so that comparisons never add up across a file.
pub(super) fn check_text(text: &str) -> Option<Diagnostic> {
    let bytes = text.as_bytes();
    let (mut brackets, mut angles) = (0usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        let next = bytes.get(i + 1).copied();
        let mut len = 1;
        match bytes[i] {
            b'"' => {
                len = string_len(&bytes[i..]);
                angles = 0;
            }
            b'/' if next == Some(b'/') => {
                len = text[i..].find('\n').unwrap_or(text.len() - i);
            }
            b'/' if next == Some(b'*') => {
                len = text[i + 2..].find("*/").map_or(text.len() - i, |end| end + 4);
            }
            b'(' | b'[' | b'{' => {
                brackets += 1;
                if brackets > MAX_BRACKETS {
                    return Some(too_many_brackets(Span::new(i, i + 1)));
                }
                if bytes[i] != b'(' {
                    angles = 0;
                }
            }
            b')' | b']' | b'}' => {
                brackets = brackets.saturating_sub(1);
                if bytes[i] != b')' {
                    angles = 0;
                }
            }
            b'<' | b'>' | b'-' | b'!' if next == Some(b'=') || next == Some(b'>') => {
                // `<=`, `>=`, `!=`, `->` and `>>` (read as two closing `>`).
                if bytes[i] == b'>' {
                    angles = angles.saturating_sub(1);
                } else {
                    len = 2;
                    angles = 0;
                }
            }
            b'<' => {
                angles += 1;
                if angles > MAX_ANGLES {
                    return Some(too_many_angles(Span::new(i, i + 1)));
                }
            }
            b'>' => angles = angles.saturating_sub(1),
            b':' if next == Some(b':') => len = 2,
            b',' | b' ' | b'\t' | b'\r' | b'\n' => {}
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                len = bytes[i..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                    .count();
            }
            _ => angles = 0,
        }
        i += len;
    }
    None
}

/// The length of the string literal at the start of `bytes`, escapes
/// included; an unterminated one runs to the end.
fn string_len(bytes: &[u8]) -> usize {
    let mut i = 1;
    while i < bytes.len() && bytes[i] != b'"' {
        i += if bytes[i] == b'\\' { 2 } else { 1 };
    }
    (i + 1).min(bytes.len())
}

fn too_many_brackets(span: Span) -> Diagnostic {
    Diagnostic::error("too-deep", span, format!("brackets nested more than {MAX_BRACKETS} deep"))
        .with_help("split the expression with `set` into steps, or move the computation into a Rust function")
}

fn too_many_angles(span: Span) -> Diagnostic {
    Diagnostic::error("too-deep", span, format!("more than {MAX_ANGLES} `<` open at once"))
        .with_help(format!(
            "generic arguments nest at most {MAX_TYPE_DEPTH} deep; use a type alias declared in Rust"
        ))
}

/// The depth of a tree, or the token where it grows too deep.
type Depth = Result<u32, Span>;

/// Refuses every expression deeper than [`MAX_EXPR_DEPTH`] and every type
/// deeper than [`MAX_TYPE_DEPTH`] in a file that pest accepted, before the
/// tree is built. Each outermost expression or type is measured once.
pub(super) fn check_tree(file: Pair<'_, Rule>) -> Vec<Diagnostic> {
    let mut found = Vec::new();
    let mut measured_until = 0;
    for pair in file.into_inner().flatten() {
        let start = pair.as_span().start();
        if start < measured_until {
            continue;
        }
        let end = pair.as_span().end();
        // Each level of a tree takes at least one byte of text, so a text no
        // longer than a limit cannot exceed it: nearly every expression and
        // type is passed without a walk.
        let short = |limit| end - start <= limit as usize;
        let refused = match pair.as_rule() {
            Rule::expr if short(MAX_EXPR_DEPTH) => None,
            Rule::expr => expr_depth(pair).err().map(too_deep_expr),
            Rule::type_path | Rule::tuple_ty if short(MAX_TYPE_DEPTH) => None,
            Rule::type_path | Rule::tuple_ty => type_depth(pair).err().map(too_deep_type),
            _ => continue,
        };
        measured_until = end;
        found.extend(refused);
    }
    found
}

/// The depth of an expression's tree, as the parser will build it: a
/// literal or a name is 0; each operator, field access, call, method call,
/// list, struct literal and pair of parentheses is one more than the deepest
/// of its parts. It recurses only into brackets, which [`check_text`] has
/// bounded; a run of prefix operators, over which pest's Pratt parser
/// recurses, is measured before the Pratt parser sees it.
fn expr_depth(pair: Pair<'_, Rule>) -> Depth {
    let mut run = 0;
    for part in pair.clone().into_inner() {
        run = if matches!(part.as_rule(), Rule::op_not | Rule::op_neg) { run + 1 } else { 0 };
        if run > MAX_EXPR_DEPTH {
            return Err(span(&part));
        }
    }
    PRATT.with(|pratt| {
        pratt
            .map_primary(primary_depth)
            .map_prefix(|op, operand| deeper(operand?, &op))
            .map_postfix(|operand, op| {
                let operand = operand?;
                let args = op.clone().into_inner().filter(|p| p.as_rule() == Rule::call_args);
                let args = match op.as_rule() {
                    Rule::call_args => deepest(op.clone().into_inner())?,
                    _ => args.map(|call| deepest(call.into_inner())).try_fold(0, max)?,
                };
                deeper(operand.max(args), &op)
            })
            .map_infix(|left, op, right| deeper(left?.max(right?), &op))
            .parse(pair.into_inner())
    })
}

fn max(a: u32, b: Depth) -> Depth {
    Ok(a.max(b?))
}

fn primary_depth(pair: Pair<'_, Rule>) -> Depth {
    match pair.as_rule() {
        Rule::expr => expr_depth(pair),
        Rule::paren | Rule::list => {
            let inner = deepest(pair.clone().into_inner())?;
            deeper(inner, &pair)
        }
        Rule::path_expr => {
            match pair.clone().into_inner().find(|p| p.as_rule() == Rule::struct_body) {
                Some(body) => {
                    let values = body.into_inner().filter_map(|field| field.into_inner().nth(1));
                    let inner = deepest(values)?;
                    deeper(inner, &pair)
                }
                None => Ok(0),
            }
        }
        _ => Ok(0),
    }
}

/// The depth of the deepest expression among `pairs`, 0 for none.
fn deepest<'i>(pairs: impl Iterator<Item = Pair<'i, Rule>>) -> Depth {
    pairs.filter(|p| p.as_rule() == Rule::expr).map(expr_depth).try_fold(0, max)
}

/// One level above `depth`, the level of `op`, unless that is too deep.
fn deeper(depth: u32, op: &Pair<'_, Rule>) -> Depth {
    if depth < MAX_EXPR_DEPTH { Ok(depth + 1) } else { Err(head(op)) }
}

/// The first token of a pair: an operator, or the `.`, `(`, `[` or type
/// name that opens a longer construct.
fn head(pair: &Pair<'_, Rule>) -> Span {
    let span = span(pair);
    let first = match pair.as_rule() {
        Rule::path_expr | Rule::type_path => {
            pair.clone().into_inner().flatten().next().map(|p| super::span(&p))
        }
        _ if pair.as_str().len() <= 2 => Some(span),
        _ => None,
    };
    first.unwrap_or_else(|| Span::new(span.start as usize, span.start as usize + 1))
}

fn too_deep_expr(span: Span) -> Diagnostic {
    Diagnostic::error(
        "too-deep",
        span,
        format!("expression nested more than {MAX_EXPR_DEPTH} deep"),
    )
    .with_span_label(format!("this is level {} of the expression", MAX_EXPR_DEPTH + 1))
    .with_help("split the computation with `set` into steps, or move it into a Rust function")
}

/// The depth of a type's tree: a path without generic arguments is 0, one
/// with them, and a tuple, one more than their deepest. It recurses as deep
/// as the `<` and brackets that [`check_text`] has bounded.
fn type_depth(pair: Pair<'_, Rule>) -> Depth {
    let parts = match pair.as_rule() {
        Rule::tuple_ty => pair.clone().into_inner(),
        _ => match pair.clone().into_inner().find(|p| p.as_rule() == Rule::generic_args) {
            Some(args) => args.into_inner(),
            None => return Ok(0),
        },
    };
    let inner = parts.map(type_depth).try_fold(0, max)?;
    if inner < MAX_TYPE_DEPTH { Ok(inner + 1) } else { Err(head(&pair)) }
}

fn too_deep_type(span: Span) -> Diagnostic {
    Diagnostic::error("too-deep", span, format!("type nested more than {MAX_TYPE_DEPTH} deep"))
        .with_help("declare a type alias in Rust and name it here")
}
