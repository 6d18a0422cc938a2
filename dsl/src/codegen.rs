//! Code generation: a checked [`Model`] to Rust tokens. It cannot fail: if it
//! wanted to report an error, a check would be missing.
//!
//! Generated code reaches the runtime only through `::switchyard::__private`,
//! and wraps its trait impls in `const _: () = { ... };`. Every token that
//! comes from the source (names, types, expressions) carries the span the
//! caller maps it to, so that the Rust compiler's own errors in generated code
//! (a field of the wrong type in a `send`) point at the DSL text that caused
//! them. Internal locals use mixed-site spans, so that no name a user writes in
//! an expression can capture them.
//!
//! [`skeleton`] is the other output: when the checker refused a file, the
//! types it would have declared, with bodies that never run, so that the user
//! sees the checker's findings and not a cascade of "cannot find type" errors.

use proc_macro2::{Delimiter, Group, Ident, Literal, Punct, Spacing, Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};

use crate::ast::{self, BinaryOp, ExprKind, Lit, StateKind, UnaryOp};
use crate::model::*;
use crate::span;

/// The Rust items of every process in the model, every token at the call site.
pub fn codegen(model: &Model) -> TokenStream {
    codegen_with_spans(model, &|_| Span::call_site())
}

/// The Rust items of every process in the model, each token that comes from
/// the source at `span_of(its DSL span)`.
///
/// `span_of` is asked about single tokens: the first and last byte of a
/// construct, never a span to be joined, since joining spans needs a nightly
/// compiler.
pub fn codegen_with_spans(model: &Model, span_of: &dyn Fn(span::Span) -> Span) -> TokenStream {
    let g = Gen { span_of };
    model.processes.iter().map(|p| process(&g, p)).collect()
}

/// How source spans become token spans.
struct Gen<'a> {
    span_of: &'a dyn Fn(span::Span) -> Span,
}

impl Gen<'_> {
    /// The span of the first token of a construct.
    fn lo(&self, s: span::Span) -> Span {
        (self.span_of)(span::Span { start: s.start, end: s.start.saturating_add(1).min(s.end) })
    }

    /// The span of the last token of a construct.
    fn hi(&self, s: span::Span) -> Span {
        (self.span_of)(span::Span { start: s.end.saturating_sub(1).max(s.start), end: s.end })
    }

    fn ident(&self, name: &ast::Ident) -> Ident {
        rust_ident(&name.node, self.lo(name.span))
    }
}

/// A Rust identifier; a Rust keyword that the language allows as a name
/// (`type`, `match`) is written as a raw identifier.
fn rust_ident(name: &str, span: Span) -> Ident {
    if is_rust_keyword(name) { Ident::new_raw(name, span) } else { Ident::new(name, span) }
}

fn is_rust_keyword(name: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "as", "async", "await", "break", "const", "continue", "dyn", "else", "enum", "extern",
        "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move",
        "mut", "pub", "ref", "return", "static", "struct", "trait", "true", "type", "unsafe",
        "use", "where", "while", "abstract", "become", "box", "do", "final", "macro", "override",
        "priv", "try", "typeof", "unsized", "virtual", "yield",
    ];
    KEYWORDS.contains(&name)
}

/// The locals of `decide`, out of reach of the names users write.
struct Locals {
    state: Ident,
    input: Ident,
    ctx: Ident,
    next_data: Ident,
}

impl Locals {
    fn new() -> Locals {
        let local = |name: &str| Ident::new(name, Span::mixed_site());
        Locals {
            state: local("state"),
            input: local("input"),
            ctx: local("ctx"),
            next_data: local("next_data"),
        }
    }
}

/// The names of the items generated for one process.
struct Names {
    process: Ident,
    state: Ident,
    data: Ident,
    input: Ident,
    output: Ident,
    timer: Ident,
}

impl Names {
    fn new(process: Ident) -> Names {
        Names {
            state: format_ident!("{process}State"),
            data: format_ident!("{process}Data"),
            input: format_ident!("{process}Input"),
            output: format_ident!("{process}Output"),
            timer: format_ident!("{process}Timer"),
            process,
        }
    }

    /// The constants and associated types of `impl Process for P`, which the
    /// full code and the skeleton share.
    fn process_items(&self, name: &str, initial: &Ident, key: &TokenStream) -> TokenStream {
        let Names { state, data, input, output, timer, .. } = self;
        quote! {
            const NAME: &'static str = #name;
            const INITIAL: #state = #state::#initial;

            type State = #state;
            type Data = #data;
            type Key = #key;
            type Input = #input;
            type Output = #output;
            type Timer = #timer;
        }
    }
}

fn private() -> TokenStream {
    quote!(::switchyard::__private)
}

