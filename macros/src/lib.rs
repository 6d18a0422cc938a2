//! The proc-macro front door of Switchyard. It only reads its input, calls
//! the compiler in `switchyard-dsl`, and maps the compiler's spans onto the
//! user's source: `process!` for `.yard` files and inline definitions,
//! `#[derive(Event)]` and `#[derive(Command)]` for message types.

use std::path::PathBuf;

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use switchyard_dsl::{Diagnostic, Source};

mod inline;

/// Generates the state machine of every process in a `.yard` file, or of an
/// inline definition.
///
/// ```text
/// switchyard::process!("processes/registration.yard"); // relative to CARGO_MANIFEST_DIR
/// switchyard::process! {
///     process Campaign { ... }
/// }
/// ```
#[proc_macro]
pub fn process(input: TokenStream) -> TokenStream {
    let input = TokenStream2::from(input);
    // The compiler never panics on user input, by its own tests; should a
    // bug make it panic all the same, the user gets an error in words, not
    // "proc macro panicked".
    let expanded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        match syn::parse2::<syn::LitStr>(input.clone()) {
            Ok(path) => from_file(&path),
            Err(_) => inline::expand(input.clone()),
        }
    }));
    expanded
        .unwrap_or_else(|_| {
            error(
                Span::call_site(),
                "internal error: the Switchyard compiler failed on this definition\n  = note: this is a bug in Switchyard, not in the definition\n  = help: please report it with the definition attached",
            )
        })
        .into()
}

fn from_file(literal: &syn::LitStr) -> TokenStream2 {
    let relative = literal.value();
    let Some(root) = std::env::var_os("CARGO_MANIFEST_DIR") else {
        return error(
            literal.span(),
            "`CARGO_MANIFEST_DIR` is not set: `process!(\"...\")` must be built by cargo",
        );
    };
    let from_manifest = PathBuf::from(root).join(&relative);
    // Beside the manifest first, as documented; then beside the file that
    // calls the macro, which is where a test harness that builds the file in
    // a crate of its own (trybuild) finds it.
    let beside_caller = proc_macro::Span::call_site()
        .local_file()
        .and_then(|file| file.parent().map(|dir| dir.join(&relative)));
    let path = match beside_caller {
        Some(path) if !from_manifest.exists() && path.exists() => path,
        _ => from_manifest,
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) => {
            // No absolute path in the message: it would differ from machine to machine.
            let problem = match err.kind() {
                std::io::ErrorKind::NotFound => format!("no file `{relative}`"),
                _ => format!("cannot read `{relative}`: {err}"),
            };
            return error(
                literal.span(),
                &format!(
                    "{problem}\n  = note: looked beside the crate's `Cargo.toml` and beside this source file\n  = help: write the path relative to the directory of the crate's `Cargo.toml`"
                ),
            );
        }
    };
    // Tells cargo to rebuild the crate when the file changes.
    let absolute = path.to_string_lossy().into_owned();
    let track = quote!(
        const _: &[u8] = ::core::include_bytes!(#absolute);
    );

    let (model, diagnostics) = switchyard_dsl::compile(&text);
    let source = Source::new(&relative, &text);
    let errors: TokenStream2 = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| {
            let message = format!("{} [{}]\n{}", d.message, d.code, d.render_snippet(&source));
            error(literal.span(), &message)
        })
        .collect();
    // The file has no place in the Rust source: the compiler's own errors
    // in generated code point at the path.
    let code = match &model {
        Some(model) => switchyard_dsl::codegen_with_spans(model, &|_| literal.span()),
        None => switchyard_dsl::skeleton(&text),
    };
    quote!(#track #errors #code)
}

/// A `compile_error!` at `span`.
fn error(span: Span, message: &str) -> TokenStream2 {
    syn::Error::new(span, message).to_compile_error()
}

/// A `compile_error!` that underlines everything from `first` to `last`.
fn error_between(first: Span, last: Span, message: &str) -> TokenStream2 {
    let (first, last) =
        (proc_macro2::Ident::new("first", first), proc_macro2::Ident::new("last", last));
    syn::Error::new_spanned(quote!(#first #last), message).to_compile_error()
}

/// The message of a diagnostic with its code, the note under its span, its
/// labels (each with the text it is about) and its help, for spans that
/// already point at the offending tokens.
fn short_message(diagnostic: &Diagnostic, text: &str) -> String {
    let mut message = format!("{} [{}]", diagnostic.message, diagnostic.code);
    if let Some(label) = &diagnostic.span_label {
        message.push_str(&format!("\n  = note: {label}"));
    }
    for label in &diagnostic.labels {
        let quoted = text
            .get(label.span.range())
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "));
        match quoted {
            Some(quoted) if !quoted.is_empty() => {
                message.push_str(&format!("\n  = note: `{quoted}`: {}", label.message))
            }
            _ => message.push_str(&format!("\n  = note: {}", label.message)),
        }
    }
    if let Some(help) = &diagnostic.help {
        message.push_str(&format!("\n  = help: {help}"));
    }
    message
}

/// Implements `switchyard::Event`: the type can be published and taken as a
/// process input. The wire name is the type's name unless
/// `#[switchyard(name = "...")]` says otherwise.
#[proc_macro_derive(Event, attributes(switchyard))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    derive_message(input, quote!(Event))
}

/// Implements `switchyard::Command`: the type can be sent by a process and
/// handled by a command handler. The wire name is the type's name unless
/// `#[switchyard(name = "...")]` says otherwise.
#[proc_macro_derive(Command, attributes(switchyard))]
pub fn derive_command(input: TokenStream) -> TokenStream {
    derive_message(input, quote!(Command))
}

fn derive_message(input: TokenStream, kind: TokenStream2) -> TokenStream {
    let input = match syn::parse::<syn::DeriveInput>(input) {
        Ok(input) => input,
        Err(err) => return err.to_compile_error().into(),
    };
    let name = match wire_name(&input) {
        Ok(name) => name,
        Err(err) => return err.to_compile_error().into(),
    };
    let ty = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        impl #impl_generics ::switchyard::__private::#kind for #ty #ty_generics #where_clause {
            const NAME: &'static str = #name;
        }
    }
    .into()
}

/// The `name` of `#[switchyard(name = "...")]`, or the type's name.
fn wire_name(input: &syn::DeriveInput) -> syn::Result<String> {
    let mut name = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("switchyard")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                let value: syn::LitStr = meta.value()?.parse()?;
                if value.value().is_empty() {
                    return Err(syn::Error::new(value.span(), "a wire name cannot be empty"));
                }
                name = Some(value.value());
                Ok(())
            } else {
                Err(meta.error("unknown `switchyard` attribute; the one known is `name = \"...\"`"))
            }
        })?;
    }
    Ok(name.unwrap_or_else(|| input.ident.to_string()))
}
