//! The wire format of the JetStream bus, as `docs/wire-format.md` documents
//! it for services written in other languages: the subject of a message,
//! its headers, and how a delivered NATS message becomes an [`Envelope`].
//!
//! Everything here is a plain function of its input, so that the format is
//! tested without a server.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use async_nats::HeaderMap;
use switchyard_runtime::{Body, Envelope, MessageId, MessageKind, Timestamp};

use crate::Error;

/// The message id. JetStream drops a message whose id it has stored within
/// the stream's duplicate window, so a resend under the same id is stored once.
pub const MESSAGE_ID: &str = "Nats-Msg-Id";
/// The wire name of the message, unescaped.
pub const TYPE: &str = "Switchyard-Type";
/// `event` or `command`.
pub const KIND: &str = "Switchyard-Kind";
/// The id of the message this one was decided in answer to.
pub const CAUSATION_ID: &str = "Switchyard-Causation-Id";
/// When the message was sent, in milliseconds since the Unix epoch.
pub const TIME: &str = "Switchyard-Time";
/// Always `application/json`: the body is the message as JSON.
pub const CONTENT_TYPE: &str = "Content-Type";

/// The namespace of the version 5 UUIDs made for ids that are not UUIDs
/// (another service's own ids) and for messages stored without an id.
const FOREIGN_IDS: uuid::Uuid = uuid::Uuid::from_u128(0x5f1c_7a4e_2b9d_4c61_9e83_0d4a_6b2f_71c5);

/// The subject of the message of `kind` named `name`:
/// `{prefix}.event.{name}` or `{prefix}.command.{name}`, the name escaped by
/// [`escape_name`].
pub fn subject(prefix: &str, kind: MessageKind, name: &str) -> String {
    format!("{prefix}.{}.{}", kind.as_str(), escape_name(name))
}

/// A wire name as subject tokens. ASCII letters, digits, `-` and `_` are
/// kept, and so is a `.` between two of them, so that `orders.placed` is the
/// two tokens `orders.placed` and a subscriber can take `orders.>`. Every
/// other byte of the name's UTF-8 (a `.` that would leave a token empty,
/// `%`, whitespace, `*`, `>`, ...) is written `%XX`, two upper-case hex
/// digits. No two names share a subject: `%` is always escaped, so the text
/// reads back to one name only.
pub fn escape_name(name: &str) -> String {
    let bytes = name.as_bytes();
    let plain =
        |i: usize| bytes.get(i).is_some_and(|b| b.is_ascii_alphanumeric() || b"-_".contains(b));
    let mut escaped = String::with_capacity(name.len());
    for (i, &byte) in bytes.iter().enumerate() {
        let keep = plain(i) || (byte == b'.' && i > 0 && plain(i - 1) && plain(i + 1));
        if keep {
            escaped.push(char::from(byte));
        } else {
            let _ = write!(escaped, "%{byte:02X}");
        }
    }
    escaped
}

/// The name of the durable consumer `consumer` uses for one wire name:
/// `{consumer}-{kind}-{name}`, the name with every byte other than ASCII
/// letters and digits written `_XX`, since consumer names may hold neither
/// `.` nor most punctuation (`orders.placed` is `orders_2Eplaced`).
pub fn consumer_name(consumer: &str, kind: MessageKind, name: &str) -> String {
    let mut durable = format!("{consumer}-{}-", kind.as_str());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() {
            durable.push(char::from(byte));
        } else {
            let _ = write!(durable, "_{byte:02X}");
        }
    }
    durable
}

/// The subject, headers and JSON body `message` is published with. A typed
/// body is written as JSON here.
pub(crate) fn outgoing(
    prefix: &str,
    message: &Envelope,
) -> Result<(String, HeaderMap, Vec<u8>), Error> {
    let body = message
        .body
        .to_json()
        .map_err(|source| Error::Encode { name: message.name.to_string(), source })?;
    let mut headers = HeaderMap::new();
    headers.insert(MESSAGE_ID, message.id.to_string().as_str());
    headers.insert(TYPE, message.name.as_ref());
    headers.insert(KIND, message.kind.as_str());
    if let Some(causation) = message.causation {
        headers.insert(CAUSATION_ID, causation.to_string().as_str());
    }
    headers.insert(TIME, message.time.millis().to_string().as_str());
    headers.insert(CONTENT_TYPE, "application/json");
    Ok((subject(prefix, message.kind, &message.name), headers, body.to_vec()))
}

/// Where a delivered message was stored, for what its headers leave out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stored<'a> {
    pub stream: &'a str,
    pub sequence: u64,
    pub published: Timestamp,
}

