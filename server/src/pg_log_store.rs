//! The relay's durable log on PostgreSQL, for several relay nodes sharing one database:
//! [`PgLogStore`] implements [`waybill_core::sync::LogStore`] with the same tables and
//! semantics as the SQLite backend ([`crate::log_store`]).
//!
//! One blocking connection per store (`postgres` crate). The schema is the numbered
//! files in `pg_migrations/`, tracked in the `waybill_schema` table and applied in one
//! transaction under an advisory lock, so relay nodes starting together do not race.
//! The tables live in the connection's current schema: put a relay in its own schema
//! with the URL's options, e.g.
//! `postgres://waybill@db/waybill?options=-c%20search_path%3Dwaybill`.
//!
//! # The sequence is gap-safe for cursors
//!
//! Devices resume from a cursor: "everything after seq N". That is only correct if,
//! once a reader can see seq N, it can already see every seq below N. A PostgreSQL
//! `SEQUENCE` / `BIGSERIAL` does not give that with several writers: writer A takes 10,
//! writer B takes 11 and commits first, a device reads up to 11 and stores cursor 11,
//! then A commits 10, which that device never reads.
//!
//! Here sequence numbers come from the single row of `log_head`, locked
//! (`SELECT … FOR UPDATE`) at the start of the commit transaction and updated to the
//! new head before it commits. The row lock is held until commit, so:
//! - writers that log changes serialize, but only for their short commit transaction
//!   (on any number of relay nodes, since the lock is in the database);
//! - the next writer reads the head only after the previous one committed (READ
//!   COMMITTED re-reads the locked row's newest version), so numbers are consecutive,
//!   never reused, and assigned in commit order;
//! - PostgreSQL makes a transaction visible before it releases its locks, so whenever
//!   a snapshot shows seq N, every seq below N was committed before N was even
//!   assigned and is in that snapshot too.
//!
//! `head()` reads `log_head`, which is updated in the same transaction as the rows it
//! covers: every number up to it is committed. The cost is one commit at a time for
//! logging writes; the test `concurrent_writers_leave_no_gap_for_a_reader` exercises
//! the guarantee and `a_naive_sequence_lets_a_cursor_skip_a_change` shows the trap.

use postgres::{Client, GenericClient, IsolationLevel, NoTls, Statement};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};
use waybill_core::protocol::LogEntry;
use waybill_core::sync::{
    AudienceUpdate, IngestBatch, LogStore, LogStoreError, QuarantinedChange, SavedDoc,
    StoredChange, ViewChange, audiences_by_doc, settle_relay_id,
};

/// The migrations, in order; migration `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("pg_migrations/0001_relay_log.sql"),
    include_str!("pg_migrations/0002_audience.sql"),
    include_str!("pg_migrations/0003_doc_version.sql"),
    include_str!("pg_migrations/0004_doc_snapshot.sql"),
];

/// The relay schema version this build creates and reads.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// First key of the advisory lock taken while migrating ("WYRL"); the second is the
/// schema name's hash, so relays in different schemas do not wait for each other.
const MIGRATION_LOCK: i32 = 0x5759_524C;

/// Lock the head row until commit and read it: the serialization point of the log.
const DOC_VERSION_SQL: &str = "SELECT version FROM doc_version WHERE doc_id = $1";
const LOCK_HEAD_SQL: &str = "SELECT head FROM log_head WHERE singleton FOR UPDATE";

/// The relay's log, quarantine and revocations in a PostgreSQL schema.
pub struct PgLogStore {
    inner: Mutex<Inner>,
    relay_id: String,
}

/// The connection and its prepared statements.
struct Inner {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl std::fmt::Debug for PgLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLogStore")
            .field("relay_id", &self.relay_id)
            .finish_non_exhaustive()
    }
}

/// A storage failure inside this module; converted to [`LogStoreError`] at the trait.
#[derive(Debug)]
struct Failure(LogStoreError);

impl From<postgres::Error> for Failure {
    fn from(e: postgres::Error) -> Self {
        Failure(LogStoreError::Backend(describe(&e)))
    }
}

impl From<Failure> for LogStoreError {
    fn from(f: Failure) -> Self {
        f.0
    }
}

type Res<T> = std::result::Result<T, Failure>;

/// A PostgreSQL error with the server's message when there is one.
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("PostgreSQL: {}: {} ({detail})", db.severity(), db.message()),
            None => format!("PostgreSQL: {}: {}", db.severity(), db.message()),
        },
        None => format!("PostgreSQL: {e}"),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A stored sequence number; a negative one cannot have been written by this schema.
fn to_seq(value: i64) -> Res<u64> {
    u64::try_from(value).map_err(|_| {
        Failure(LogStoreError::Corrupt(format!(
            "negative sequence number {value} in the relay log"
        )))
    })
}

