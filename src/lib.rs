//! Switchyard: process managers and sagas declared in a small language,
//! checked at compile time, and run durably.
//!
//! This crate is the facade users depend on: it re-exports the runtime and
//! the macros, and nothing else.

pub use switchyard_macros::{Command, Event, process};
pub use switchyard_runtime::*;
