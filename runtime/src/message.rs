//! Messages: the [`Event`] and [`Command`] traits that user types derive, the
//! [`Envelope`] every message travels in, and its [`Body`], which holds the
//! typed value inside one process and JSON once it has crossed a boundary.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A fact that happened in some context. Derive it: `#[derive(Event)]`.
pub trait Event: Serialize + DeserializeOwned + Clone + fmt::Debug + Send + Sync + 'static {
    /// The stable wire name: the type's name unless `#[switchyard(name = "...")]` says otherwise.
    const NAME: &'static str;
}

/// A request to another context to do something. Derive it: `#[derive(Command)]`.
pub trait Command:
    Serialize + DeserializeOwned + Clone + fmt::Debug + Send + Sync + 'static
{
    /// The stable wire name: the type's name unless `#[switchyard(name = "...")]` says otherwise.
    const NAME: &'static str;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Event,
    Command,
}

/// A message id. New messages get a new time-ordered id ([`MessageId::new`]);
/// messages decided in answer to an input get ids derived from the input's
/// id, so that handling the same input again produces the same ids and
/// receivers can drop duplicates.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub struct MessageId(uuid::Uuid);

impl MessageId {
    /// A new id: a version 7 UUID, which begins with the time in
    /// milliseconds. Ids made one after another on one thread sort in the
    /// order they were made, within a millisecond too: after the time comes
    /// a counter (RFC 9562's "fixed-length dedicated counter", 42 bits) that
    /// starts at a random value each millisecond and counts up, and then 32
    /// random bits. A database's index of them (the inbox) so grows at its
    /// end, not at random places among the thousands of ids of the same
    /// millisecond: a commit writes a few pages of that index instead of one
    /// page per message.
    ///
    /// Asking the operating system for randomness on every message costs a
    /// system call; instead each thread seeds a generator once from it and
    /// mixes a counter. Ids of two threads in the same millisecond collide
    /// only if their counters and their random bits both line up.
    pub fn new() -> MessageId {
        MessageId::at(Timestamp::now())
    }

    /// A new id as [`MessageId::new`] makes them, for a message sent at
    /// `time`: for a caller that has read the clock already.
    pub fn at(time: Timestamp) -> MessageId {
        /// Per thread: the generator's seed, how many ids it has made, and
        /// the millisecond and counter of the last one.
        #[derive(Clone, Copy)]
        struct Ids {
            seed: u64,
            made: u64,
            millis: u64,
            counter: u64,
        }
        thread_local! {
            static IDS: std::cell::Cell<Ids> = std::cell::Cell::new(Ids {
                seed: uuid::Uuid::new_v4().as_u64_pair().0,
                made: 0,
                millis: u64::MAX,
                counter: 0,
            });
        }
        const COUNTER_BITS: u32 = 42;
        let millis = time.millis();
        let (counter, random) = IDS.with(|ids| {
            let mut next = ids.get();
            let random = mix(next.seed.wrapping_add(next.made));
            next.made = next.made.wrapping_add(1);
            if next.millis == millis && next.counter + 1 < 1 << COUNTER_BITS {
                next.counter += 1;
            } else {
                // A new millisecond (or the clock went back): a random
                // start with its top bit clear, which leaves room to count.
                next.millis = millis;
                next.counter = (random >> 32) & ((1 << (COUNTER_BITS - 1)) - 1);
            }
            ids.set(next);
            (next.counter, random as u32)
        });
        // 12 bits of the counter where the builder puts `rand_a`, the other
        // 30 and the random 32 in `rand_b` (the builder overwrites the
        // version and variant bits, which are none of these).
        let rand_a = (counter >> 30) as u16;
        let rand_b = ((counter & ((1 << 30) - 1)) << 32) | u64::from(random);
        let mut bytes = [0u8; 10];
        bytes[..2].copy_from_slice(&rand_a.to_be_bytes());
        bytes[2..].copy_from_slice(&rand_b.to_be_bytes());
        MessageId(uuid::Builder::from_unix_timestamp_millis(millis, &bytes).into_uuid())
    }

    /// The id of the `index`-th message decided in answer to this one.
    pub fn derive(self, index: u32) -> MessageId {
        MessageId(uuid::Uuid::new_v5(&self.0, &index.to_be_bytes()))
    }

    /// The id of the `index`-th message that `scope` (a process's name)
    /// decided in answer to this one. One event can reach several processes;
    /// the scope keeps the ids of what each decides apart.
    pub fn derive_in(self, scope: &str, index: u32) -> MessageId {
        let mut name = Vec::with_capacity(scope.len() + 5);
        name.extend_from_slice(scope.as_bytes());
        name.push(0);
        name.extend_from_slice(&index.to_be_bytes());
        MessageId(uuid::Uuid::new_v5(&self.0, &name))
    }