/// A cursor as a query parameter (cursors beyond `i64::MAX` match nothing anyway).
fn to_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// A statement prepared once per connection.
fn prepared(
    cache: &mut HashMap<&'static str, Statement>,
    client: &mut impl GenericClient,
    sql: &'static str,
) -> Res<Statement> {
    if let Some(statement) = cache.get(sql) {
        return Ok(statement.clone());
    }
    let statement = client.prepare(sql)?;
    cache.insert(sql, statement.clone());
    Ok(statement)
}

/// Bring the schema up to date and settle the relay id, in one transaction under an
/// advisory lock. Returns the stored relay id.
fn migrate(client: &mut Client, requested: &str) -> Result<String, LogStoreError> {
    let open = |e: postgres::Error| {
        LogStoreError::Backend(format!("cannot open the relay schema: {}", describe(&e)))
    };
    let mut tx = client.transaction().map_err(open)?;
    let schema: Option<String> = tx
        .query_one("SELECT current_schema()", &[])
        .map_err(open)?
        .get(0);
    let schema = schema.ok_or_else(|| {
        LogStoreError::Backend(
            "the search_path names no existing schema: create it, or fix the URL's options"
                .to_owned(),
        )
    })?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&MIGRATION_LOCK, &schema],
    )
    .map_err(open)?;
    let (tracked, tables): (bool, i64) = {
        let row = tx
            .query_one(
                "SELECT bool_or(tablename = 'waybill_schema'), count(*)
                 FROM pg_tables WHERE schemaname = $1",
                &[&schema],
            )
            .map_err(open)?;
        (row.get::<_, Option<bool>>(0).unwrap_or(false), row.get(1))
    };
    if !tracked && tables > 0 {
        return Err(LogStoreError::Backend(format!(
            "schema {schema:?} has tables but is not a Waybill relay schema \
             (give the relay its own schema with the URL's options=-c search_path=...)"
        )));
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS waybill_schema (
             version    INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .map_err(open)?;
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM waybill_schema", &[])
        .map_err(open)?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(LogStoreError::Backend(format!(
            "relay database schema {found} is newer than this waybill ({SCHEMA_VERSION}); upgrade waybill"
        )));
    }
    for version in found..SCHEMA_VERSION {
        let step = usize::try_from(version)
            .ok()
            .and_then(|i| MIGRATIONS.get(i))
            .ok_or_else(|| {
                LogStoreError::Backend(format!("no migration to schema {}", version + 1))
            })?;
        tx.batch_execute(step).map_err(open)?;
        tx.execute(
            "INSERT INTO waybill_schema (version) VALUES ($1)",
            &[&(version + 1)],
        )
        .map_err(open)?;
    }
    if found < SCHEMA_VERSION {
        tracing::info!(schema = %schema, from = found, to = SCHEMA_VERSION, "relay schema migrated");
    }
    let stored: Option<String> = tx
        .query_opt("SELECT value FROM meta WHERE key = 'relay_id'", &[])
        .map_err(open)?
        .map(|r| r.get(0));
    let (relay_id, record) = settle_relay_id(stored, requested)?;
    if record {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('relay_id', $1)",
            &[&relay_id],
        )
        .map_err(open)?;
    }
    tx.commit().map_err(open)?;
    Ok(relay_id)
}

impl PgLogStore {
    /// The quarantine with ids, oldest first (`waybill quarantine list --postgres`).
    pub fn quarantine_list(&self) -> Result<Vec<(i64, QuarantinedChange)>, LogStoreError> {
        self.rows(
            "SELECT id, doc_id, hash, bytes, device_id, code, reason, at_ms
             FROM quarantine ORDER BY id",
            &[],
            numbered_quarantine_row,
        )
    }

    /// One quarantined change by id (`waybill quarantine show --postgres`).
    pub fn quarantine_entry(
        &self,
        id: i64,
    ) -> Result<Option<(i64, QuarantinedChange)>, LogStoreError> {
        Ok(self
            .rows(
                "SELECT id, doc_id, hash, bytes, device_id, code, reason, at_ms
                 FROM quarantine WHERE id = $1",
                &[&id],
                numbered_quarantine_row,
            )?
            .into_iter()
            .next())
    }

