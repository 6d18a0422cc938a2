//! What callers run on the store's second connection, each call one
//! statement or two, apart from the writer's groups: the reads (instances,
//! dead letters, the inboxes of command handlers), and the claims of
//! outbox rows and timers, with the renewal of their leases.
//!
//! A claim is one `UPDATE` over a `SELECT ... FOR UPDATE SKIP LOCKED`: the
//! rows it takes are locked by it alone, and a row another claim has taken
//! meanwhile is seen again under its new owner and left out. So two nodes,
//! or two tasks of one node, never take one row both.

use std::collections::HashMap;
use std::sync::Arc;

use switchyard_runtime::store::{
    DeadLetter, InstanceRecord, InstanceTimer, Letter, OutboxRow, TimerRow,
};
use switchyard_runtime::{Body, Envelope, MessageId, MessageKind, Timestamp};
use tokio_postgres::Row;

use crate::Claim;
use crate::connection::Conn;

type Result<T> = std::result::Result<T, tokio_postgres::Error>;

/// The instances of `process` with these keys, in the order asked: two
/// statements for all of them, the instances and their timers.
pub(crate) async fn load(
    conn: &Conn,
    process: &str,
    keys: &[Arc<str>],
) -> Result<Vec<Option<InstanceRecord>>> {
    let names: Vec<&str> = keys.iter().map(|key| &**key).collect();
    let rows = conn
        .query(
            "SELECT key, version, state, data, completed_at FROM instances
             WHERE process = $1 AND key = ANY($2)",
            &[&process, &names],
        )
        .await?;
    let mut found: HashMap<String, InstanceRecord> = HashMap::with_capacity(rows.len());
    for row in rows {
        found.insert(row.try_get(0)?, instance(&row)?);
    }
    if !found.is_empty() {
        let timers = conn
            .query(
                "SELECT key, timer, at, id FROM timers WHERE process = $1 AND key = ANY($2)
                 ORDER BY at, id",
                &[&process, &names],
            )
            .await?;
        for row in timers {
            let key: &str = row.try_get(0)?;
            if let Some(record) = found.get_mut(key) {
                record.timers.push(InstanceTimer {
                    timer: row.try_get::<_, &str>(1)?.into(),
                    at: stamp(row.try_get(2)?),
                    id: MessageId::from_uuid(row.try_get(3)?),
                });
            }
        }
    }
    Ok(keys.iter().map(|key| found.remove(&**key)).collect())
}

fn instance(row: &Row) -> Result<InstanceRecord> {
    Ok(InstanceRecord {
        version: row.try_get::<_, i64>(1)? as u64,
        state: text_body(row.try_get(2)?),
        data: text_body(row.try_get(3)?),
        completed_at: row.try_get::<_, Option<i64>>(4)?.map(stamp),
        timers: Vec::new(),
        slot: None,
    })
}

/// Whether message `id` was handled in `scope`: a row of the processes'
/// inbox table, whose `process` is the scope.
pub(crate) async fn handled(conn: &Conn, scope: &str, id: MessageId) -> Result<bool> {
    let found = conn
        .query_opt(
            "SELECT 1 FROM inbox WHERE process = $1 AND message_id = $2",
            &[&scope, &id.as_uuid()],
        )
        .await?;
    Ok(found.is_some())
}

pub(crate) async fn dead_letters(conn: &Conn) -> Result<Vec<DeadLetter>> {
    let rows = conn
        .query(
            "SELECT id, kind, message_id, name, body, causation, time, process, key, reason,
             dead_at FROM dead_letters ORDER BY id",
            &[],
        )
        .await?;
    rows.iter().map(dead_letter).collect()
}

