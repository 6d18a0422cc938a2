//! Snapshots of the generated code, laid out by prettyplease, so that a
//! change to code generation shows as a readable diff: the campaign example
//! and the pass-case processes that use every construct of the language.

use switchyard_dsl::{codegen, compile, skeleton};

/// The code generated for `text`, formatted.
fn generated(text: &str) -> String {
    let (model, diagnostics) = compile(text);
    let model = model.unwrap_or_else(|| panic!("the definition has errors: {diagnostics:#?}"));
    format(codegen(&model))
}

fn format(tokens: proc_macro2::TokenStream) -> String {
    let file: syn::File = syn::parse2(tokens).expect("generated code parses as a Rust file");
    prettyplease::unparse(&file)
}

#[test]
fn campaign() {
    insta::assert_snapshot!(generated(include_str!("../../examples/campaign/campaign.yard")));
}

#[test]
fn every_construct() {
    insta::assert_snapshot!(generated(include_str!("../../tests/processes/orders.yard")));
}

/// After a finding, the skeleton declares the types the process would have.
#[test]
fn skeleton_after_a_finding() {
    insta::assert_snapshot!(format(skeleton(
        r#"process Shipping {
    correlate by order_id: OrderId
    data { attempts: u32 = 0 }
    timer Deadline
    initial state Waiting {
        on OrderPaid { send ShipOrder { order_id: id } -> Shiping }
    }
    final state Shipped
}"#
    )));
}

/// A text that does not parse still names its process, states and key type.
#[test]
fn skeleton_of_a_text_that_does_not_parse() {
    insta::assert_snapshot!(format(skeleton(
        r#"process Shipping {
    correlate by order_id: orders::OrderId
    timer Deadline
    initial state Waiting { on OrderPaid { => Shipped } }
    final state Shipped
}"#
    )));
}