fn process(g: &Gen<'_>, p: &ProcessModel) -> TokenStream {
    let names = Names::new(g.ident(&p.name));
    let Names { process, state, data, input, output, timer } = &names;
    let locals = Locals::new();
    let private = private();
    let docs = doc_attrs(&p.docs);
    let key = ty(g, &p.key_type);
    let process_name = p.name.node.as_str();

    let state_variants: Vec<Ident> = p.states.iter().map(|s| g.ident(&s.name)).collect();
    let state_docs: Vec<TokenStream> = p.states.iter().map(|s| doc_attrs(&s.docs)).collect();
    let initial = &state_variants[p.initial];
    let process_items = names.process_items(process_name, initial, &key);
    let finals: Vec<&Ident> = p
        .states
        .iter()
        .zip(&state_variants)
        .filter(|(s, _)| s.kind == StateKind::Final)
        .map(|(_, v)| v)
        .collect();
    let is_final = if finals.is_empty() {
        quote!(false)
    } else {
        quote!(::core::matches!(state, #(#state::#finals)|*))
    };

    // Data: the fields, and `Default` from their initial values.
    let field_names: Vec<Ident> = p.data.iter().map(|f| g.ident(&f.name)).collect();
    let field_types: Vec<TokenStream> = p.data.iter().map(|f| ty(g, &f.ty)).collect();
    let field_docs: Vec<TokenStream> = p.data.iter().map(|f| doc_attrs(&f.docs)).collect();
    let field_inits: Vec<TokenStream> = p
        .data
        .iter()
        .map(|f| match &f.init {
            Some(init) => expr(g, init, Mode::Value),
            None => quote!(::core::default::Default::default()),
        })
        .collect();

    let timer_variants: Vec<Ident> = p.timers.iter().map(|t| g.ident(&t.name)).collect();
    let timer_docs: Vec<TokenStream> = p.timers.iter().map(|t| doc_attrs(&t.docs)).collect();

    let events: Vec<(Ident, &ast::Ident)> = p
        .inputs
        .iter()
        .filter_map(|i| match &i.kind {
            InputKind::Event { key_field } => Some((g.ident(&i.name), key_field)),
            InputKind::Timer(_) => None,
        })
        .collect();
    let event_types: Vec<&Ident> = events.iter().map(|(ty, _)| ty).collect();
    let handles = events.iter().map(|(event, field)| handles(g, &names, &key, p, event, field));
    let key_field_markers = key_field_markers(p);

    let output_types: Vec<TokenStream> = p.outputs.iter().map(|o| type_path(g, &o.path)).collect();
    let output_variants: Vec<Ident> = p.outputs.iter().map(output_variant).collect();
    let output_traits: Vec<TokenStream> = p
        .outputs
        .iter()
        .map(|o| match o.kind {
            OutputKind::Command => quote!(#private::Command),
            OutputKind::Event => quote!(#private::Event),
        })
        .collect();
    let output_kinds: Vec<TokenStream> = p
        .outputs
        .iter()
        .map(|o| match o.kind {
            OutputKind::Command => quote!(#private::MessageKind::Command),
            OutputKind::Event => quote!(#private::MessageKind::Event),
        })
        .collect();
    let (output_name, output_kind, output_body) = if p.outputs.is_empty() {
        (quote!(match *self {}), quote!(match *self {}), quote!(match self {}))
    } else {
        (
            quote!(match self { #(#output::#output_variants(_) => <#output_types as #output_traits>::NAME,)* }),
            quote!(match self { #(#output::#output_variants(_) => #output_kinds,)* }),
            quote!(match self { #(#output::#output_variants(message) => #private::Body::value(message),)* }),
        )
    };

    let Locals { state: state_local, input: input_local, ctx, .. } = &locals;
    // One arm per handled (state, input) pair, and one arm for every pair
    // that changes nothing, as an or-pattern with each pair spelt out: still
    // no wildcard, and the compiler sees one shared body instead of many.
    let mut arms = Vec::new();
    let mut unchanged = Vec::new();
    for (s, variant) in p.states.iter().zip(&state_variants) {
        for (handling, input_model) in s.table.iter().zip(&p.inputs) {
            let input_variant = g.ident(&input_model.name);
            let is_timer = matches!(input_model.kind, InputKind::Timer(_));
            match handling {
                Handling::Handled(handlers) => {
                    let pattern = if is_timer {
                        quote!(#input::#input_variant)
                    } else {
                        quote!(#input::#input_variant(event))
                    };
                    let body = handled(g, p, &names, &locals, handlers);
                    arms.push(quote!((#state::#variant, #pattern) => { #body }));
                }
                Handling::Ignored(_) | Handling::NotPending | Handling::Completed => {
                    let pattern = if is_timer {
                        quote!(#input::#input_variant)
                    } else {
                        quote!(#input::#input_variant(_))
                    };
                    unchanged.push(quote!((#state::#variant, #pattern)));
                }
            }
        }
    }
    if !unchanged.is_empty() {
        arms.push(quote!(#(#unchanged)|* => #private::Decision::ignored(#state_local),));
    }
    let timer_inputs = if timer_variants.is_empty() {
        quote!(match timer {})
    } else {
        quote!(match timer { #(#timer::#timer_variants => #input::#timer_variants,)* })
    };
    let description = description(g, p);

    quote! {
        #docs
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct #process;

        #[doc = concat!("The states of [`", #process_name, "`].")]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, #private::serde::Serialize, #private::serde::Deserialize)]
        #[serde(crate = "::switchyard::__private::serde")]
        pub enum #state {
            #(#state_docs #state_variants,)*
        }

        impl #state {
            /// Every state, in declaration order.
            pub const ALL: &'static [#state] = &[#(#state::#state_variants),*];
        }

        #[doc = concat!("What an instance of [`", #process_name, "`] remembers.")]
        #[derive(Clone, Debug, #private::serde::Serialize, #private::serde::Deserialize)]
        #[serde(crate = "::switchyard::__private::serde")]
        pub struct #data {
            #(#field_docs pub #field_names: #field_types,)*
        }

        impl ::core::default::Default for #data {
            #[allow(clippy::all, clippy::pedantic, unused_parens)]
            fn default() -> Self {
                #data { #(#field_names: #field_inits,)* }
            }
        }

        #[doc = concat!("The timers of [`", #process_name, "`].")]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, #private::serde::Serialize, #private::serde::Deserialize)]
        #[serde(crate = "::switchyard::__private::serde")]
        pub enum #timer {
            #(#timer_docs #timer_variants,)*
        }

        #[doc = concat!("The inputs of [`", #process_name, "`]: one variant per event type and per timer.")]
        #[derive(Clone, Debug)]
        pub enum #input {
            #(#event_types(#event_types),)*
            #(#timer_variants,)*
        }

        #[doc = concat!("The messages [`", #process_name, "`] sends and publishes: one variant per type.")]
        #[derive(Clone, Debug)]
        pub enum #output {
            #(#output_variants(#output_types),)*
        }

        const _: () = {
            #key_field_markers

            #(
                impl ::core::convert::From<#event_types> for #input {
                    fn from(event: #event_types) -> Self {
                        #input::#event_types(event)
                    }
                }
            )*

            #(#handles)*

            impl #private::Outgoing for #output {
                fn name(&self) -> &'static str {
                    #output_name
                }

                fn kind(&self) -> #private::MessageKind {
                    #output_kind
                }

                fn into_body(self) -> #private::Body {
                    #output_body
                }
            }

            impl #private::Process for #process {
                #process_items

                fn is_final(state: #state) -> bool {
                    #is_final
                }

                #[allow(unused_variables, unused_mut, unused_parens, clippy::all, clippy::pedantic)]
                fn decide(
                    #state_local: #state,
                    data: &#data,
                    #input_local: &#input,
                    #ctx: &#private::Context<'_, #key>,
                ) -> #private::Decision<Self> {
                    let id: &#key = #ctx.key;
                    let now = #ctx.now;
                    match (#state_local, #input_local) {
                        #(#arms)*
                    }
                }

                fn timer_input(timer: #timer) -> #input {
                    #timer_inputs
                }

                fn routes() -> &'static [#private::Route<Self>] {
                    const ROUTES: &[#private::Route<#process>] = &[
                        #(#private::Route {
                            event: <#event_types as #private::Event>::NAME,
                            decode: #private::route::<#process, #event_types>,
                            take: #private::take::<#process, #event_types>,
                        },)*
                    ];
                    ROUTES
                }

                #[allow(unreachable_patterns)]
                fn input_message(
                    input: &#input,
                ) -> ::core::option::Option<(&'static str, #private::Body)> {
                    match input {
                        #(#input::#event_types(event) => ::core::option::Option::Some((
                            <#event_types as #private::Event>::NAME,
                            #private::Body::value(::core::clone::Clone::clone(event)),
                        )),)*
                        _ => ::core::option::Option::None,
                    }
                }

                fn description() -> &'static #private::Description {
                    #description
                }
            }
        };
    }
}

/// The variant of the output enum for a message type: its last segment.
fn output_variant(output: &OutputModel) -> Ident {
    rust_ident(&output.path.name().node, Span::call_site())
}

/// `Handles<E>`: the correlation field, read through a trait whose error names
/// the event, the field and both types when the field's type is not the key's.
fn handles(
    g: &Gen<'_>,
    names: &Names,
    key: &TokenStream,
    p: &ProcessModel,
    event: &Ident,
    field: &ast::Ident,
) -> TokenStream {
    let process = &names.process;
    let marker = key_field_marker(p, &field.node);
    // The impl and the read carry the spans of the event and the field, so
    // that an event type that is not an `Event`, a missing field or a field
    // of the wrong type is reported there.
    let event_span = event.span();
    let field_span = g.lo(field.span);
    let field = g.ident(field);
    let at_field = respan(private(), field_span);
    let read = quote_spanned!(field_span=> #at_field::CorrelationField::<#key, #event, #marker>::key(&event.#field));
    let private = respan(private(), event_span);
    quote_spanned! {event_span=>
        impl #private::Handles<#event> for #process {
            fn correlate(event: &#event) -> &#key {
                #read
            }
        }
    }
}

/// The type that names a correlation field in the error about its type: a
/// type named like the field, unless that name would shadow a type the
/// generated impls use, then one inside a module of its own.
fn key_field_marker(p: &ProcessModel, field: &str) -> TokenStream {
    let name = rust_ident(field, Span::call_site());
    if marker_would_shadow(p, field) {
        quote!(__switchyard_key_fields::#name)
    } else {
        quote!(#name)
    }
}

fn key_field_markers(p: &ProcessModel) -> TokenStream {
    let mut fields: Vec<&str> = Vec::new();
    for input in &p.inputs {
        if let InputKind::Event { key_field } = &input.kind
            && !fields.contains(&key_field.node.as_str())
        {
            fields.push(&key_field.node);
        }
    }
    let (shadowing, plain): (Vec<&str>, Vec<&str>) =
        fields.into_iter().partition(|f| marker_would_shadow(p, f));
    let plain = plain.iter().map(|f| rust_ident(f, Span::call_site()));
    let shadowing: Vec<Ident> =
        shadowing.iter().map(|f| rust_ident(f, Span::call_site())).collect();
    let module = if shadowing.is_empty() {
        TokenStream::new()
    } else {
        quote! {
            #[allow(non_camel_case_types)]
            mod __switchyard_key_fields {
                #(pub enum #shadowing {})*
            }
        }
    };
    quote! {
        #(
            #[allow(non_camel_case_types)]
            enum #plain {}
        )*
        #module
    }
}

/// Whether a marker type named `field` would shadow a name the impls of the
/// process refer to: a primitive, or the first segment of a type it uses.
fn marker_would_shadow(p: &ProcessModel, field: &str) -> bool {
    const PRIMITIVES: &[&str] = &[
        "bool", "char", "str", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32",
        "i64", "i128", "isize", "f32", "f64", "Self",
    ];
    fn type_mentions(t: &ast::Type, field: &str) -> bool {
        match t {
            ast::Type::Path(path) => path_mentions(path, field),
            ast::Type::Tuple(items, _) => items.iter().any(|i| type_mentions(i, field)),
        }
    }
    fn path_mentions(path: &ast::TypePath, field: &str) -> bool {
        path.segments.iter().any(|s| s.node == field)
            || path.args.iter().any(|a| type_mentions(a, field))
    }
    PRIMITIVES.contains(&field)
        || field == p.name.node
        || type_mentions(&p.key_type, field)
        || p.inputs.iter().any(|i| i.name.node == field)
        || p.outputs.iter().any(|o| path_mentions(&o.path, field))
}

/// The handlers of one input in one state: guards tried in order, the last
/// handler unguarded (the checker proves it).
fn handled(
    g: &Gen<'_>,
    p: &ProcessModel,
    names: &Names,
    locals: &Locals,
    handlers: &[HandlerModel],
) -> TokenStream {
    let mut chain = TokenStream::new();
    for (i, handler) in handlers.iter().enumerate() {
        let body = handler_body(g, p, names, locals, handler);
        let branch = match &handler.guard {
            Some(guard) => {
                // In parentheses, since a struct literal cannot stand bare in
                // an `if` condition; the group takes the span of the guard's
                // last token so that errors keep the guard's own span.
                let tokens = expr(g, guard, Mode::Place);
                let guard = group(Delimiter::Parenthesis, tokens, g.hi(guard.span));
                quote!(if #guard { #body })
            }
            None => quote!({ #body }),
        };
        // Appended, not interpolated: a long chain of guards is not copied
        // once per guard.
        if i > 0 {
            chain.extend(quote!(else));
        }
        chain.extend(branch);
    }
    chain
}

/// One handler: its statements in order, then the decision. A handler that
/// sets data works on a copy, and later reads in it see the new values.
fn handler_body(
    g: &Gen<'_>,
    p: &ProcessModel,
    names: &Names,
    locals: &Locals,
    handler: &HandlerModel,
) -> TokenStream {
    let private = private();
    let Names { state, output, timer, .. } = names;
    let Locals { state: state_local, next_data, .. } = locals;
    // Each message and timer change is computed where its statement stands
    // (so it reads the data as the statements before it left them), kept in
    // a local, and the lists are built at the end with `vec![...]`: exactly
    // one allocation per non-empty list, none for an empty one, and no
    // capacity check per element.
    let local =
        |kind: &str, index: usize| Ident::new(&format!("{kind}_{index}"), Span::mixed_site());
    let mut statements = Vec::new();
    let (mut emitted, mut changed, mut sets) = (Vec::new(), Vec::new(), false);
    for action in &handler.actions {
        statements.push(match action {
            Action::Emit { output: index, fields, span } => {
                let path = type_path(g, &p.outputs[*index].path);
                let variant = output_variant(&p.outputs[*index]);
                let value = match fields {
                    Some(fields) => {
                        let fields = fields.iter().map(|f| field_init(g, f));
                        let body = group(Delimiter::Brace, quote!(#(#fields,)*), g.hi(*span));
                        quote!(#path #body)
                    }
                    None => path,
                };
                let name = local("output", emitted.len());
                emitted.push(name.clone());
                quote!(let #name = #output::#variant(#value);)
            }
            Action::Set { field, value, .. } => {
                sets = true;
                let field = g.ident(&p.data[*field].name);
                let value = expr(g, value, Mode::Value);
                quote!(data.#field = #value;)
            }
            Action::Schedule { timer: index, when, .. } => {
                let variant = g.ident(&p.timers[*index].name);
                let at = match when {
                    ast::ScheduleWhen::After(delay) => {
                        let lo = g.lo(delay.span);
                        let delay = expr(g, delay, Mode::Value);
                        quote_spanned!(lo=> now + #delay)
                    }
                    ast::ScheduleWhen::At(at) => expr(g, at, Mode::Value),
                };
                let name = local("timer", changed.len());
                changed.push(name.clone());
                quote!(let #name = #private::TimerOp::Schedule { timer: #timer::#variant, at: #at };)
            }
            Action::Cancel { timer: index, .. } => {
                let variant = g.ident(&p.timers[*index].name);
                let name = local("timer", changed.len());
                changed.push(name.clone());
                quote!(let #name = #private::TimerOp::Cancel { timer: #timer::#variant };)
            }
        });
    }
    let next = match handler.target {
        Some(target) => {
            let target = g.ident(&p.states[target].name);
            quote!(#state::#target)
        }
        None => quote!(#state_local),
    };
    let list = |names: &[Ident]| {
        if names.is_empty() {
            quote!(::std::vec::Vec::new())
        } else {
            quote!(::std::vec![#(#names),*])
        }
    };
    let (outputs, timers) = (list(&emitted), list(&changed));
    if sets {
        quote! {
            let mut #next_data = ::core::clone::Clone::clone(data);
            let data = &mut #next_data;
            #(#statements)*
            #private::Decision::handled(#next, ::core::option::Option::Some(#next_data), #outputs, #timers)
        }
    } else {
        quote! {
            #(#statements)*
            #private::Decision::handled(#next, ::core::option::Option::None, #outputs, #timers)
        }
    }
}

fn field_init(g: &Gen<'_>, field: &ast::FieldInit) -> TokenStream {
    let name = g.ident(&field.name);
    let value = expr(g, &field.value, Mode::Value);
    quote!(#name: #value)
}

/// A delimited group whose delimiters carry `span`.
fn group(delimiter: Delimiter, stream: TokenStream, span: Span) -> TokenTree {
    let mut group = Group::new(delimiter, stream);
    group.set_span(span);
    TokenTree::Group(group)
}

/// Gives every token of `tokens` the span `span`, groups included.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|token| match token {
            TokenTree::Group(g) => group(g.delimiter(), respan(g.stream(), span), span),
            mut other => {
                other.set_span(span);
                other
            }
        })
        .collect()
}

/// Whether an expression is read in place (compared, or a method's receiver)
/// or taken as a value, which clones paths into `event` and `data` since
/// `decide` only borrows them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Place,
    Value,
}

/// An expression as Rust tokens. Tokens written for the expression carry the
/// span of its first source token, and closing groups that of its last, so
/// that an error about the whole expression underlines all of it.
fn expr(g: &Gen<'_>, e: &ast::Expr, mode: Mode) -> TokenStream {
    let mut out = TokenStream::new();
    write_expr(g, e, mode, &mut out);
    out
}

/// Appends an expression's tokens to `out`. Every token is written once,
/// where it ends up: an operand is never built apart and then copied into
/// its parent (as interpolating it with `quote!` would), which made the work
/// grow with the square of an expression's depth. Only a group's contents are
/// built apart, and the group takes them without a copy.
fn write_expr(g: &Gen<'_>, e: &ast::Expr, mode: Mode, out: &mut TokenStream) {
    let (lo, hi) = (g.lo(e.span), g.hi(e.span));
    match &e.kind {
        ExprKind::Lit(lit) => out.extend(literal(lit, mode, lo, hi)),
        ExprKind::Path(segments) => out.extend(path_tokens(g, segments)),
        ExprKind::Name(_) | ExprKind::Field(..) => write_place(g, e, mode, out),
        ExprKind::Call(callee, args) => {
            write_operand(g, callee, Mode::Place, false, out);
            out.extend([arguments(g, args, hi)]);
        }
        ExprKind::MethodCall(receiver, method, args) => {
            write_operand(g, receiver, Mode::Place, false, out);
            let span = g.lo(method.span);
            out.extend(quote_spanned!(span=> .));
            out.extend([TokenTree::Ident(rust_ident(&method.node, span)), arguments(g, args, hi)]);
        }
        ExprKind::Struct(path, fields) => {
            out.extend(type_path(g, path));
            let fields = fields.iter().map(|f| field_init(g, f));
            out.extend([group(Delimiter::Brace, quote!(#(#fields,)*), hi)]);
        }
        ExprKind::Unary(op, inner) => {
            out.extend(match op {
                UnaryOp::Not => quote_spanned!(lo=> !),
                UnaryOp::Neg => quote_spanned!(lo=> -),
            });
            write_operand(g, inner, Mode::Value, true, out);
        }
        ExprKind::Binary(op, left, right) => {
            let operands = if op.is_comparison() { Mode::Place } else { Mode::Value };
            write_binary_operand(g, *op, left, operands, Side::Left, out);
            out.extend(respan(binary_op(*op), g.hi(left.span)));
            write_binary_operand(g, *op, right, operands, Side::Right, out);
        }
        ExprKind::List(items) => {
            let items = items.iter().map(|i| expr(g, i, Mode::Value));
            out.extend(quote_spanned!(lo=> ::std::vec!));
            out.extend([group(Delimiter::Bracket, quote!(#(#items),*), hi)]);
        }
        ExprKind::Paren(inner) => {
            out.extend([group(Delimiter::Parenthesis, expr(g, inner, mode), hi)])
        }
    }
}

/// A name or a field path. Taken by value, one rooted at what `decide`
/// borrows is cloned, by a method call rather than `Clone::clone(&x)`: a type
/// error then reads "expected `u64`, found `String`" instead of speaking of
/// references.
fn write_place(g: &Gen<'_>, e: &ast::Expr, mode: Mode, out: &mut TokenStream) {
    let (lo, hi) = (g.lo(e.span), g.hi(e.span));
    match &e.kind {
        ExprKind::Name(name) if name == "id" => {
            let id = Ident::new("id", lo);
            let mut star = TokenTree::Punct(Punct::new('*', Spacing::Alone));
            star.set_span(lo);
            out.extend([group(Delimiter::Parenthesis, quote!(#star #id), lo)]);
        }
        ExprKind::Name(name) => out.extend([TokenTree::Ident(rust_ident(name, lo))]),
        ExprKind::Field(base, field) => {
            write_operand(g, base, Mode::Place, false, out);
            let span = g.lo(field.span);
            let field = match field.node.parse::<usize>() {
                Ok(index) => {
                    let mut index = Literal::usize_unsuffixed(index);
                    index.set_span(span);
                    TokenTree::Literal(index)
                }
                Err(_) => TokenTree::Ident(rust_ident(&field.node, span)),
            };
            out.extend(quote_spanned!(span=> .));
            out.extend([field]);
        }
        _ => unreachable!("only names and fields are places"),
    }
    if mode == Mode::Value && is_borrowed_place(e) {
        out.extend(quote_spanned!(hi=> .clone));
        out.extend([group(Delimiter::Parenthesis, TokenStream::new(), hi)]);
    }
}

/// The arguments of a call, in parentheses that carry the span of its last token.
fn arguments(g: &Gen<'_>, args: &[ast::Expr], hi: Span) -> TokenTree {
    let args = args.iter().map(|a| expr(g, a, Mode::Value));
    group(Delimiter::Parenthesis, quote!(#(#args),*), hi)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Left,
    Right,
}

/// An operand of a binary operator, in parentheses where Rust's grammar would
/// read it differently without them: a looser operator, a right operand of
/// the same precedence, or a comparison inside a comparison (Rust does not
/// chain them).
fn write_binary_operand(
    g: &Gen<'_>,
    parent: BinaryOp,
    e: &ast::Expr,
    mode: Mode,
    side: Side,
    out: &mut TokenStream,
) {
    let needs_parens = match &e.kind {
        ExprKind::Binary(child, _, _) => {
            let (parent_rank, child_rank) = (parent.precedence(), child.precedence());
            child_rank < parent_rank
                || (side == Side::Right && child_rank == parent_rank)
                || (parent.is_comparison() && child.is_comparison())
        }
        _ => false,
    };
    if needs_parens {
        // The group takes the span of the operand's outer token, so that the
        // operator expression around it still spans from its first token to its last.
        let span = if side == Side::Left { g.lo(e.span) } else { g.hi(e.span) };
        out.extend([group(Delimiter::Parenthesis, expr(g, e, mode), span)]);
    } else {
        write_expr(g, e, mode, out);
    }
}

/// The receiver of a method or field, the callee of a call, or the operand
/// of a unary operator: in parentheses when it is an operator expression.
fn write_operand(g: &Gen<'_>, e: &ast::Expr, mode: Mode, unary: bool, out: &mut TokenStream) {
    match &e.kind {
        ExprKind::Binary(..) => {
            out.extend([group(Delimiter::Parenthesis, expr(g, e, mode), g.lo(e.span))]);
        }
        ExprKind::Unary(..) if !unary => {
            out.extend([group(Delimiter::Parenthesis, expr(g, e, mode), g.lo(e.span))]);
        }
        _ => write_expr(g, e, mode, out),
    }
}

/// Paths rooted at what `decide` borrows: `event`, `data` and `id`.
fn is_borrowed_place(e: &ast::Expr) -> bool {
    match &e.kind {
        ExprKind::Name(name) => matches!(name.as_str(), "event" | "data" | "id"),
        ExprKind::Field(base, _) => is_borrowed_place(base),
        _ => false,
    }
}

fn path_tokens(g: &Gen<'_>, segments: &[ast::Ident]) -> TokenStream {
    let mut tokens = TokenStream::new();
    for (i, segment) in segments.iter().enumerate() {
        let ident = g.ident(segment);
        if i > 0 {
            let span = ident.span();
            tokens.extend(quote_spanned!(span=> ::));
        }
        tokens.extend(ident.into_token_stream());
    }
    tokens
}

/// A literal. A string is a `String` when taken as a value, and stays a
/// `&str` where it is only compared, which `String` and `&str` allow and
/// which allocates nothing.
fn literal(lit: &Lit, mode: Mode, lo: Span, hi: Span) -> TokenStream {
    let mut token = match lit {
        Lit::Int(value) => Literal::u128_unsuffixed(*value),
        Lit::Float(text) => text
            .parse::<f64>()
            .map_or_else(|_| Literal::f64_unsuffixed(0.0), Literal::f64_unsuffixed),
        Lit::Str(text) => Literal::string(&unescape(text)),
        Lit::Bool(value) => {
            return Ident::new(if *value { "true" } else { "false" }, lo).into_token_stream();
        }
        Lit::Duration(value, unit) => {
            let mut millis = Literal::u64_suffixed(value.saturating_mul(unit.millis()));
            millis.set_span(hi);
            let call = quote_spanned!(lo=> ::core::time::Duration::from_millis);
            let args = group(Delimiter::Parenthesis, millis.into_token_stream(), hi);
            return quote!(#call #args);
        }
    };
    token.set_span(lo);
    match lit {
        Lit::Str(_) if mode == Mode::Value => {
            let args = group(Delimiter::Parenthesis, token.into_token_stream(), hi);
            quote_spanned!(lo=> ::std::string::String::from #args)
        }
        _ => token.into_token_stream(),
    }
}

/// The escapes the language shares with Rust strings.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

fn binary_op(op: BinaryOp) -> TokenStream {
    match op {
        BinaryOp::Or => quote!(||),
        BinaryOp::And => quote!(&&),
        BinaryOp::Eq => quote!(==),
        BinaryOp::Ne => quote!(!=),
        BinaryOp::Lt => quote!(<),
        BinaryOp::Le => quote!(<=),
        BinaryOp::Gt => quote!(>),
        BinaryOp::Ge => quote!(>=),
        BinaryOp::Add => quote!(+),
        BinaryOp::Sub => quote!(-),
        BinaryOp::Mul => quote!(*),
        BinaryOp::Div => quote!(/),
        BinaryOp::Rem => quote!(%),
    }
}

fn ty(g: &Gen<'_>, t: &ast::Type) -> TokenStream {
    match t {
        ast::Type::Path(path) => type_path(g, path),
        ast::Type::Tuple(items, span) => {
            let items = items.iter().map(|i| ty(g, i));
            group(Delimiter::Parenthesis, quote!(#(#items,)*), g.lo(*span)).into_token_stream()
        }
    }
}

fn type_path(g: &Gen<'_>, path: &ast::TypePath) -> TokenStream {
    let segments = path_tokens(g, &path.segments);
    if path.args.is_empty() {
        segments
    } else {
        let args = path.args.iter().map(|a| ty(g, a));
        let lt = g.lo(path.name().span);
        let gt = g.hi(path.span);
        let (lt, gt) = (quote_spanned!(lt=> <), quote_spanned!(gt=> >));
        quote!(#segments #lt #(#args),* #gt)
    }
}

fn doc_attrs(docs: &[String]) -> TokenStream {
    docs.iter().map(|line| quote!(#[doc = #line])).collect()
}

fn description(g: &Gen<'_>, p: &ProcessModel) -> TokenStream {
    let private = private();
    let name = &p.name.node;
    let docs = p.docs.join("\n");
    let states = p.states.iter().map(|s| {
        let name = &s.name.node;
        let docs = s.docs.join("\n");
        let kind = match s.kind {
            StateKind::Initial => quote!(Initial),
            StateKind::Normal => quote!(Normal),
            StateKind::Final => quote!(Final),
        };
        quote!(#private::StateDescription { name: #name, kind: #private::StateKind::#kind, docs: #docs })
    });
    let inputs = p.events().map(|(_, i)| {
        let ty = g.ident(&i.name);
        quote!(<#ty as #private::Event>::NAME)
    });
    let timers = p.timers.iter().map(|t| t.name.node.as_str());
    let mut transitions = Vec::new();
    for s in &p.states {
        for (handling, input) in s.table.iter().zip(&p.inputs) {
            let Handling::Handled(handlers) = handling else { continue };
            for handler in handlers {
                let from = &s.name.node;
                let to = handler.target.map_or(from, |t| &p.states[t].name.node);
                let input = &input.name.node;
                let guarded = handler.guard.is_some();
                let sends = handler.actions.iter().filter_map(|action| match action {
                    Action::Emit { output, .. } => {
                        Some(p.outputs[*output].path.name().node.clone())
                    }
                    _ => None,
                });
                transitions.push(quote!(#private::Transition {
                    from: #from, input: #input, guarded: #guarded, to: #to, sends: &[#(#sends),*],
                }));
            }
        }
    }
    quote! {
        static DESCRIPTION: #private::Description = #private::Description {
            name: #name,
            docs: #docs,
            states: &[#(#states),*],
            inputs: &[#(#inputs),*],
            timers: &[#(#timers),*],
            transitions: &[#(#transitions),*],
        };
        &DESCRIPTION
    }
}

/// The types a file would have declared, for when the checker refused it:
/// per process the marker type, its states, data, timers, inputs and
/// outputs as far as the text says, and a `Process` impl whose bodies never
/// run (a crate with the checker's errors never builds). User code that names
/// `P` or `PState` then resolves, and the user sees the checker's findings
/// without a cascade of "cannot find type" errors. A text that does not parse
/// still yields the process and state names a scan of its words finds.
pub fn skeleton(text: &str) -> TokenStream {
    let (file, diagnostics) = crate::parse(text);
    let shapes = if diagnostics.iter().any(crate::Diagnostic::is_error) {
        scan(text)
    } else {
        file.processes.iter().map(shape).collect()
    };
    let mut seen: Vec<&str> = Vec::new();
    let mut out = TokenStream::new();
    for shape in &shapes {
        if is_usable_name(&shape.name) && !seen.contains(&shape.name.as_str()) {
            seen.push(&shape.name);
            out.extend(skeleton_items(shape));
        }
    }
    out
}

/// What is known of a process that did not pass the checker.
#[derive(Default)]
struct Shape {
    name: String,
    key: Option<TokenStream>,
    states: Vec<String>,
    initial: Option<usize>,
    data: Vec<(String, TokenStream)>,
    timers: Vec<String>,
    events: Vec<String>,
    outputs: Vec<(String, TokenStream)>,
}

impl Shape {
    fn add_state(&mut self, name: &str, initial: bool) {
        if !is_usable_name(name) || self.states.iter().any(|s| s == name) {
            return;
        }
        if initial && self.initial.is_none() {
            self.initial = Some(self.states.len());
        }
        self.states.push(name.to_owned());
    }

    fn add_timer(&mut self, name: &str) {
        if is_usable_name(name) && !self.timers.iter().any(|t| t == name) {
            self.timers.push(name.to_owned());
        }
    }
}

/// Whether a name can be a Rust item or variant name at all (the language
/// accepts `_` and `self` where Rust does not).
fn is_usable_name(name: &str) -> bool {
    !matches!(name, "_" | "self" | "Self" | "super" | "crate")
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The shape of a process that parsed.
fn shape(process: &ast::Process) -> Shape {
    let g = Gen { span_of: &|_| Span::call_site() };
    let mut shape = Shape { name: process.name.node.clone(), ..Shape::default() };
    let mut inputs: Vec<&str> = Vec::new();
    let mut bodies: Vec<&[ast::StateItem]> = Vec::new();
    for item in &process.items {
        match item {
            ast::ProcessItem::CorrelateDefault { ty: key, .. } => {
                shape.key.get_or_insert_with(|| ty(&g, key));
            }
            ast::ProcessItem::Data { fields, .. } => {
                for field in fields {
                    let name = &field.name.node;
                    if is_usable_name(name) && !shape.data.iter().any(|(n, _)| n == name) {
                        shape.data.push((name.clone(), ty(&g, &field.ty)));
                    }
                }
            }
            ast::ProcessItem::Timer { name, .. } => shape.add_timer(&name.node),
            ast::ProcessItem::AnyState { body, .. } => bodies.push(body),
            ast::ProcessItem::State(state) => {
                shape.add_state(&state.name.node, state.kind == StateKind::Initial);
                bodies.extend(state.body.as_deref());
            }
            ast::ProcessItem::CorrelateEvent { .. } => {}
        }
    }
    for item in bodies.into_iter().flatten() {
        match item {
            ast::StateItem::Handler(handler) => {
                inputs.push(&handler.input.node);
                for statement in &handler.body {
                    if let ast::Statement::Send { command: path, .. }
                    | ast::Statement::Publish { event: path, .. } = statement
                    {
                        let name = &path.name().node;
                        if is_usable_name(name) && !shape.outputs.iter().any(|(n, _)| n == name) {
                            shape.outputs.push((name.clone(), type_path(&g, path)));
                        }
                    }
                }
            }
            ast::StateItem::Ignore { inputs: names, .. } => {
                inputs.extend(names.iter().map(|n| n.node.as_str()));
            }
        }
    }
    for input in inputs {
        if is_usable_name(input)
            && !shape.timers.iter().any(|t| t == input)
            && !shape.events.iter().any(|e| e == input)
        {
            shape.events.push(input.to_owned());
        }
    }
    shape
}

/// The process and state names in a text that does not parse, read word by
/// word: `process NAME`, `initial state NAME`, `state NAME`, `timer NAME` and
/// a key type that is a plain path.
fn scan(text: &str) -> Vec<Shape> {
    let words = words(text);
    let mut shapes: Vec<Shape> = Vec::new();
    let word = |i: usize| words.get(i).map_or("", |w| w.as_str());
    for i in 0..words.len() {
        let next = word(i + 1);
        match word(i) {
            "process" if is_usable_name(next) => {
                shapes.push(Shape { name: next.to_owned(), ..Shape::default() });
            }
            "state" => {
                if let Some(shape) = shapes.last_mut() {
                    shape.add_state(next, i > 0 && word(i - 1) == "initial");
                }
            }
            "timer" => {
                if let Some(shape) = shapes.last_mut() {
                    shape.add_timer(next);
                }
            }
            "correlate" if next == "by" && word(i + 3) == ":" => {
                let mut path = vec![word(i + 4)];
                let mut j = i + 5;
                while word(j) == ":" && word(j + 1) == ":" {
                    path.push(word(j + 2));
                    j += 3;
                }
                let plain = path.iter().all(|s| is_usable_name(s) && !is_rust_keyword(s));
                if let Some(shape) = shapes.last_mut()
                    && plain
                    && !matches!(word(j), "<" | "(")
                {
                    let segments = path.iter().map(|s| Ident::new(s, Span::call_site()));
                    shape.key.get_or_insert_with(|| quote!(#(#segments)::*));
                }
            }
            _ => {}
        }
    }
    shapes
}

/// The words and punctuation of a text, comments and strings left out.
fn words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        if c == '/' && text[i..].starts_with("//") {
            while chars.next_if(|(_, c)| *c != '\n').is_some() {}
        } else if c == '/' && text[i..].starts_with("/*") {
            let end = text[i + 2..].find("*/").map_or(text.len(), |e| i + 2 + e + 2);
            while chars.next_if(|(j, _)| *j < end).is_some() {}
        } else if c == '"' {
            let mut escaped = false;
            for (_, c) in chars.by_ref() {
                match c {
                    '"' if !escaped => break,
                    '\\' => escaped = !escaped,
                    _ => escaped = false,
                }
            }
        } else if c.is_ascii_alphanumeric() || c == '_' {
            let mut word = String::from(c);
            while let Some((_, c)) = chars.next_if(|(_, c)| c.is_ascii_alphanumeric() || *c == '_')
            {
                word.push(c);
            }
            words.push(word);
        } else {
            words.push(c.to_string());
        }
    }
    words
}

fn skeleton_items(shape: &Shape) -> TokenStream {
    let private = private();
    let names = Names::new(rust_ident(&shape.name, Span::call_site()));
    let Names { process, state, data, input, output, timer } = &names;
    let process_name = shape.name.as_str();
    let idents = |names: &[String]| -> Vec<Ident> {
        names.iter().map(|n| rust_ident(n, Span::call_site())).collect()
    };
    let states = idents(&shape.states);
    let timers = idents(&shape.timers);
    let events = idents(&shape.events);
    let field_names: Vec<Ident> =
        shape.data.iter().map(|(n, _)| rust_ident(n, Span::call_site())).collect();
    let field_types = shape.data.iter().map(|(_, t)| t);
    let output_variants: Vec<Ident> =
        shape.outputs.iter().map(|(n, _)| rust_ident(n, Span::call_site())).collect();
    let output_types = shape.outputs.iter().map(|(_, t)| t);
    let key = shape.key.clone().unwrap_or_else(|| quote!(()));

    // A `Process` impl needs an initial state; without any state there is
    // none to name, and user code naming `P` as a process is the one thing
    // that still fails.
    let process_impl = states.get(shape.initial.unwrap_or(0)).map(|initial| {
        let process_items = names.process_items(process_name, initial, &key);
        quote! {
            const _: () = {
                impl #private::Outgoing for #output {
                    fn name(&self) -> &'static str {
                        loop {}
                    }

                    fn kind(&self) -> #private::MessageKind {
                        loop {}
                    }

                    fn into_body(self) -> #private::Body {
                        loop {}
                    }
                }

                impl #private::Process for #process {
                    #process_items

                    fn is_final(state: #state) -> bool {
                        loop {}
                    }

                    fn decide(
                        state: #state,
                        data: &#data,
                        input: &#input,
                        ctx: &#private::Context<'_, #key>,
                    ) -> #private::Decision<Self> {
                        loop {}
                    }

                    fn timer_input(timer: #timer) -> #input {
                        loop {}
                    }

                    fn routes() -> &'static [#private::Route<Self>] {
                        loop {}
                    }

                    fn description() -> &'static #private::Description {
                        loop {}
                    }
                }
            };
        }
    });

    quote! {
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct #process;

        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, #private::serde::Serialize, #private::serde::Deserialize)]
        #[serde(crate = "::switchyard::__private::serde")]
        pub enum #state {
            #(#states,)*
        }

        impl #state {
            pub const ALL: &'static [#state] = &[#(#state::#states),*];
        }

        #[derive(Clone, Debug, #private::serde::Serialize, #private::serde::Deserialize)]
        #[serde(crate = "::switchyard::__private::serde")]
        pub struct #data {
            #(pub #field_names: #field_types,)*
        }

        impl ::core::default::Default for #data {
            fn default() -> Self {
                loop {}
            }
        }

        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, #private::serde::Serialize, #private::serde::Deserialize)]
        #[serde(crate = "::switchyard::__private::serde")]
        pub enum #timer {
            #(#timers,)*
        }

        #[derive(Clone, Debug)]
        pub enum #input {
            #(#events(#events),)*
            #(#timers,)*
        }

        #(
            impl ::core::convert::From<#events> for #input {
                fn from(event: #events) -> Self {
                    #input::#events(event)
                }
            }
        )*

        #[derive(Clone, Debug)]
        pub enum #output {
            #(#output_variants(#output_types),)*
        }

        #process_impl
    }
}
