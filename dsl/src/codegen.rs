//! Code generation: a checked [`Model`] to Rust tokens. It cannot fail: if it
//! wanted to report an error, a check would be missing.
//!
//! Generated code reaches the runtime only through `::switchyard::__private`,
//! and wraps its trait impls in `const _: () = { ... };`.

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{format_ident, quote};

use crate::ast::{self, BinaryOp, ExprKind, Lit, StateKind, UnaryOp};
use crate::model::*;

/// The Rust items of every process in the model.
pub fn codegen(model: &Model) -> TokenStream {
    model.processes.iter().map(process).collect()
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

fn ident(name: &str) -> Ident {
    Ident::new(name, Span::call_site())
}

fn process(p: &ProcessModel) -> TokenStream {
    let name = &p.name.node;
    let names = Names {
        process: ident(name),
        state: format_ident!("{name}State"),
        data: format_ident!("{name}Data"),
        input: format_ident!("{name}Input"),
        output: format_ident!("{name}Output"),
        timer: format_ident!("{name}Timer"),
    };
    let Names { process, state, data, input, output, timer } = &names;
    let private = quote!(::switchyard::__private);
    let docs = doc_attrs(&p.docs);
    let key = ty(&p.key_type);
    let process_name = name.as_str();

    let state_variants: Vec<Ident> = p.states.iter().map(|s| ident(&s.name.node)).collect();
    let state_docs: Vec<TokenStream> = p.states.iter().map(|s| doc_attrs(&s.docs)).collect();
    let initial = &state_variants[p.initial];
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
    let field_names: Vec<Ident> = p.data.iter().map(|f| ident(&f.name.node)).collect();
    let field_types: Vec<TokenStream> = p.data.iter().map(|f| ty(&f.ty)).collect();
    let field_docs: Vec<TokenStream> = p.data.iter().map(|f| doc_attrs(&f.docs)).collect();
    let field_inits: Vec<TokenStream> = p
        .data
        .iter()
        .map(|f| match &f.init {
            Some(init) => expr(init, Mode::Value),
            None => quote!(::core::default::Default::default()),
        })
        .collect();

    let timer_variants: Vec<Ident> = p.timers.iter().map(|t| ident(&t.name.node)).collect();
    let timer_docs: Vec<TokenStream> = p.timers.iter().map(|t| doc_attrs(&t.docs)).collect();

    let event_types: Vec<Ident> = p.events().map(|(_, i)| ident(&i.name.node)).collect();
    let key_fields: Vec<Ident> = p
        .events()
        .map(|(_, i)| match &i.kind {
            InputKind::Event { key_field } => ident(&key_field.node),
            InputKind::Timer(_) => unreachable!("events() yields events"),
        })
        .collect();

    let output_types: Vec<TokenStream> = p.outputs.iter().map(|o| type_path(&o.path)).collect();
    let output_variants: Vec<Ident> =
        p.outputs.iter().map(|o| ident(&o.path.name().node)).collect();
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

    let mut arms = Vec::new();
    for (s, variant) in p.states.iter().zip(&state_variants) {
        for (handling, input_model) in s.table.iter().zip(&p.inputs) {
            let input_variant = ident(&input_model.name.node);
            let is_timer = matches!(input_model.kind, InputKind::Timer(_));
            let pattern = match (is_timer, handling) {
                (true, _) => quote!(#input::#input_variant),
                (false, Handling::Handled(_)) => quote!(#input::#input_variant(event)),
                (false, _) => quote!(#input::#input_variant(_)),
            };
            let body = match handling {
                Handling::Handled(handlers) => handled(p, &names, handlers),
                Handling::Ignored(_) | Handling::NotPending | Handling::Completed => {
                    quote!(#private::Decision::ignored(state))
                }
            };
            arms.push(quote!((#state::#variant, #pattern) => { #body }));
        }
    }
    let timer_inputs = if timer_variants.is_empty() {
        quote!(match timer {})
    } else {
        quote!(match timer { #(#timer::#timer_variants => #input::#timer_variants,)* })
    };
    let description = description(p);

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
            #(
                impl ::core::convert::From<#event_types> for #input {
                    fn from(event: #event_types) -> Self {
                        #input::#event_types(event)
                    }
                }

                impl #private::Handles<#event_types> for #process {
                    fn correlate(event: &#event_types) -> &#key {
                        &event.#key_fields
                    }
                }
            )*

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
                const NAME: &'static str = #process_name;
                const INITIAL: #state = #state::#initial;

                type State = #state;
                type Data = #data;
                type Key = #key;
                type Input = #input;
                type Output = #output;
                type Timer = #timer;

                fn is_final(state: #state) -> bool {
                    #is_final
                }

                #[allow(unused_variables, unused_mut, clippy::all)]
                fn decide(
                    state: #state,
                    data: &#data,
                    input: &#input,
                    ctx: &#private::Context<'_, #key>,
                ) -> #private::Decision<Self> {
                    let id: &#key = ctx.key;
                    let now = ctx.now;
                    match (state, input) {
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
                        },)*
                    ];
                    ROUTES
                }

                fn description() -> &'static #private::Description {
                    #description
                }
            }
        };
    }
}