    pub fn from_uuid(uuid: uuid::Uuid) -> MessageId {
        MessageId(uuid)
    }

    pub fn as_uuid(self) -> uuid::Uuid {
        self.0
    }
}

/// splitmix64's finalizer: a bijection that spreads every input bit over
/// the output.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Default for MessageId {
    fn default() -> Self {
        MessageId::new()
    }
}

impl std::str::FromStr for MessageId {
    type Err = uuid::Error;

    /// Reads an id as [`MessageId`]'s `Display` writes it.
    fn from_str(text: &str) -> Result<MessageId, uuid::Error> {
        uuid::Uuid::parse_str(text).map(MessageId)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Milliseconds since the Unix epoch: the time a message was sent, and `now`
/// in the language.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn now() -> Timestamp {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        // Seconds and milliseconds apart: `as_millis` divides 128-bit numbers.
        Timestamp(since.as_secs().saturating_mul(1000) + u64::from(since.subsec_millis()))
    }

    pub fn millis(self) -> u64 {
        self.0
    }
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;

    fn add(self, rhs: Duration) -> Timestamp {
        let millis = u64::try_from(rhs.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }
}

impl std::ops::Sub<Duration> for Timestamp {
    type Output = Timestamp;

    fn sub(self, rhs: Duration) -> Timestamp {
        let millis = u64::try_from(rhs.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_sub(millis))
    }
}

/// Hashes the wire names of messages and processes in the maps that route
/// them. Those maps hold only names the program registered, so nothing sent
/// from outside can crowd them; FNV-1a over a short name costs a fraction
/// of SipHash, and every message is routed by name more than once.
#[derive(Clone, Copy)]
pub(crate) struct NameHasher(u64);

impl Default for NameHasher {
    fn default() -> Self {
        NameHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by wire names.
pub(crate) type NameMap<K, V> =
    std::collections::HashMap<K, V, std::hash::BuildHasherDefault<NameHasher>>;

/// A typed message value that can also be written as JSON.
pub trait Payload: Any + fmt::Debug + Send + Sync {
    fn to_json(&self) -> Result<Vec<u8>, serde_json::Error>;
    fn as_any(&self) -> &dyn Any;
    /// The shared value as `Any`, so that it can be taken back as its own type.
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<T: Serialize + fmt::Debug + Send + Sync + 'static> Payload for T {
    fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// The content of a message: the typed value while it stays in one process,
/// JSON bytes when it came from outside.
#[derive(Clone, Debug)]
pub enum Body {
    Value(Arc<dyn Payload>),
    Json(Arc<[u8]>),
}

impl Body {
    pub fn value<T: Payload>(value: T) -> Body {
        Body::Value(Arc::new(value))
    }

    /// The message as `T`: a clone of the typed value, or the JSON decoded.
    pub fn decode<T: DeserializeOwned + Clone + 'static>(&self) -> Result<T, DecodeError> {
        match self {
            Body::Value(value) => {
                value.as_any().downcast_ref::<T>().cloned().ok_or_else(|| DecodeError::WrongType {
                    expected: std::any::type_name::<T>(),
                    found: format!("{value:?}"),
                })
            }
            Body::Json(bytes) => serde_json::from_slice(bytes).map_err(DecodeError::Json),
        }
    }

    /// The message as a shared `T`: the typed value itself when it is one
    /// (no copy), or the JSON decoded into a new one.
    pub fn decode_shared<T: DeserializeOwned + Send + Sync + 'static>(
        &self,
    ) -> Result<Arc<T>, DecodeError> {
        match self {
            Body::Value(value) => {
                value.clone().into_any().downcast::<T>().map_err(|_| DecodeError::WrongType {
                    expected: std::any::type_name::<T>(),
                    found: format!("{value:?}"),
                })
            }
            Body::Json(bytes) => {
                serde_json::from_slice(bytes).map(Arc::new).map_err(DecodeError::Json)
            }
        }
    }

    pub fn to_json(&self) -> Result<Arc<[u8]>, serde_json::Error> {
        match self {
            Body::Value(value) => Ok(value.to_json()?.into()),
            Body::Json(bytes) => Ok(bytes.clone()),
        }
    }
}

/// Why a message could not be read as the type its name says.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("expected a `{expected}`, found {found}")]
    WrongType { expected: &'static str, found: String },
}

/// A message with what the runtime needs to route it and to drop duplicates.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub id: MessageId,
    /// The wire name, [`Event::NAME`] or [`Command::NAME`].
    pub name: Cow<'static, str>,
    pub kind: MessageKind,
    pub body: Body,
    /// The message this one was decided in answer to.
    pub causation: Option<MessageId>,
    pub time: Timestamp,
}

impl Envelope {
    /// A new message with a fresh id, stamped with the current time.
    pub fn new(name: &'static str, kind: MessageKind, body: Body) -> Envelope {
        Envelope::at(name, kind, body, Timestamp::now())
    }

