//! The reads the store's thread answers (instances, the outbox, timers, dead
//! letters, the inboxes of command handlers) and the columns' encodings that writes share: ids as 16-byte
//! blobs, times as integers, bodies as the exact bytes they were given.

use std::sync::Arc;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, ToSql, params};

use crate::message::{Body, Envelope, MessageId, MessageKind, Timestamp};
use crate::store::{DeadLetter, InstanceRecord, InstanceTimer, Letter, OutboxRow, TimerRow};

pub(super) fn load(
    connection: &Connection,
    process: &'static str,
    keys: &[Arc<str>],
) -> rusqlite::Result<Vec<Option<InstanceRecord>>> {
    let mut instance = connection.prepare_cached(
        "SELECT version, state, data, completed_at FROM instances WHERE process = ?1 AND key = ?2",
    )?;
    let mut timers = connection
        .prepare_cached("SELECT timer, at, id FROM timers WHERE process = ?1 AND key = ?2")?;
    let mut records = Vec::with_capacity(keys.len());
    for key in keys {
        let found = instance
            .query_row(params![process, &**key], |row| {
                Ok(InstanceRecord {
                    version: row.get::<_, i64>(0)? as u64,
                    state: json_body(row, 1)?,
                    data: json_body(row, 2)?,
                    completed_at: row.get::<_, Option<i64>>(3)?.map(|at| Timestamp(at as u64)),
                    timers: Vec::new(),
                    slot: None,
                })
            })
            .optional()?;
        let Some(mut record) = found else {
            records.push(None);
            continue;
        };
        let rows = timers.query_map(params![process, &**key], |row| {
            Ok(InstanceTimer {
                timer: row.get::<_, String>(0)?.into(),
                at: Timestamp(row.get::<_, i64>(1)? as u64),
                id: read_id(row, 2)?,
            })
        })?;
        for timer in rows {
            record.timers.push(timer?);
        }
        records.push(Some(record));
    }
    Ok(records)
}

/// Whether message `id` was handled in `scope`: see [`super::write::mark_handled`].
pub(super) fn handled(
    connection: &Connection,
    scope: &str,
    id: MessageId,
) -> rusqlite::Result<bool> {
    let found = connection
        .prepare_cached("SELECT 1 FROM inbox WHERE process = ?1 AND message_id = ?2")?
        .query_row(params![scope, blob(id)], |_| Ok(()))
        .optional()?;
    Ok(found.is_some())
}

pub(super) fn pending_outbox(connection: &Connection) -> rusqlite::Result<Vec<OutboxRow>> {
    let mut select = connection.prepare_cached(
        "SELECT sequence, message_id, name, kind, body, causation, time, process, key
         FROM outbox ORDER BY sequence",
    )?;
    let rows = select.query_map([], |row| {
        Ok(OutboxRow {
            sequence: row.get::<_, i64>(0)? as u64,
            message: Envelope {
                id: read_id(row, 1)?,
                name: row.get::<_, String>(2)?.into(),
                kind: read_kind(row, 3)?,
                body: json_body(row, 4)?,
                causation: read_optional_id(row, 5)?,
                time: Timestamp(row.get::<_, i64>(6)? as u64),
            },
            process: row.get(7)?,
            key: row.get(8)?,
        })
    })?;
    rows.collect()
}

pub(super) fn pending_timers(connection: &Connection) -> rusqlite::Result<Vec<TimerRow>> {
    let mut select = connection
        .prepare_cached("SELECT process, key, timer, at, id FROM timers ORDER BY at, id")?;
    let rows = select.query_map([], |row| {
        Ok(TimerRow {
            process: row.get(0)?,
            key: row.get(1)?,
            timer: row.get(2)?,
            at: Timestamp(row.get::<_, i64>(3)? as u64),
            id: read_id(row, 4)?,
        })
    })?;
    rows.collect()
}

pub(super) const DEAD_LETTER_COLUMNS: &str =
    "id, kind, message_id, name, body, causation, time, process, key, reason, dead_at";

pub(super) fn dead_letters(connection: &Connection) -> rusqlite::Result<Vec<DeadLetter>> {
    let mut select = connection
        .prepare_cached(&format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters ORDER BY id"))?;
    let rows = select.query_map([], read_dead_letter)?;
    rows.collect()
}

pub(super) fn read_dead_letter(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeadLetter> {
    let kind: String = row.get(1)?;
    let process: Option<String> = row.get(7)?;
    let time = Timestamp(row.get::<_, i64>(6)? as u64);
    let letter = if kind == "timer" {
        Letter::Timer(TimerRow {
            process: process.clone().unwrap_or_default(),
            key: row.get::<_, Option<String>>(8)?.unwrap_or_default(),
            timer: row.get(3)?,
            at: time,
            id: read_id(row, 2)?,
        })
    } else {
        Letter::Message(Envelope {
            id: read_id(row, 2)?,
            name: row.get::<_, String>(3)?.into(),
            kind: read_kind(row, 1)?,
            body: json_body(row, 4)?,
            causation: read_optional_id(row, 5)?,
            time,
        })
    };
    Ok(DeadLetter {
        id: row.get::<_, i64>(0)? as u64,
        letter,
        process,
        reason: row.get(9)?,
        at: Timestamp(row.get::<_, i64>(10)? as u64),
    })
}

/// A message id as a 16-byte blob.
pub(super) struct Id([u8; 16]);

pub(super) fn blob(id: MessageId) -> Id {
    Id(id.as_uuid().into_bytes())
}

impl ToSql for Id {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Blob(&self.0)))
    }
}

pub(super) fn time(at: Timestamp) -> i64 {
    i64::try_from(at.0).unwrap_or(i64::MAX)
}

pub(super) fn read_id(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<MessageId> {
    let bytes: Vec<u8> = row.get(index)?;
    uuid::Uuid::from_slice(&bytes).map(MessageId::from_uuid).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Blob, Box::new(e))
    })
}

pub(super) fn read_optional_id(
    row: &rusqlite::Row<'_>,
    index: usize,
) -> rusqlite::Result<Option<MessageId>> {
    match row.get_ref(index)? {
        ValueRef::Null => Ok(None),
        _ => read_id(row, index).map(Some),
    }
}

pub(super) fn read_kind(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<MessageKind> {
    let text: String = row.get(index)?;
    MessageKind::parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            format!("`{text}` is not a kind of message").into(),
        )
    })
}

/// A body as it was written: JSON text, or the bytes of a body that is not
/// UTF-8, which are kept as a blob so that nothing of them is lost.
pub(super) fn json_body(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Body> {
    match row.get_ref(index)? {
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => Ok(Body::Json(Arc::from(bytes))),
        ValueRef::Null => Ok(Body::Json(Arc::from(&b"null"[..]))),
        _ => Err(rusqlite::Error::InvalidColumnType(
            index,
            "body".to_owned(),
            rusqlite::types::Type::Integer,
        )),
    }
}