/// The handlers of one input in one state: guards tried in order, the last
/// handler unguarded (the checker proves it).
fn handled(p: &ProcessModel, names: &Names, handlers: &[HandlerModel]) -> TokenStream {
    let mut chain = TokenStream::new();
    for (i, handler) in handlers.iter().enumerate() {
        let body = handler_body(p, names, handler);
        let branch = match &handler.guard {
            Some(guard) => {
                let guard = expr(guard, Mode::Place);
                quote!(if #guard { #body })
            }
            None => quote!({ #body }),
        };
        chain = if i == 0 { branch } else { quote!(#chain else #branch) };
    }
    chain
}

/// One handler: its statements in order, then the decision. A handler that
/// sets data works on a copy, and later reads in it see the new values.
fn handler_body(p: &ProcessModel, names: &Names, handler: &HandlerModel) -> TokenStream {
    let private = quote!(::switchyard::__private);
    let Names { state, output, timer, .. } = names;
    let mut statements = Vec::new();
    let (mut emits, mut timer_ops, mut sets) = (0usize, 0usize, false);
    for action in &handler.actions {
        statements.push(match action {
            Action::Emit { output: index, fields, .. } => {
                emits += 1;
                let path = type_path(&p.outputs[*index].path);
                let variant = ident(&p.outputs[*index].path.name().node);
                let value = match fields {
                    Some(fields) => {
                        let fields = fields.iter().map(field_init);
                        quote!(#path { #(#fields,)* })
                    }
                    None => quote!(#path),
                };
                quote!(outputs.push(#output::#variant(#value));)
            }
            Action::Set { field, value, .. } => {
                sets = true;
                let field = ident(&p.data[*field].name.node);
                let value = expr(value, Mode::Value);
                quote!(data.#field = #value;)
            }
            Action::Schedule { timer: index, when, .. } => {
                timer_ops += 1;
                let variant = ident(&p.timers[*index].name.node);
                let at = match when {
                    ast::ScheduleWhen::After(delay) => {
                        let delay = expr(delay, Mode::Value);
                        quote!(now + #delay)
                    }
                    ast::ScheduleWhen::At(at) => expr(at, Mode::Value),
                };
                quote!(timers.push(#private::TimerOp::Schedule { timer: #timer::#variant, at: #at });)
            }
            Action::Cancel { timer: index, .. } => {
                timer_ops += 1;
                let variant = ident(&p.timers[*index].name.node);
                quote!(timers.push(#private::TimerOp::Cancel { timer: #timer::#variant });)
            }
        });
    }
    let next = match handler.target {
        Some(target) => {
            let target = ident(&p.states[target].name.node);
            quote!(#state::#target)
        }
        None => quote!(state),
    };
    let vec = |count: usize| {
        if count == 0 {
            quote!(::std::vec::Vec::new())
        } else {
            quote!(::std::vec::Vec::with_capacity(#count))
        }
    };
    let (outputs, timers) = (vec(emits), vec(timer_ops));
    if sets {
        quote! {
            let mut outputs = #outputs;
            let mut timers = #timers;
            let mut next_data = ::core::clone::Clone::clone(data);
            {
                let data = &mut next_data;
                #(#statements)*
            }
            #private::Decision::handled(#next, ::core::option::Option::Some(next_data), outputs, timers)
        }
    } else {
        quote! {
            let mut outputs = #outputs;
            let mut timers = #timers;
            #(#statements)*
            #private::Decision::handled(#next, ::core::option::Option::None, outputs, timers)
        }
    }
}

fn field_init(field: &ast::FieldInit) -> TokenStream {
    let name = ident(&field.name.node);
    let value = expr(&field.value, Mode::Value);
    quote!(#name: #value)
}

/// Whether an expression is read in place (compared, or a method's receiver)
/// or taken as a value, which clones paths into `event` and `data` since
/// `decide` only borrows them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Place,
    Value,
}

fn expr(e: &ast::Expr, mode: Mode) -> TokenStream {
    let tokens = match &e.kind {
        ExprKind::Lit(lit) => return literal(lit),
        ExprKind::Name(name) if name == "id" => quote!((*id)),
        ExprKind::Name(name) => {
            let name = ident(name);
            quote!(#name)
        }
        ExprKind::Path(segments) => {
            let segments = segments.iter().map(|s| ident(&s.node));
            return quote!(#(#segments)::*);
        }
        ExprKind::Field(base, field) => {
            let base = expr(base, Mode::Place);
            let field = match field.node.parse::<usize>() {
                Ok(index) => {
                    let index = Literal::usize_unsuffixed(index);
                    quote!(#index)
                }
                Err(_) => {
                    let field = ident(&field.node);
                    quote!(#field)
                }
            };
            quote!(#base.#field)
        }
        ExprKind::Call(callee, args) => {
            let callee = expr(callee, Mode::Place);
            let args = args.iter().map(|a| expr(a, Mode::Value));
            return quote!(#callee(#(#args),*));
        }
        ExprKind::MethodCall(receiver, method, args) => {
            let receiver = expr(receiver, Mode::Place);
            let method = ident(&method.node);
            let args = args.iter().map(|a| expr(a, Mode::Value));
            return quote!(#receiver.#method(#(#args),*));
        }
        ExprKind::Struct(path, fields) => {
            let path = type_path(path);
            let fields = fields.iter().map(field_init);
            return quote!(#path { #(#fields,)* });
        }
        ExprKind::Unary(op, operand) => {
            let operand = expr(operand, Mode::Value);
            return match op {
                UnaryOp::Not => quote!((!#operand)),
                UnaryOp::Neg => quote!((-#operand)),
            };
        }
        ExprKind::Binary(op, left, right) => {
            let operands = if op.is_comparison() { Mode::Place } else { Mode::Value };
            let left = expr(left, operands);
            let right = expr(right, operands);
            let op = binary_op(*op);
            return quote!((#left #op #right));
        }
        ExprKind::List(items) => {
            let items = items.iter().map(|i| expr(i, Mode::Value));
            return quote!(::std::vec![#(#items),*]);
        }
        ExprKind::Paren(inner) => {
            let inner = expr(inner, mode);
            return quote!((#inner));
        }
    };
    // Only names and field paths reach here: clone them when taken by value.
    if mode == Mode::Value && is_borrowed_place(e) {
        quote!(::core::clone::Clone::clone(&#tokens))
    } else {
        tokens
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

fn literal(lit: &Lit) -> TokenStream {
    match lit {
        Lit::Int(value) => {
            let lit = Literal::u128_unsuffixed(*value);
            quote!(#lit)
        }
        Lit::Float(text) => {
            let lit = text
                .parse::<f64>()
                .map_or_else(|_| Literal::f64_unsuffixed(0.0), Literal::f64_unsuffixed);
            quote!(#lit)
        }
        Lit::Str(text) => {
            let lit = Literal::string(&unescape(text));
            quote!(::std::string::String::from(#lit))
        }
        Lit::Bool(true) => quote!(true),
        Lit::Bool(false) => quote!(false),
        Lit::Duration(value, unit) => {
            let millis = Literal::u64_suffixed(value.saturating_mul(unit.millis()));
            quote!(::core::time::Duration::from_millis(#millis))
        }
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

fn ty(t: &ast::Type) -> TokenStream {
    match t {
        ast::Type::Path(path) => type_path(path),
        ast::Type::Tuple(items, _) => {
            let items = items.iter().map(ty);
            quote!((#(#items,)*))
        }
    }
}

fn type_path(path: &ast::TypePath) -> TokenStream {
    let segments = path.segments.iter().map(|s| ident(&s.node));
    if path.args.is_empty() {
        quote!(#(#segments)::*)
    } else {
        let args = path.args.iter().map(ty);
        quote!(#(#segments)::* < #(#args),* >)
    }
}

fn doc_attrs(docs: &[String]) -> TokenStream {
    docs.iter().map(|line| quote!(#[doc = #line])).collect()
}

fn description(p: &ProcessModel) -> TokenStream {
    let private = quote!(::switchyard::__private);
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
        let ty = ident(&i.name.node);
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