/// A dead letter from a row of `id, kind, message_id, name, body,
/// causation, time, process, key, reason, dead_at`.
pub(crate) fn dead_letter(row: &Row) -> Result<DeadLetter> {
    let kind: &str = row.try_get(1)?;
    let process: Option<String> = row.try_get(7)?;
    let time = stamp(row.try_get(6)?);
    let id = MessageId::from_uuid(row.try_get(2)?);
    let letter = match MessageKind::parse(kind) {
        Some(kind) => Letter::Message(Envelope {
            id,
            name: row.try_get::<_, String>(3)?.into(),
            kind,
            body: bytes_body(row.try_get::<_, Option<&[u8]>>(4)?.unwrap_or(b"null")),
            causation: row.try_get::<_, Option<uuid::Uuid>>(5)?.map(MessageId::from_uuid),
            time,
        }),
        // Written by this store as `timer`; any other word is a timer too,
        // rather than a letter that cannot be listed.
        None => Letter::Timer(TimerRow {
            process: process.clone().unwrap_or_default(),
            key: row.try_get::<_, Option<String>>(8)?.unwrap_or_default(),
            timer: row.try_get(3)?,
            at: time,
            id,
        }),
    };
    Ok(DeadLetter {
        id: row.try_get::<_, i64>(0)? as u64,
        letter,
        process,
        reason: row.try_get(9)?,
        at: stamp(row.try_get(10)?),
    })
}

/// Which rows a claim takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Take {
    /// Every row this node owns, whoever of its runs claimed it, and every
    /// row whose lease has run out: what a node starting up is to send.
    Held,
    /// The rows this store does not hold yet: another node's whose lease
    /// ran out, and this node's left by an earlier run. Each row is taken
    /// by one call only.
    New,
}

const CLAIM_HELD_OUTBOX: &str = "WITH claimed AS (
        SELECT sequence FROM outbox
        WHERE owner = $1 OR lease_until < clock_timestamp()
        FOR UPDATE SKIP LOCKED)
    UPDATE outbox AS o
    SET owner = $1, claim = $2, lease_until = clock_timestamp() + $3::float8 * interval '1 ms'
    FROM claimed WHERE o.sequence = claimed.sequence
    RETURNING o.sequence, o.message_id, o.name, o.kind, o.body, o.causation, o.time, o.process,
        o.key";

const CLAIM_NEW_OUTBOX: &str = "WITH claimed AS (
        SELECT sequence FROM outbox
        WHERE claim <> $2 AND (owner = $1 OR lease_until < clock_timestamp())
        FOR UPDATE SKIP LOCKED)
    UPDATE outbox AS o
    SET owner = $1, claim = $2, lease_until = clock_timestamp() + $3::float8 * interval '1 ms'
    FROM claimed WHERE o.sequence = claimed.sequence
    RETURNING o.sequence, o.message_id, o.name, o.kind, o.body, o.causation, o.time, o.process,
        o.key";

const CLAIM_HELD_TIMERS: &str = "WITH claimed AS (
        SELECT process, key, timer FROM timers
        WHERE owner = $1 OR lease_until < clock_timestamp()
        FOR UPDATE SKIP LOCKED)
    UPDATE timers AS t
    SET owner = $1, claim = $2, lease_until = clock_timestamp() + $3::float8 * interval '1 ms'
    FROM claimed
    WHERE (t.process, t.key, t.timer) = (claimed.process, claimed.key, claimed.timer)
    RETURNING t.process, t.key, t.timer, t.at, t.id";

const CLAIM_NEW_TIMERS: &str = "WITH claimed AS (
        SELECT process, key, timer FROM timers
        WHERE claim <> $2 AND (owner = $1 OR lease_until < clock_timestamp())
        FOR UPDATE SKIP LOCKED)
    UPDATE timers AS t
    SET owner = $1, claim = $2, lease_until = clock_timestamp() + $3::float8 * interval '1 ms'
    FROM claimed
    WHERE (t.process, t.key, t.timer) = (claimed.process, claimed.key, claimed.timer)
    RETURNING t.process, t.key, t.timer, t.at, t.id";

