//! The Switchyard runtime: the [`Process`] trait that generated code
//! implements, the messages that travel between processes and other
//! contexts, and the durable [`Engine`] that routes them, runs `decide`,
//! commits what it decides to a [`Store`] and sends it through a [`Bus`].
//!
//! The runtime knows nothing of the language: generated code hands it a
//! static [`Description`] and the routes of its inputs, through the hidden
//! [`__private`] path.

mod bus;
mod clock;
pub mod conformance;
mod engine;
mod message;
mod process;
mod retry;
pub mod store;
pub mod testing;

pub use bus::{
    Ack, Bus, BusError, InProcessBus, Receiver, Rejection, Settle, Settled, Subscription,
};
pub use clock::{BoxFuture, Clock, ManualClock, SystemClock};
pub use engine::{
    CommandContext, Engine, EngineBuilder, Error, HandlerError, HandlerOptions, InstanceStatus,
    Stats,
};
pub use message::{
    Body, Command, DecodeError, Envelope, Event, MessageId, MessageKind, Payload, Timestamp,
};
pub use process::{
    Context, Decision, Description, Handles, Outcome, Outgoing, Process, Route, StateDescription,
    StateKind, TimerOp, Transition,
};
pub use retry::RetryPolicy;
pub use store::{DeadLetter, Letter, MemoryStore, SqliteStore, Store, StoreError};

/// What generated code uses. Not a public API: it changes with the generator.
#[doc(hidden)]
pub mod __private {
    pub use crate::message::{Body, Command, DecodeError, Envelope, Event, MessageKind, Payload};
    pub use crate::process::*;
    pub use serde;

    /// Decodes an input event and takes its correlation key.
    pub fn route<P, E>(envelope: &Envelope) -> Result<(P::Key, P::Input), DecodeError>
    where
        P: Handles<E>,
        E: Event,
        P::Input: From<E>,
    {
        let event: E = envelope.body.decode()?;
        let key = P::correlate(&event).clone();
        Ok((key, P::Input::from(event)))
    }

    /// Takes an event published in this program, typed, if it is an `E`:
    /// the `take` of a generated route.
    pub fn take<P, E>(event: &dyn std::any::Any) -> Option<(P::Key, P::Input)>
    where
        P: Handles<E>,
        E: Event,
        P::Input: From<E>,
    {
        let event = event.downcast_ref::<E>()?;
        Some((P::correlate(event).clone(), P::Input::from(event.clone())))
    }

    /// How `Handles::correlate` reads an event's correlation field: only a
    /// field of the key's type has this trait, and the error for any other
    /// names the event, the field and both types.
    #[diagnostic::on_unimplemented(
        message = "the correlation field `{Field}` of `{E}` is a `{Self}`, not the key type `{Key}`",
        label = "this field holds a `{Self}`",
        note = "`correlate by FIELD: {Key}` says that every input carries the key as a `{Key}`: give the field that type, or name another field with `correlate {E} by FIELD`"
    )]
    pub trait CorrelationField<Key, E, Field> {
        fn key(&self) -> &Key;
    }

    impl<Key, E, Field> CorrelationField<Key, E, Field> for Key {
        fn key(&self) -> &Key {
            self
        }
    }
}
