//! Inline definitions: `process! { process P { ... } }`. The tokens are
//! written back to text with a map from text offsets to token spans, so that
//! every finding points at the DSL tokens it is about.

use std::iter::Peekable;

use proc_macro2::{Delimiter, Spacing, Span, TokenStream, TokenTree, token_stream};
use quote::quote;

/// Compiles an inline definition.
pub fn expand(input: TokenStream) -> TokenStream {
    let mut text = Text::default();
    text.write_stream(input);
    let (model, diagnostics) = switchyard_dsl::compile(&text.text);
    let errors: TokenStream = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| {
            let (start, end) = (d.span.start as usize, d.span.end as usize);
            let message = crate::short_message(d, &text.text);
            crate::error_between(text.span_at(start), text.last_span(start, end), &message)
        })
        .collect();
    let code = match &model {
        Some(model) => switchyard_dsl::codegen_with_spans(model, &|span| {
            text.last_span(span.start as usize, span.end as usize)
        }),
        None => switchyard_dsl::skeleton(&text.text),
    };
    quote!(#errors #code)
}

/// Source text rebuilt from tokens, with the span of each token's text.
#[derive(Default)]
struct Text {
    text: String,
    spans: Vec<(usize, usize, Span)>,
    /// Whether the last punctuation was joined to the next token (`-` of `->`).
    joint: bool,
}

