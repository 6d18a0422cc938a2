//! Prints the engine's tracing events as lines of the message flow, for the
//! examples: `flow::init("switchyard_runtime=info")` at the start of `main`.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, format};
use tracing_subscriber::registry::LookupSpan;

/// Writes each event's message, indented under the examples' own lines.
pub struct Flow;

struct Message<'w, 'a>(&'w mut format::Writer<'a>);

impl Visit for Message<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

impl<S, N> FormatEvent<S, N> for Flow
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        write!(writer, "  engine      ")?;
        event.record(&mut Message(&mut writer));
        writeln!(writer)
    }
}

/// Shows the engine's events allowed by `RUST_LOG`, or else by `default`, as
/// lines of the flow.
pub fn init(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .event_format(Flow)
        .init();
}