/// The envelope of a message delivered from the subject of `name`. The
/// subject names it, whatever `Switchyard-Type` says. Missing or odd headers
/// never refuse a message: the id is read as [`message_id`] reads it, or
/// made from where the message is stored (the same on every redelivery),
/// and the time is the stream's if the header has none. The body is taken
/// as it is, so that a body that is not the message's JSON reaches the
/// engine, which records it in its dead letters with the reason.
pub(crate) fn incoming(
    name: &str,
    kind: MessageKind,
    headers: Option<&HeaderMap>,
    payload: &[u8],
    stored: Stored<'_>,
) -> Envelope {
    let header = |key: &str| headers.and_then(|h| h.get(key)).map(|value| value.as_str());
    let id = match header(MESSAGE_ID) {
        Some(text) => message_id(text),
        None => {
            tracing::warn!(
                stream = stored.stream,
                sequence = stored.sequence,
                "a message on `{name}` has no `{MESSAGE_ID}` header: its id is made from its stream sequence, so a resend of it is not dropped"
            );
            let place = format!("{}/{}", stored.stream, stored.sequence);
            MessageId::from_uuid(uuid::Uuid::new_v5(&FOREIGN_IDS, place.as_bytes()))
        }
    };
    let time = header(TIME).and_then(|t| t.trim().parse().ok()).map_or(stored.published, Timestamp);
    Envelope {
        id,
        name: Cow::Owned(name.to_owned()),
        kind,
        body: Body::Json(Arc::from(payload)),
        causation: header(CAUSATION_ID).map(message_id),
        time,
    }
}

/// The [`MessageId`] of an id header: the UUID it holds, or else a version 5
/// UUID of its text, so that a service that names its messages its own way
/// gets the same id for the same text, and its resends are duplicates.
pub fn message_id(text: &str) -> MessageId {
    let text = text.trim();
    match text.parse() {
        Ok(id) => id,
        Err(_) => MessageId::from_uuid(uuid::Uuid::new_v5(&FOREIGN_IDS, text.as_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_subject_tokens_and_what_cannot_be_one_is_escaped() {
        let cases = [
            ("OrderPlaced", "OrderPlaced"),
            ("orders.placed", "orders.placed"),
            ("order_placed-v2", "order_placed-v2"),
            (".hidden", "%2Ehidden"),
            ("trailing.", "trailing%2E"),
            ("a..b", "a%2E%2Eb"),
            ("Orders::Placed", "Orders%3A%3APlaced"),
            ("a b*>", "a%20b%2A%3E"),
            ("100%", "100%25"),
            ("été", "%C3%A9t%C3%A9"),
        ];
        for (name, token) in cases {
            assert_eq!(escape_name(name), token, "{name}");
        }
        assert_eq!(
            subject("switchyard", MessageKind::Event, "orders.placed"),
            "switchyard.event.orders.placed"
        );
        assert_eq!(subject("acme.sy", MessageKind::Command, "Ship"), "acme.sy.command.Ship");
    }

    #[test]
    fn consumer_names_hold_no_dots_and_keep_names_apart() {
        assert_eq!(
            consumer_name("engine", MessageKind::Event, "orders.placed"),
            "engine-event-orders_2Eplaced"
        );
        assert_ne!(
            consumer_name("engine", MessageKind::Event, "a.b"),
            consumer_name("engine", MessageKind::Event, "a_b")
        );
        assert_eq!(consumer_name("engine", MessageKind::Command, "Ship"), "engine-command-Ship");
    }

    #[test]
    fn what_is_published_reads_back_as_the_same_envelope() {
        let cause = MessageId::new();
        let mut sent =
            Envelope::new("orders.placed", MessageKind::Event, Body::value(vec![1u32, 2]))
                .with_time(Timestamp(1_700_000_000_123));
        sent.causation = Some(cause);
        let (subject, headers, body) = outgoing("sy", &sent).unwrap();
        assert_eq!(subject, "sy.event.orders.placed");
        assert_eq!(headers.get(TYPE).unwrap().as_str(), "orders.placed");
        assert_eq!(headers.get(KIND).unwrap().as_str(), "event");
        assert_eq!(body, b"[1,2]");

        let stored = Stored { stream: "s", sequence: 7, published: Timestamp(5) };
        let read = incoming("orders.placed", MessageKind::Event, Some(&headers), &body, stored);
        assert_eq!(read.id, sent.id);
        assert_eq!(read.causation, Some(cause));
        assert_eq!(read.time, sent.time);
        assert_eq!(read.body.decode::<Vec<u32>>().unwrap(), vec![1, 2]);
    }

    #[test]
    fn a_message_without_headers_still_has_a_stable_id_and_a_time() {
        let stored = Stored { stream: "s", sequence: 7, published: Timestamp(5) };
        let first = incoming("Paid", MessageKind::Event, None, b"not json", stored);
        let again = incoming("Paid", MessageKind::Event, None, b"not json", stored);
        let other =
            incoming("Paid", MessageKind::Event, None, b"", Stored { sequence: 8, ..stored });
        assert_eq!(first.id, again.id);
        assert_ne!(first.id, other.id);
        assert_eq!(first.time, Timestamp(5));
        assert_eq!(first.causation, None);
        // The engine, not the bus, finds out that the body is not JSON.
        assert!(first.body.decode::<u32>().is_err());
    }

    #[test]
    fn ids_that_are_not_uuids_are_named_by_their_text() {
        let id = MessageId::new();
        assert_eq!(message_id(&id.to_string()), id);
        assert_eq!(message_id("order-42-placed"), message_id("order-42-placed"));
        assert_ne!(message_id("order-42-placed"), message_id("order-43-placed"));
    }
}
