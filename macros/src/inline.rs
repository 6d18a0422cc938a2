//! Inline definitions: `process! { process P { ... } }`. The tokens are
//! written back to text with a map from text offsets to token spans, so that
//! every finding points at the DSL tokens it is about.

use proc_macro2::{Delimiter, Spacing, Span, TokenStream, TokenTree};
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

impl Text {
    fn write_stream(&mut self, stream: TokenStream) {
        let mut tokens = stream.into_iter().peekable();
        while let Some(token) = tokens.next() {
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
            self.write_tree(token);
        }
    }

    fn write_tree(&mut self, token: TokenTree) {
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
                self.write_stream(group.stream());
                self.separate();
                self.push(close, group.span_close());
            }
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
    /// that holds no token start gives the token at or after `start`.
    fn last_span(&self, start: usize, end: usize) -> Span {
        self.spans
            .iter()
            .rev()
            .find(|(token_start, _, _)| *token_start < end && *token_start >= start)
            .map_or_else(|| self.span_at(start), |(_, _, span)| *span)
    }

    /// The span of the token at or after `offset`.
    fn span_at(&self, offset: usize) -> Span {
        self.spans
            .iter()
            .find(|(_, end, _)| *end > offset)
            .or(self.spans.last())
            .map_or_else(Span::call_site, |(_, _, span)| *span)
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