    /// Connect to PostgreSQL at `url` (a `postgres://` URL or a key=value string) and
    /// bring the relay schema in the connection's current schema up to date. A new
    /// schema records `relay_id`; an existing one keeps the id it was created with
    /// (devices hold cursors per relay id), and a different `relay_id` is ignored with
    /// a warning. Every relay node sharing the log connects to the same schema.
    pub fn connect(url: &str, relay_id: &str) -> Result<Self, LogStoreError> {
        // The URL may carry a password: it is not repeated in errors.
        let mut client = Client::connect(url, NoTls).map_err(|e| {
            LogStoreError::Backend(format!("cannot connect to PostgreSQL: {}", describe(&e)))
        })?;
        let relay_id = migrate(&mut client, relay_id)?;
        Ok(Self {
            inner: Mutex::new(Inner {
                client,
                statements: HashMap::new(),
            }),
            relay_id,
        })
    }

    /// Run `f` on the connection (one caller at a time).
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> Res<T>) -> Result<T, LogStoreError> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(f(&mut inner)?)
    }

    /// Run one read-only statement and map its rows.
    fn rows<T>(
        &self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
        row: impl Fn(&postgres::Row) -> Res<T>,
    ) -> Result<Vec<T>, LogStoreError> {
        self.with(|inner| {
            let statement = prepared(&mut inner.statements, &mut inner.client, sql)?;
            inner
                .client
                .query(&statement, params)?
                .iter()
                .map(&row)
                .collect()
        })
    }

    /// One boolean from a statement returning one row.
    fn flag(
        &self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<bool, LogStoreError> {
        self.with(|inner| {
            let statement = prepared(&mut inner.statements, &mut inner.client, sql)?;
            Ok(inner.client.query_one(&statement, params)?.get(0))
        })
    }
}

fn entry_row(r: &postgres::Row) -> Res<LogEntry> {
    Ok(LogEntry {
        seq: to_seq(r.get(0))?,
        doc_id: r.get(1),
        bytes: r.get(2),
    })
}

/// A quarantine row with its id first (for the operators' commands).
fn numbered_quarantine_row(r: &postgres::Row) -> Res<(i64, QuarantinedChange)> {
    Ok((
        r.get(0),
        QuarantinedChange {
            change: StoredChange {
                doc_id: r.get(1),
                hash: r.get(2),
                bytes: r.get(3),
                device_id: r.get(4),
            },
            code: r.get(5),
            reason: r.get(6),
            at_ms: r.get(7),
        },
    ))
}

fn quarantine_row(r: &postgres::Row) -> Res<QuarantinedChange> {
    Ok(QuarantinedChange {
        change: StoredChange {
            doc_id: r.get(0),
            hash: r.get(1),
            bytes: r.get(2),
            device_id: r.get(3),
        },
        code: r.get(4),
        reason: r.get(5),
        at_ms: r.get(6),
    })
}