/// Claims outbox rows for this store, with a new lease: in commit order.
pub(crate) async fn claim_outbox(conn: &Conn, claim: &Claim, take: Take) -> Result<Vec<OutboxRow>> {
    let sql = match take {
        Take::Held => CLAIM_HELD_OUTBOX,
        Take::New => CLAIM_NEW_OUTBOX,
    };
    let rows = conn.query(sql, &[&claim.node.as_str(), &claim.token, &claim.lease_ms()]).await?;
    let mut claimed = rows.iter().map(outbox_row).collect::<Result<Vec<_>>>()?;
    // `RETURNING` gives the rows in no promised order.
    claimed.sort_by_key(|row| row.sequence);
    Ok(claimed)
}

fn outbox_row(row: &Row) -> Result<OutboxRow> {
    let kind: &str = row.try_get(3)?;
    Ok(OutboxRow {
        sequence: row.try_get::<_, i64>(0)? as u64,
        message: Envelope {
            id: MessageId::from_uuid(row.try_get(1)?),
            name: row.try_get::<_, String>(2)?.into(),
            // Written by this store from a kind it knew; a row someone
            // wrote by hand with another word is sent as an event.
            kind: MessageKind::parse(kind).unwrap_or(MessageKind::Event),
            body: bytes_body(row.try_get(4)?),
            causation: row.try_get::<_, Option<uuid::Uuid>>(5)?.map(MessageId::from_uuid),
            time: stamp(row.try_get(6)?),
        },
        process: row.try_get(7)?,
        key: row.try_get(8)?,
    })
}

/// Claims timers for this store, with a new lease: soonest first.
pub(crate) async fn claim_timers(conn: &Conn, claim: &Claim, take: Take) -> Result<Vec<TimerRow>> {
    let sql = match take {
        Take::Held => CLAIM_HELD_TIMERS,
        Take::New => CLAIM_NEW_TIMERS,
    };
    let rows = conn.query(sql, &[&claim.node.as_str(), &claim.token, &claim.lease_ms()]).await?;
    let mut claimed = rows
        .iter()
        .map(|row| {
            Ok(TimerRow {
                process: row.try_get(0)?,
                key: row.try_get(1)?,
                timer: row.try_get(2)?,
                at: stamp(row.try_get(3)?),
                id: MessageId::from_uuid(row.try_get(4)?),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    claimed.sort_by_key(|timer| (timer.at, timer.id));
    Ok(claimed)
}

/// Extends the lease of every row this store holds. Rows locked by a write
/// in progress are left out, not waited for: that write is changing them
/// (deleting, or claiming them anew with a lease of its own), and waiting
/// could deadlock with it.
pub(crate) async fn renew(conn: &Conn, claim: &Claim) -> Result<(u64, u64)> {
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
        [&claim.node.as_str(), &claim.token, &claim.lease_ms()];
    let outbox = conn
        .execute(
            "UPDATE outbox
             SET lease_until = clock_timestamp() + $3::float8 * interval '1 ms'
             WHERE sequence IN (SELECT sequence FROM outbox WHERE owner = $1 AND claim = $2
                                FOR UPDATE SKIP LOCKED)",
            &params,
        )
        .await?;
    let timers = conn
        .execute(
            "UPDATE timers
             SET lease_until = clock_timestamp() + $3::float8 * interval '1 ms'
             WHERE (process, key, timer) IN (
                SELECT process, key, timer FROM timers WHERE owner = $1 AND claim = $2
                FOR UPDATE SKIP LOCKED)",
            &params,
        )
        .await?;
    Ok((outbox, timers))
}

pub(crate) fn stamp(millis: i64) -> Timestamp {
    Timestamp(millis.max(0) as u64)
}

pub(crate) fn millis(at: Timestamp) -> i64 {
    i64::try_from(at.0).unwrap_or(i64::MAX)
}

fn text_body(text: &str) -> Body {
    Body::Json(Arc::from(text.as_bytes()))
}

fn bytes_body(bytes: &[u8]) -> Body {
    Body::Json(Arc::from(bytes))
}
