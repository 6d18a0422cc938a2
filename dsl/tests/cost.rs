//! The work of code generation grows linearly with an expression's depth.
//! It is measured by the bytes it allocates (a counting global allocator,
//! `allocation-counter`), not by time: building an operand apart and copying
//! it into its parent, level after level, allocates a number of bytes that
//! grows with the square of the depth, and a clock would only say so on a
//! quiet machine.

use switchyard_dsl::{codegen, compile};

/// A process whose handler sets `x` to `expr`.
fn process(expr: &str) -> String {
    format!(
        "process P {{\n    correlate by id: u64\n    data {{ x: u64 }}\n    initial state A {{\n        on E {{ set x = {expr} -> A }}\n    }}\n}}\n"
    )
}

/// The bytes that code generation allocates for `text`.
fn generated_bytes(text: &str) -> u64 {
    let (model, diagnostics) = compile(text);
    let model = model.unwrap_or_else(|| panic!("{text}\n{diagnostics:#?}"));
    allocation_counter::measure(|| drop(codegen(&model))).bytes_total
}

/// How much more the second doubling of `n` costs than the first: about 2
/// when the cost is linear in `n`, about 4 when it is quadratic.
fn growth(shape: impl Fn(usize) -> String) -> f64 {
    let [small, medium, large] = [60, 120, 240].map(|n| generated_bytes(&process(&shape(n))));
    (large - medium) as f64 / (medium - small) as f64
}

/// An expression of depth about `n`, by its name.
type Shape = (&'static str, fn(usize) -> String);

#[test]
fn generating_a_deep_expression_costs_in_proportion_to_its_depth() {
    let shapes: [Shape; 5] = [
        ("sum", |n| vec!["data.x"; n].join(" + ")),
        ("method chain", |n| format!("data.x{}", ".f()".repeat(n))),
        ("field chain", |n| format!("event{}", ".a".repeat(n))),
        ("prefix operators", |n| format!("{}data.x", "-".repeat(n))),
        ("mixed operators", |n| vec!["data.x * 2 - 1"; n / 2].join(" + ")),
    ];
    for (name, shape) in shapes {
        let growth = growth(shape);
        assert!(
            (1.5..2.5).contains(&growth),
            "{name}: doubling the depth multiplied the work by {growth:.2}"
        );
    }
}