fn commit_batch(inner: &mut Inner, batch: &IngestBatch) -> Res<Vec<u64>> {
    let mut seqs = Vec::with_capacity(batch.log.len());
    if batch.is_empty() {
        return Ok(seqs);
    }
    let now = now_ms();
    let Inner { client, statements } = inner;
    let mut tx = client.transaction()?;
    let mut prep = |tx: &mut postgres::Transaction<'_>, sql| prepared(statements, tx, sql);
    // Everything that reads or writes the log (or stamps view changes with a log
    // position) runs under the head lock; a batch that only quarantines or removes
    // waiting changes does not need it.
    // Document versions are checked and advanced under the same lock, so the check
    // and the commit are one step for every node.
    let ordered = !batch.log.is_empty()
        || !batch.waiting.is_empty()
        || !batch.audience.is_empty()
        || !batch.expect.is_empty();
    let mut head = 0;
    if ordered {
        let lock = prep(&mut tx, LOCK_HEAD_SQL)?;
        head = to_seq(tx.query_one(&lock, &[])?.get(0))?;
    }
    if !batch.expect.is_empty() {
        let version = prep(&mut tx, DOC_VERSION_SQL)?;
        let mut stale = Vec::new();
        for (doc_id, expected) in &batch.expect {
            let found = match tx.query_opt(&version, &[doc_id])? {
                Some(row) => to_seq(row.get(0))?,
                None => 0,
            };
            if found != *expected {
                stale.push(doc_id.clone());
            }
        }
        if !stale.is_empty() {
            return Err(Failure(LogStoreError::Conflict(stale)));
        }
    }
    let touched = batch.touched_docs();
    if !touched.is_empty() {
        let bump = prep(
            &mut tx,
            "INSERT INTO doc_version (doc_id, version) VALUES ($1, 1)
             ON CONFLICT (doc_id) DO UPDATE SET version = doc_version.version + 1",
        )?;
        for doc_id in &touched {
            tx.execute(&bump, &[doc_id])?;
        }
    }
    if !batch.log.is_empty() {
        let insert = prep(
            &mut tx,
            "INSERT INTO log (seq, doc_id, hash, bytes, device_id, accepted_ms)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (hash) DO NOTHING
             RETURNING seq",
        )?;
        let existing = prep(&mut tx, "SELECT seq FROM log WHERE hash = $1")?;
        let mut next = head + 1;
        for c in &batch.log {
            let seq = to_param(next);
            let inserted = tx.query_opt(
                &insert,
                &[&seq, &c.doc_id, &c.hash, &c.bytes, &c.device_id, &now],
            )?;
            match inserted {
                Some(_) => {
                    seqs.push(next);
                    head = next;
                    next += 1;
                }
                None => seqs.push(to_seq(tx.query_one(&existing, &[&c.hash])?.get(0))?),
            }
        }
        let advance = prep(&mut tx, "UPDATE log_head SET head = $1 WHERE singleton")?;
        tx.execute(&advance, &[&to_param(head)])?;
    }
    if !batch.no_longer_waiting.is_empty() {
        let remove = prep(&mut tx, "DELETE FROM waiting WHERE hash = $1")?;
        for hash in &batch.no_longer_waiting {
            tx.execute(&remove, &[hash])?;
        }
    }
    if !batch.waiting.is_empty() {
        // Not stored when already logged; stored once however often it arrives.
        let wait = prep(
            &mut tx,
            "INSERT INTO waiting (hash, doc_id, bytes, device_id, received_ms)
             SELECT $1::bytea, $2::text, $3::bytea, $4::text, $5::bigint
             WHERE NOT EXISTS (SELECT 1 FROM log WHERE hash = $1::bytea)
             ON CONFLICT (hash) DO NOTHING",
        )?;
        for c in &batch.waiting {
            tx.execute(&wait, &[&c.hash, &c.doc_id, &c.bytes, &c.device_id, &now])?;
        }
    }
    if !batch.quarantine.is_empty() {
        let refuse = prep(
            &mut tx,
            "INSERT INTO quarantine (doc_id, hash, bytes, device_id, code, reason, at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )?;
        for q in &batch.quarantine {
            let c = &q.change;
            tx.execute(
                &refuse,
                &[
                    &c.doc_id,
                    &c.hash,
                    &c.bytes,
                    &c.device_id,
                    &q.code,
                    &q.reason,
                    &q.at_ms,
                ],
            )?;
        }
    }
    if !batch.audience.is_empty() {
        let at = seqs.iter().copied().max().unwrap_or(head);
        let current = prep(&mut tx, "SELECT principal FROM audience WHERE doc_id = $1")?;
        let add = prep(
            &mut tx,
            "INSERT INTO audience (doc_id, principal) VALUES ($1, $2)",
        )?;
        let remove = prep(
            &mut tx,
            "DELETE FROM audience WHERE doc_id = $1 AND principal = $2",
        )?;
        let record = prep(
            &mut tx,
            "INSERT INTO view_changes (principal, doc_id, seq, joined) VALUES ($1, $2, $3, $4)",
        )?;
        write_audiences(
            &mut tx,
            &batch.audience,
            at,
            [&current, &add, &remove, &record],
        )?;
    }
    tx.commit()?;
    Ok(seqs)
}

/// Replace documents' audiences, recording who gained and who lost each at `seq`.
fn write_audiences(
    tx: &mut postgres::Transaction<'_>,
    updates: &[AudienceUpdate],
    seq: u64,
    [current, add, remove, record]: [&Statement; 4],
) -> Res<()> {
    let seq = to_param(seq);
    for update in updates {
        let old: BTreeSet<String> = tx
            .query(current, &[&update.doc_id])?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for principal in update.audience.difference(&old) {
            tx.execute(add, &[&update.doc_id, principal])?;
            tx.execute(record, &[principal, &update.doc_id, &seq, &true])?;
        }
        for principal in old.difference(&update.audience) {
            tx.execute(remove, &[&update.doc_id, principal])?;
            tx.execute(record, &[principal, &update.doc_id, &seq, &false])?;
        }
    }
    Ok(())
}

impl LogStore for PgLogStore {
    fn relay_id(&self) -> String {
        self.relay_id.clone()
    }

    fn head(&self) -> Result<u64, LogStoreError> {
        // Committed together with the rows it covers: every number up to it is visible.
        self.with(|inner| {
            let statement = prepared(
                &mut inner.statements,
                &mut inner.client,
                "SELECT head FROM log_head WHERE singleton",
            )?;
            to_seq(inner.client.query_one(&statement, &[])?.get(0))
        })
    }

    fn oldest_resumable(&self) -> Result<u64, LogStoreError> {
        let values = self.rows(
            "SELECT value FROM meta WHERE key = 'pruned_through'",
            &[],
            |r| Ok(r.get::<_, String>(0)),
        )?;
        match values.first() {
            None => Ok(0),
            Some(v) => v.parse().map_err(|_| {
                LogStoreError::Corrupt(format!(
                    "meta pruned_through is not a sequence number: {v:?}"
                ))
            }),
        }
    }

    fn commit(&mut self, batch: &IngestBatch) -> Result<Vec<u64>, LogStoreError> {
        self.with(|inner| commit_batch(inner, batch))
    }

    fn read_log(
        &self,
        after: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<LogEntry>, LogStoreError> {
        let limit = i64::try_from(max_entries.max(1)).unwrap_or(i64::MAX);
        let rows = self.rows(
            "SELECT seq, doc_id, bytes FROM log WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&to_param(after), &limit],
            entry_row,
        )?;
        let mut out = Vec::with_capacity(rows.len());
        let mut bytes = 0usize;
        for entry in rows {
            bytes = bytes.saturating_add(entry.bytes.len());
            out.push(entry);
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    fn contains(&self, hash: &[u8]) -> Result<bool, LogStoreError> {
        self.flag(
            "SELECT EXISTS (SELECT 1 FROM log WHERE hash = $1)
                 OR EXISTS (SELECT 1 FROM waiting WHERE hash = $1)",
            &[&hash],
        )
    }

    fn stored_among(
        &self,
        hashes: &[Vec<u8>],
    ) -> Result<std::collections::HashSet<Vec<u8>>, LogStoreError> {
        if hashes.is_empty() {
            return Ok(std::collections::HashSet::new());
        }
        let found = self.rows(
            "SELECT hash FROM log WHERE hash = ANY($1)
             UNION SELECT hash FROM waiting WHERE hash = ANY($1)",
            &[&hashes],
            |r| Ok(r.get::<_, Vec<u8>>(0)),
        )?;
        Ok(found.into_iter().collect())
    }

    fn quarantined_among(
        &self,
        hashes: &[Vec<u8>],
    ) -> Result<std::collections::HashSet<Vec<u8>>, LogStoreError> {
        if hashes.is_empty() {
            return Ok(std::collections::HashSet::new());
        }
        let found = self.rows(
            "SELECT DISTINCT hash FROM quarantine WHERE hash = ANY($1) AND octet_length(hash) > 0",
            &[&hashes],
            |r| Ok(r.get::<_, Vec<u8>>(0)),
        )?;
        Ok(found.into_iter().collect())
    }

    fn doc_changes(&self, doc_id: &str) -> Result<Vec<Vec<u8>>, LogStoreError> {
        self.with(|inner| {
            // One snapshot, so the logged and waiting halves agree.
            let mut tx = inner
                .client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let logged = prepared(
                &mut inner.statements,
                &mut tx,
                "SELECT bytes FROM log WHERE doc_id = $1 ORDER BY seq",
            )?;
            let waiting = prepared(
                &mut inner.statements,
                &mut tx,
                "SELECT bytes FROM waiting WHERE doc_id = $1 ORDER BY id",
            )?;
            let mut out: Vec<Vec<u8>> = tx
                .query(&logged, &[&doc_id])?
                .iter()
                .map(|r| r.get(0))
                .collect();
            out.extend(tx.query(&waiting, &[&doc_id])?.iter().map(|r| r.get(0)));
            tx.commit()?;
            Ok(out)
        })
    }

    fn doc_version(&self, doc_id: &str) -> Result<u64, LogStoreError> {
        let found = self.rows(DOC_VERSION_SQL, &[&doc_id], |r| to_seq(r.get(0)))?;
        Ok(found.first().copied().unwrap_or(0))
    }

    fn doc_ids(&self) -> Result<Vec<String>, LogStoreError> {
        self.rows(
            "SELECT doc_id FROM log UNION SELECT doc_id FROM waiting ORDER BY doc_id",
            &[],
            |r| Ok(r.get(0)),
        )
    }

    fn is_quarantined(&self, hash: &[u8]) -> Result<bool, LogStoreError> {
        self.flag(
            "SELECT EXISTS (SELECT 1 FROM quarantine WHERE hash = $1 AND octet_length(hash) > 0)",
            &[&hash],
        )
    }

    fn quarantined(&self) -> Result<Vec<QuarantinedChange>, LogStoreError> {
        self.rows(
            "SELECT doc_id, hash, bytes, device_id, code, reason, at_ms
             FROM quarantine ORDER BY id",
            &[],
            quarantine_row,
        )
    }

    fn audience_of(&self, doc_id: &str) -> Result<BTreeSet<String>, LogStoreError> {
        Ok(self
            .rows(
                "SELECT principal FROM audience WHERE doc_id = $1",
                &[&doc_id],
                |r| Ok(r.get(0)),
            )?
            .into_iter()
            .collect())
    }

    fn audiences_of(
        &self,
        doc_ids: &[&str],
    ) -> Result<HashMap<String, BTreeSet<String>>, LogStoreError> {
        if doc_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(String, String)> = self.rows(
            "SELECT doc_id, principal FROM audience WHERE doc_id = ANY($1)",
            &[&doc_ids],
            |r| Ok((r.get(0), r.get(1))),
        )?;
        Ok(audiences_by_doc(rows))
    }

    fn view(&self, principal: &str) -> Result<Vec<String>, LogStoreError> {
        self.rows(
            "SELECT doc_id FROM audience WHERE principal = $1 ORDER BY doc_id",
            &[&principal],
            |r| Ok(r.get(0)),
        )
    }

    fn view_changes(&self, principal: &str, after: u64) -> Result<Vec<ViewChange>, LogStoreError> {
        self.rows(
            "SELECT principal, doc_id, seq, joined FROM view_changes
             WHERE principal = $1 AND seq > $2 ORDER BY seq, id",
            &[&principal, &to_param(after)],
            |r| {
                Ok(ViewChange {
                    principal: r.get(0),
                    doc_id: r.get(1),
                    seq: to_seq(r.get(2))?,
                    joined: r.get(3),
                })
            },
        )
    }

    fn doc_log(&self, doc_id: &str) -> Result<Vec<LogEntry>, LogStoreError> {
        self.rows(
            "SELECT seq, doc_id, bytes FROM log WHERE doc_id = $1 ORDER BY seq",
            &[&doc_id],
            entry_row,
        )
    }

    fn docs_log(&self, doc_ids: &[String]) -> Result<Vec<LogEntry>, LogStoreError> {
        if doc_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.rows(
            "SELECT seq, doc_id, bytes FROM log WHERE doc_id = ANY($1) ORDER BY seq",
            &[&doc_ids],
            entry_row,
        )
    }

    fn fresh_snapshots(&self, doc_ids: &[String]) -> Result<Vec<(String, Vec<u8>)>, LogStoreError> {
        if doc_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.rows(
            "SELECT s.doc_id, s.bytes FROM doc_snapshot s
             JOIN doc_version v ON v.doc_id = s.doc_id AND v.version = s.version
             WHERE s.doc_id = ANY($1)",
            &[&doc_ids],
            |r| Ok((r.get::<_, String>(0), r.get::<_, Vec<u8>>(1))),
        )
    }

    fn put_snapshots(&mut self, saved: &[SavedDoc]) -> Result<(), LogStoreError> {
        if saved.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = saved.iter().map(|d| d.doc_id.as_str()).collect();
        let versions: Vec<i64> = saved
            .iter()
            .map(|d| i64::try_from(d.version).unwrap_or(i64::MAX))
            .collect();
        let bytes: Vec<&[u8]> = saved.iter().map(|d| d.bytes.as_slice()).collect();
        self.with(|inner| {
            let statement = prepared(
                &mut inner.statements,
                &mut inner.client,
                "INSERT INTO doc_snapshot (doc_id, version, bytes)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[])
                 ON CONFLICT (doc_id) DO UPDATE SET version = excluded.version, bytes = excluded.bytes
                 WHERE excluded.version > doc_snapshot.version",
            )?;
            inner
                .client
                .execute(&statement, &[&ids, &versions, &bytes])?;
            Ok(())
        })
    }

    fn is_revoked(&self, device_id: &str) -> Result<bool, LogStoreError> {
        self.flag(
            "SELECT EXISTS (SELECT 1 FROM revoked WHERE device_id = $1)",
            &[&device_id],
        )
    }

    fn revoke(&mut self, device_id: &str) -> Result<(), LogStoreError> {
        self.with(|inner| {
            let statement = prepared(
                &mut inner.statements,
                &mut inner.client,
                "INSERT INTO revoked (device_id, at_ms) VALUES ($1, $2)
                 ON CONFLICT (device_id) DO NOTHING",
            )?;
            inner.client.execute(&statement, &[&device_id, &now_ms()])?;
            Ok(())
        })?;
        tracing::info!(device = %device_id, "device revoked");
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;
    use waybill_core::sync::{log_store_conformance, log_store_reopen_conformance};

    use crate::testing::{PgSchema as Schema, postgres_server};

    fn server() -> Option<String> {
        postgres_server("pg_log_store")
    }

    fn open(schema: &Schema, relay_id: &str) -> PgLogStore {
        PgLogStore::connect(&schema.url, relay_id).unwrap()
    }

    fn change(doc: &str, n: u32, len: usize) -> StoredChange {
        let mut hash = vec![0x5A; 32];
        hash[..4].copy_from_slice(&n.to_be_bytes());
        StoredChange {
            doc_id: doc.to_owned(),
            hash,
            bytes: vec![(n % 251) as u8; len],
            device_id: "dev-1".to_owned(),
        }
    }

    fn log_batch(changes: Vec<StoredChange>) -> IngestBatch {
        IngestBatch {
            log: changes,
            ..IngestBatch::default()
        }
    }

    #[test]
    fn passes_the_conformance_suite() {
        let Some(server) = server() else { return };
        let started = Instant::now();
        let mut schemas = Vec::new();
        log_store_conformance(|| {
            let schema = Schema::new(&server);
            let store = open(&schema, "relay-test");
            schemas.push(schema);
            store
        });
        println!(
            "conformance: {} stores in {:?}",
            schemas.len(),
            started.elapsed()
        );
    }

    #[test]
    fn reopening_keeps_data_and_the_stored_relay_id() {
        let Some(server) = server() else { return };
        let schema = Schema::new(&server);
        log_store_reopen_conformance(|relay_id| open(&schema, relay_id));
    }

    #[test]
    fn nodes_starting_together_migrate_once() {
        let Some(server) = server() else { return };
        let schema = Arc::new(Schema::new(&server));
        let nodes: Vec<_> = (0..6)
            .map(|i| {
                let schema = Arc::clone(&schema);
                std::thread::spawn(move || open(&schema, &format!("relay-{i}")).relay_id())
            })
            .collect();
        let ids: BTreeSet<String> = nodes.into_iter().map(|n| n.join().unwrap()).collect();
        assert_eq!(
            ids.len(),
            1,
            "every node sees the one stored relay id: {ids:?}"
        );
        let versions: Vec<i32> = schema
            .client()
            .query("SELECT version FROM waybill_schema ORDER BY version", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    }

    #[test]
    fn a_foreign_or_newer_schema_is_refused() {
        let Some(server) = server() else { return };
        let foreign = Schema::new(&server);
        foreign
            .client()
            .batch_execute("CREATE TABLE log (line TEXT)")
            .unwrap();
        match PgLogStore::connect(&foreign.url, "relay") {
            Err(LogStoreError::Backend(msg)) => {
                assert!(msg.contains("not a Waybill relay schema"), "{msg}");
            }
            other => panic!("foreign schema accepted: {other:?}"),
        }

        let newer = Schema::new(&server);
        drop(open(&newer, "relay"));
        newer
            .client()
            .execute(
                "INSERT INTO waybill_schema (version) VALUES ($1)",
                &[&(SCHEMA_VERSION + 1)],
            )
            .unwrap();
        match PgLogStore::connect(&newer.url, "relay") {
            Err(LogStoreError::Backend(msg)) => assert!(msg.contains("upgrade waybill"), "{msg}"),
            other => panic!("future schema accepted: {other:?}"),
        }

        let missing = format!(
            "{server}{}options=-c%20search_path%3Dwb_test_does_not_exist",
            if server.contains('?') { '&' } else { '?' }
        );
        assert!(matches!(
            PgLogStore::connect(&missing, "relay"),
            Err(LogStoreError::Backend(msg)) if msg.contains("no existing schema")
        ));
    }

    /// Two writers on two connections commit batches as fast as they can while a
    /// reader follows the log with a cursor, as a device does. The reader must see
    /// every committed sequence number exactly once, in order, and whenever `head()`
    /// says N, reading up to N must find every entry up to N. On a plain
    /// `BIGSERIAL` (see the next test) seq 11 can become visible before seq 10 and the
    /// reader's cursor jumps over 10 for good.
    #[test]
    fn concurrent_writers_leave_no_gap_for_a_reader() {
        let Some(server) = server() else { return };
        let schema = Arc::new(Schema::new(&server));
        drop(open(&schema, "relay"));
        const WRITERS: u32 = 2;
        const BATCHES: u32 = 250;
        let started = Instant::now();
        let done = Arc::new(AtomicBool::new(false));

        let reader = {
            let (schema, done) = (Arc::clone(&schema), Arc::clone(&done));
            std::thread::spawn(move || {
                let store = open(&schema, "relay");
                let mut seen: Vec<LogEntry> = Vec::new();
                let mut cursor = 0;
                let mut reads = 0u64;
                loop {
                    // Read `done` first: entries committed before it was set are
                    // visible to the reads that follow.
                    let finished = done.load(Ordering::SeqCst);
                    let head = store.head().unwrap();
                    loop {
                        let page = store.read_log(cursor, 16, usize::MAX).unwrap();
                        reads += 1;
                        let Some(last) = page.last() else { break };
                        for entry in &page {
                            assert_eq!(
                                entry.seq,
                                cursor + 1,
                                "the reader's cursor skipped a change (cursor {cursor})"
                            );
                            cursor = entry.seq;
                        }
                        assert_eq!(cursor, last.seq);
                        seen.extend(page);
                    }
                    assert!(
                        cursor >= head,
                        "head() said {head} but only {cursor} entries were readable"
                    );
                    if finished {
                        return (seen, reads);
                    }
                }
            })
        };

        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let schema = Arc::clone(&schema);
                std::thread::spawn(move || {
                    let mut store = open(&schema, "relay");
                    let mut committed = Vec::new();
                    for b in 0..BATCHES {
                        let size = 1 + (b % 4);
                        let changes: Vec<StoredChange> = (0..size)
                            .map(|i| {
                                let n = (w << 24) | (b << 4) | i;
                                change(&format!("ord_w{w}_{}", b % 7), n, 1 + (n % 13) as usize)
                            })
                            .collect();
                        let seqs = store.commit(&log_batch(changes.clone())).unwrap();
                        committed.extend(seqs.into_iter().zip(changes));
                    }
                    committed
                })
            })
            .collect();
        let mut committed: Vec<(u64, StoredChange)> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        done.store(true, Ordering::SeqCst);
        let (seen, reads) = reader.join().unwrap();

        committed.sort_by_key(|(seq, _)| *seq);
        let total = committed.len() as u64;
        assert_eq!(
            committed.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            (1..=total).collect::<Vec<_>>(),
            "writers got every number once, with no holes"
        );
        assert_eq!(
            seen,
            committed
                .iter()
                .map(|(seq, c)| LogEntry {
                    seq: *seq,
                    doc_id: c.doc_id.clone(),
                    bytes: c.bytes.clone(),
                })
                .collect::<Vec<_>>(),
            "the reader saw every committed change exactly once, in order"
        );
        println!(
            "{total} changes in {} batches from {WRITERS} writers, {reads} reads, {:?}",
            WRITERS * BATCHES,
            started.elapsed()
        );
    }

    /// The trap the head lock avoids, shown on a plain `BIGSERIAL` table: the second
    /// number commits first, a reader advances its cursor past the first, and the
    /// first, committed a moment later, is never read.
    #[test]
    fn a_naive_sequence_lets_a_cursor_skip_a_change() {
        let Some(server) = server() else { return };
        let schema = Schema::new(&server);
        let (mut a, mut b, mut reader) = (schema.client(), schema.client(), schema.client());
        a.batch_execute("CREATE TABLE naive_log (seq BIGSERIAL PRIMARY KEY, body TEXT)")
            .unwrap();
        let read_after = |reader: &mut Client, cursor: i64| -> Vec<i64> {
            reader
                .query(
                    "SELECT seq FROM naive_log WHERE seq > $1 ORDER BY seq",
                    &[&cursor],
                )
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect()
        };
        let mut tx_a = a.transaction().unwrap();
        tx_a.execute("INSERT INTO naive_log (body) VALUES ('a')", &[])
            .unwrap(); // takes 1
        b.execute("INSERT INTO naive_log (body) VALUES ('b')", &[])
            .unwrap(); // takes 2, commits
        let first = read_after(&mut reader, 0);
        assert_eq!(first, vec![2], "the reader sees 2 while 1 is uncommitted");
        let cursor = *first.last().unwrap();
        tx_a.commit().unwrap();
        assert_eq!(
            read_after(&mut reader, cursor),
            Vec::<i64>::new(),
            "1 is committed now, but below the cursor: that device never gets it"
        );

        // The same interleaving against the store: a second writer waits for the
        // first one's commit instead of overtaking it.
        let store_schema = Arc::new(Schema::new(&server));
        drop(open(&store_schema, "relay"));
        let mut holder = store_schema.client();
        let mut tx = holder.transaction().unwrap();
        tx.query_one(LOCK_HEAD_SQL, &[]).unwrap(); // a writer mid-commit
        let writer = {
            let s = Arc::clone(&store_schema);
            std::thread::spawn(move || {
                open(&s, "relay")
                    .commit(&log_batch(vec![change("ord_a", 1, 4)]))
                    .unwrap()
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
        let store = open(&store_schema, "relay");
        assert_eq!(
            store.head().unwrap(),
            0,
            "nothing overtook the writer mid-commit"
        );
        assert!(store.read_log(0, 10, usize::MAX).unwrap().is_empty());
        tx.execute("UPDATE log_head SET head = head WHERE singleton", &[])
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(writer.join().unwrap(), vec![1]);
        assert_eq!(store.head().unwrap(), 1);
    }
}