/// A group's tokens still to write, and its closing bracket.
type Frame = (Peekable<token_stream::IntoIter>, Option<(&'static str, Span)>);

impl Text {
    /// Writes a stream, entering groups with a stack of its own rather than
    /// by recursion, so that tokens nested however deep cannot overflow the
    /// stack of rustc; the compiler then refuses what nests too deep.
    fn write_stream(&mut self, stream: TokenStream) {
        let mut stack: Vec<Frame> = vec![(stream.into_iter().peekable(), None)];
        while let Some((tokens, _)) = stack.last_mut() {
            let Some(token) = tokens.next() else {
                if let Some((_, Some((close, span)))) = stack.pop() {
                    self.separate();
                    self.push(close, span);
                }
                continue;
            };
            // A `///` comment arrives as `#[doc = "..."]`: write it back as one.
            if let TokenTree::Punct(p) = &token
                && p.as_char() == '#'
                && let Some(TokenTree::Group(group)) = tokens.peek()
                && group.delimiter() == Delimiter::Bracket
                && let Some(doc) = doc_text(group.stream())
            {
                let span = p.span();
                tokens.next();
                self.separate();
                self.push(&format!("///{doc}"), span);
                self.text.push('\n');
                continue;
            }
            match token {
                TokenTree::Group(group) => {
                    let (open, close) = match group.delimiter() {
                        Delimiter::Parenthesis => ("(", ")"),
                        Delimiter::Brace => ("{", "}"),
                        Delimiter::Bracket => ("[", "]"),
                        Delimiter::None => ("", ""),
                    };
                    self.separate();
                    self.push(open, group.span_open());
                    let close = Some((close, group.span_close()));
                    stack.push((group.stream().into_iter().peekable(), close));
                }
                token => self.write_token(token),
            }
        }
    }

    fn write_token(&mut self, token: TokenTree) {
        match token {
            TokenTree::Punct(punct) => {
                if !self.joint {
                    self.separate();
                }
                self.push(&punct.as_char().to_string(), punct.span());
                self.joint = punct.spacing() == Spacing::Joint;
                return;
            }
            TokenTree::Ident(ident) => {
                self.separate();
                self.push(&ident.to_string(), ident.span());
            }
            TokenTree::Literal(literal) => {
                self.separate();
                self.push(&literal.to_string(), literal.span());
            }
            TokenTree::Group(_) => unreachable!("`write_stream` enters groups"),
        }
        self.joint = false;
    }

    fn separate(&mut self) {
        if !self.text.is_empty() && !self.text.ends_with('\n') {
            self.text.push(' ');
        }
        self.joint = false;
    }

    fn push(&mut self, token: &str, span: Span) {
        let start = self.text.len();
        self.text.push_str(token);
        self.spans.push((start, self.text.len(), span));
    }

    /// The span of the last token that starts in `start..end`: the end of a
    /// construct whose span runs on over the whitespace after it. A range
    /// that holds no token start gives the token at or after `start`. Tokens
    /// are in text order, so both lookups are binary searches: code
    /// generation asks one for each token it writes.
    fn last_span(&self, start: usize, end: usize) -> Span {
        let before_end = self.spans.partition_point(|(token_start, _, _)| *token_start < end);
        match before_end.checked_sub(1).map(|i| self.spans[i]) {
            Some((token_start, _, span)) if token_start >= start => span,
            _ => self.span_at(start),
        }
    }

    /// The span of the token at or after `offset`.
    fn span_at(&self, offset: usize) -> Span {
        let at = self.spans.partition_point(|(_, end, _)| *end <= offset);
        self.spans.get(at).or(self.spans.last()).map_or_else(Span::call_site, |(_, _, span)| *span)
    }
}

/// The text of `doc = "..."`, if the attribute is one.
fn doc_text(stream: TokenStream) -> Option<String> {
    let mut tokens = stream.into_iter();
    match (tokens.next(), tokens.next(), tokens.next(), tokens.next()) {
        (
            Some(TokenTree::Ident(name)),
            Some(TokenTree::Punct(eq)),
            Some(TokenTree::Literal(lit)),
            None,
        ) if name == "doc" && eq.as_char() == '=' => {
            let lit: syn::LitStr = syn::parse2(TokenTree::Literal(lit).into()).ok()?;
            Some(lit.value().replace('\n', " "))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream;

    use super::expand;

    /// The expansion of an inline definition whose text is `text`.
    fn expanded(text: &str) -> String {
        let tokens: TokenStream = text.parse().expect("the text is Rust tokens");
        expand(tokens).to_string()
    }

    /// A definition whose data field has type `ty` and whose handler sets it to `expr`.
    fn definition(ty: &str, expr: &str) -> String {
        format!(
            "process P {{ correlate by id: u64 data {{ x: {ty} }} initial state A {{ on E {{ set x = {expr} -> Done }} }} final state Done }}"
        )
    }

    /// `open`, `core` and `close` nested `times` deep.
    fn nested(open: &str, core: &str, close: &str, times: usize) -> String {
        format!("{}{core}{}", open.repeat(times), close.repeat(times))
    }

    /// Each deep shape of the grammar as a whole definition: nested as deep
    /// as the limits of `docs/language.md` allow, or, when `large`, enough
    /// times to make 100 KB.
    fn shapes(large: bool) -> Vec<(&'static str, String)> {
        let times = |open: &str, close: &str, limit| {
            if large { 100_000 / (open.len() + close.len()) } else { limit }
        };
        let expr = |open, core, close, limit| {
            definition("u64", &nested(open, core, close, times(open, close, limit)))
        };
        let ty = |open, core, close, limit| {
            definition(&nested(open, core, close, times(open, close, limit)), "0")
        };
        // The braces of the process, the state and the handler take 3 of the
        // 64 brackets; those of the process and `data` 2.
        vec![
            ("prefix_not", expr("!", "true", "", 256)),
            ("sum", expr("data.x + ", "data.x", "", 255)),
            ("method_chain", expr("", "data.x", ".f()", 255)),
            ("call_chain", expr("", "f", "()", 256)),
            ("parentheses", expr("(", "1", ")", 61)),
            ("lists", expr("[", "1", "]", 61)),
            ("struct_literals", expr("S { a: ", "1", " }", 61)),
            ("generic_types", ty("Vec<", "u64", ">", 64)),
            ("tuple_types", ty("(", "u64", ",)", 62)),
        ]
    }

    /// About 100 KB of every deep shape is refused with the compiler's
    /// diagnostic, as a `compile_error!`, and never overflows the stack.
    #[test]
    fn a_hundred_kilobytes_of_every_deep_shape_is_refused() {
        for (name, text) in shapes(true) {
            assert!(text.len() >= 100_000, "{name}: {} bytes", text.len());
            let expanded = expanded(&text);
            assert!(
                expanded.contains("compile_error") && expanded.contains("[too-deep]"),
                "{name}: {}",
                &expanded[..expanded.len().min(500)]
            );
        }
    }

    /// Nested as deep as every limit allows, each shape expands to code.
    #[test]
    fn every_deep_shape_within_the_limits_expands() {
        for (name, text) in shapes(false) {
            let expanded = expanded(&text);
            assert!(!expanded.contains("compile_error"), "{name}: {expanded}");
            assert!(expanded.contains("fn decide"), "{name}");
        }
    }
}