    /// A new message with a fresh id, stamped with `time`: for a caller
    /// with a clock of its own.
    pub(crate) fn at(
        name: &'static str,
        kind: MessageKind,
        body: Body,
        time: Timestamp,
    ) -> Envelope {
        Envelope {
            id: MessageId::at(time),
            name: Cow::Borrowed(name),
            kind,
            body,
            causation: None,
            time,
        }
    }

    pub fn event<E: Event>(event: E) -> Envelope {
        Envelope::new(E::NAME, MessageKind::Event, Body::value(event))
    }

    pub fn command<C: Command>(command: C) -> Envelope {
        Envelope::new(C::NAME, MessageKind::Command, Body::value(command))
    }

    /// The same message under another id: for sources that name their
    /// messages themselves, so that a redelivery carries the same id.
    pub fn with_id(mut self, id: MessageId) -> Envelope {
        self.id = id;
        self
    }

    pub fn with_time(mut self, time: Timestamp) -> Envelope {
        self.time = time;
        self
    }
}

impl MessageKind {
    /// The kind as stores and tools write it.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Event => "event",
            MessageKind::Command => "command",
        }
    }

    pub fn parse(text: &str) -> Option<MessageKind> {
        match text {
            "event" => Some(MessageKind::Event),
            "command" => Some(MessageKind::Command),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let input = MessageId::new();
        assert_eq!(input.derive(0), input.derive(0));
        assert_ne!(input.derive(0), input.derive(1));
        assert_ne!(input.derive(0), MessageId::new().derive(0));
    }

    #[test]
    fn new_ids_are_version_7_and_distinct() {
        let ids: std::collections::HashSet<MessageId> =
            (0..10_000).map(|_| MessageId::new()).collect();
        assert_eq!(ids.len(), 10_000);
        let id = MessageId::new().as_uuid();
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        // They begin with the time, so later ids sort after earlier ones.
        let before = MessageId::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(MessageId::new() > before);
        let other_thread = std::thread::spawn(MessageId::new).join().unwrap();
        assert!(!ids.contains(&other_thread));
    }

    #[test]
    fn ids_made_in_a_row_sort_in_that_order_within_a_millisecond() {
        for millis in [1_700_000_000_000, 1_700_000_000_001, 5] {
            let time = Timestamp(millis);
            let ids: Vec<MessageId> = (0..50_000).map(|_| MessageId::at(time)).collect();
            assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "not increasing at {millis}");
            for id in &ids {
                let uuid = id.as_uuid();
                assert_eq!(uuid.get_version_num(), 7);
                assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
                let (seconds, nanos) = uuid.get_timestamp().unwrap().to_unix();
                assert_eq!(seconds * 1000 + u64::from(nanos) / 1_000_000, millis);
            }
        }
        // Another thread, in the same millisecond, makes other ids.
        let time = Timestamp(1_700_000_000_002);
        let here: std::collections::HashSet<MessageId> =
            (0..10_000).map(|_| MessageId::at(time)).collect();
        let there = std::thread::spawn(move || {
            (0..10_000).map(|_| MessageId::at(time)).collect::<Vec<_>>()
        });
        assert!(there.join().unwrap().iter().all(|id| !here.contains(id)));
    }

    #[test]
    fn ids_derived_in_different_scopes_differ() {
        let input = MessageId::new();
        assert_eq!(input.derive_in("A", 0), input.derive_in("A", 0));
        assert_ne!(input.derive_in("A", 0), input.derive_in("B", 0));
        assert_ne!(input.derive_in("A", 0), input.derive_in("A", 1));
    }

    #[test]
    fn json_and_typed_bodies_decode_alike() {
        let typed = Body::value(vec![1u32, 2]);
        let json = Body::Json(typed.to_json().unwrap());
        assert_eq!(typed.decode::<Vec<u32>>().unwrap(), vec![1, 2]);
        assert_eq!(json.decode::<Vec<u32>>().unwrap(), vec![1, 2]);
        assert!(matches!(typed.decode::<String>(), Err(DecodeError::WrongType { .. })));
        assert!(matches!(
            Body::Json(Arc::from(&b"{"[..])).decode::<u32>(),
            Err(DecodeError::Json(_))
        ));
    }
}
