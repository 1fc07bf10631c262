//! The relay's durable log on SQLite: [`SqliteLogStore`] implements
//! [`waybill_core::sync::LogStore`].
//!
//! One file in WAL mode with `synchronous = FULL`, so a change the relay acknowledged
//! survives a power cut. `commit` is one immediate transaction per ingest batch with
//! cached statements; sequence numbers are assigned here (head + 1) and never reused.
//! The schema is the numbered files in `migrations/`, tracked by `user_version`; the
//! file is marked with an `application_id` so another SQLite file is refused instead
//! of being written to.

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;
use waybill_core::protocol::LogEntry;
use waybill_core::sync::{
    AudienceUpdate, IngestBatch, LogStore, LogStoreError, QuarantinedChange, SavedDoc,
    StoredChange, ViewChange, audiences_by_doc, settle_relay_id,
};

/// The migrations, in order; migration `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_relay_log.sql"),
    include_str!("migrations/0002_audience.sql"),
    include_str!("migrations/0003_doc_version.sql"),
    include_str!("migrations/0004_doc_snapshot.sql"),
];

/// The relay database schema version this build creates and reads.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// `PRAGMA application_id` of a relay database ("WYRL").
const APPLICATION_ID: i32 = 0x5759_524C;

/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The newest sequence number: the largest in the log, or how far compaction pruned
/// if it removed every entry.
const HEAD_SQL: &str = "SELECT max(
        coalesce((SELECT max(seq) FROM log), 0),
        coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'pruned_through'), 0))";

const QUARANTINE_COLUMNS: &str = "id, doc_id, hash, bytes, device_id, code, reason, at_ms";

/// Counts for the operators' command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    /// The newest sequence number.
    pub head: u64,
    /// Documents with at least one logged or waiting change.
    pub documents: u64,
    /// Changes waiting for their dependencies.
    pub waiting: u64,
    /// Refused changes in the quarantine.
    pub quarantined: u64,
}

/// The relay's log, quarantine and revocations in one SQLite database.
pub struct SqliteLogStore {
    conn: Connection,
    relay_id: String,
}

impl std::fmt::Debug for SqliteLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLogStore")
            .field("relay_id", &self.relay_id)
            .field("path", &self.conn.path())
            .finish_non_exhaustive()
    }
}

/// A storage failure inside this module; converted to [`LogStoreError`] at the trait.
#[derive(Debug)]
struct Failure(LogStoreError);

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::Error as E;
        Failure(match e {
            // Values that cannot be what this schema wrote: the file was damaged or
            // written by something else.
            E::IntegralValueOutOfRange(..)
            | E::FromSqlConversionFailure(..)
            | E::InvalidColumnType(..) => LogStoreError::Corrupt(e.to_string()),
            e => LogStoreError::Backend(e.to_string()),
        })
    }
}

impl From<Failure> for LogStoreError {
    fn from(f: Failure) -> Self {
        f.0
    }
}

type Res<T> = std::result::Result<T, Failure>;

const DOC_VERSION_SQL: &str = "SELECT version FROM doc_version WHERE doc_id = ?1";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Turn an error met while opening `what` into a clear one.
fn open_error(what: &str, e: rusqlite::Error) -> LogStoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => LogStoreError::Backend(format!(
            "{what} is not a SQLite database (is this the relay's database file?)"
        )),
        _ => LogStoreError::Backend(format!("cannot open relay database {what}: {e}")),
    }
}

fn not_a_relay_database(what: &str) -> LogStoreError {
    LogStoreError::Backend(format!(
        "{what} is a SQLite database but not a Waybill relay database"
    ))
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
        tracing::warn!(journal_mode = %mode, "relay database is not in WAL mode");
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

/// Bring the schema to `target`, in the caller's transaction. Refuses a database that
/// is not a relay's, or one from a newer waybill.
fn migrate_to(conn: &Connection, target: i64, what: &str) -> Result<(), LogStoreError> {
    let sql = |e| open_error(what, e);
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql)?;
    let app: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(sql)?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(sql)?;
    if app != APPLICATION_ID && (found != 0 || objects != 0 || app != 0) {
        return Err(not_a_relay_database(what));
    }
    if found > SCHEMA_VERSION {
        return Err(LogStoreError::Backend(format!(
            "relay database schema {found} is newer than this waybill ({SCHEMA_VERSION}); upgrade waybill"
        )));
    }
    if found >= target {
        return Ok(());
    }
    if found == 0 {
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(sql)?;
    }
    for version in found..target {
        let step = usize::try_from(version)
            .ok()
            .and_then(|i| MIGRATIONS.get(i))
            .ok_or_else(|| {
                LogStoreError::Backend(format!("no migration to schema {}", version + 1))
            })?;
        conn.execute_batch(step).map_err(sql)?;
    }
    conn.pragma_update(None, "user_version", target)
        .map_err(sql)?;
    tracing::info!(from = found, to = target, "relay database schema migrated");
    Ok(())
}

fn quarantine_row(r: &Row<'_>) -> rusqlite::Result<(i64, QuarantinedChange)> {
    Ok((
        r.get(0)?,
        QuarantinedChange {
            change: StoredChange {
                doc_id: r.get(1)?,
                hash: r.get(2)?,
                bytes: r.get(3)?,
                device_id: r.get(4)?,
            },
            code: r.get(5)?,
            reason: r.get(6)?,
            at_ms: r.get(7)?,
        },
    ))
}

impl SqliteLogStore {
    /// Open (creating if needed) the relay database at `path` and bring its schema up
    /// to date. A new database records `relay_id`; an existing one keeps the id it was
    /// created with (devices hold cursors per relay id), and a different `relay_id`
    /// is ignored with a warning.
    pub fn open(path: &Path, relay_id: &str) -> Result<Self, LogStoreError> {
        let what = path.display().to_string();
        let conn = Connection::open(path).map_err(|e| open_error(&what, e))?;
        Self::init(conn, relay_id, &what)
    }

    /// A relay database in memory only (tests).
    pub fn open_in_memory(relay_id: &str) -> Result<Self, LogStoreError> {
        let what = "in-memory relay database";
        let conn = Connection::open_in_memory().map_err(|e| open_error(what, e))?;
        Self::init(conn, relay_id, what)
    }

    fn init(mut conn: Connection, requested: &str, what: &str) -> Result<Self, LogStoreError> {
        configure(&conn).map_err(|e| open_error(what, e))?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| open_error(what, e))?;
        migrate_to(&tx, SCHEMA_VERSION, what)?;
        let stored: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = 'relay_id'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| open_error(what, e))?;
        let (relay_id, record) = settle_relay_id(stored, requested)?;
        if record {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('relay_id', ?1)",
                [&relay_id],
            )
            .map_err(|e| open_error(what, e))?;
        }
        tx.commit().map_err(|e| open_error(what, e))?;
        Ok(Self { conn, relay_id })
    }

    /// One quarantined change by its quarantine id.
    pub fn quarantine_entry(
        &self,
        id: i64,
    ) -> Result<Option<(i64, QuarantinedChange)>, LogStoreError> {
        let sql = format!("SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE id = ?1");
        let found = (|| -> Res<_> {
            Ok(self
                .conn
                .prepare_cached(&sql)?
                .query_row([id], quarantine_row)
                .optional()?)
        })()?;
        Ok(found)
    }

    /// The quarantine with its ids, oldest first.
    pub fn quarantine_list(&self) -> Result<Vec<(i64, QuarantinedChange)>, LogStoreError> {
        Ok(self.quarantine_rows()?)
    }

    /// Counts for the operators.
    pub fn stats(&self) -> Result<LogStats, LogStoreError> {
        let sql = format!(
            "SELECT ({HEAD_SQL}),
                    (SELECT count(*) FROM (SELECT doc_id FROM log UNION SELECT doc_id FROM waiting)),
                    (SELECT count(*) FROM waiting),
                    (SELECT count(*) FROM quarantine)"
        );
        let stats = (|| -> Res<_> {
            Ok(self.conn.query_row(&sql, [], |r| {
                Ok(LogStats {
                    head: r.get(0)?,
                    documents: r.get(1)?,
                    waiting: r.get(2)?,
                    quarantined: r.get(3)?,
                })
            })?)
        })()?;
        Ok(stats)
    }

    fn quarantine_rows(&self) -> Res<Vec<(i64, QuarantinedChange)>> {
        let sql = format!("SELECT {QUARANTINE_COLUMNS} FROM quarantine ORDER BY id");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([], quarantine_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The hashes among `hashes` that `sql` finds, given them as one JSON array of
    /// hex strings (`?1`): one statement for a whole upload instead of one per change.
    fn hashes_among(&self, sql: &str, hashes: &[Vec<u8>]) -> Res<HashSet<Vec<u8>>> {
        if hashes.is_empty() {
            return Ok(HashSet::new());
        }
        let mut json = String::with_capacity(hashes.len() * 68 + 2);
        json.push('[');
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, hash) in hashes.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push('"');
            for byte in hash {
                json.push(char::from(HEX[usize::from(byte >> 4)]));
                json.push(char::from(HEX[usize::from(byte & 0xf)]));
            }
            json.push('"');
        }
        json.push(']');
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map([json], |r| r.get::<_, Vec<u8>>(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn head_in(conn: &Connection) -> Res<u64> {
        Ok(conn.prepare_cached(HEAD_SQL)?.query_row([], |r| r.get(0))?)
    }

    fn commit_batch(&mut self, batch: &IngestBatch) -> Res<Vec<u64>> {
        let mut seqs = Vec::with_capacity(batch.log.len());
        if batch.is_empty() {
            return Ok(seqs);
        }
        let now = now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            if !batch.expect.is_empty() {
                let mut version = tx.prepare_cached(DOC_VERSION_SQL)?;
                let stale = batch
                    .stale_docs(|doc| {
                        let found: Option<u64> = version
                            .query_row([doc], |r| r.get(0))
                            .optional()
                            .map_err(|e| Failure::from(e).0)?;
                        Ok(found.unwrap_or(0))
                    })
                    .map_err(Failure)?;
                if !stale.is_empty() {
                    return Err(Failure(LogStoreError::Conflict(stale)));
                }
            }
            {
                let mut bump = tx.prepare_cached(
                    "INSERT INTO doc_version (doc_id, version) VALUES (?1, 1)
                     ON CONFLICT (doc_id) DO UPDATE SET version = version + 1",
                )?;
                for doc in batch.touched_docs() {
                    bump.execute([doc])?;
                }
            }
            if !batch.log.is_empty() {
                let mut next = Self::head_in(&tx)? + 1;
                let mut insert = tx.prepare_cached(
                    "INSERT INTO log (seq, doc_id, hash, bytes, device_id, accepted_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (hash) DO NOTHING
                     RETURNING seq",
                )?;
                let mut existing = tx.prepare_cached("SELECT seq FROM log WHERE hash = ?1")?;
                for c in &batch.log {
                    let inserted: Option<u64> = insert
                        .query_row(
                            params![next, c.doc_id, c.hash, c.bytes, c.device_id, now],
                            |r| r.get(0),
                        )
                        .optional()?;
                    match inserted {
                        Some(seq) => {
                            seqs.push(seq);
                            next += 1;
                        }
                        None => seqs.push(existing.query_row([&c.hash], |r| r.get(0))?),
                    }
                }
            }
            if !batch.no_longer_waiting.is_empty() {
                let mut remove = tx.prepare_cached("DELETE FROM waiting WHERE hash = ?1")?;
                for hash in &batch.no_longer_waiting {
                    remove.execute([hash])?;
                }
            }
            if !batch.waiting.is_empty() {
                // Not stored when already logged; stored once however often it arrives.
                let mut wait = tx.prepare_cached(
                    "INSERT INTO waiting (hash, doc_id, bytes, device_id, received_ms)
                     SELECT ?1, ?2, ?3, ?4, ?5
                     WHERE NOT EXISTS (SELECT 1 FROM log WHERE hash = ?1)
                     ON CONFLICT (hash) DO NOTHING",
                )?;
                for c in &batch.waiting {
                    wait.execute(params![c.hash, c.doc_id, c.bytes, c.device_id, now])?;
                }
            }
            if !batch.quarantine.is_empty() {
                let mut refuse = tx.prepare_cached(
                    "INSERT INTO quarantine (doc_id, hash, bytes, device_id, code, reason, at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for q in &batch.quarantine {
                    let c = &q.change;
                    refuse.execute(params![
                        c.doc_id,
                        c.hash,
                        c.bytes,
                        c.device_id,
                        q.code,
                        q.reason,
                        q.at_ms
                    ])?;
                }
            }
            if !batch.audience.is_empty() {
                let at = match seqs.iter().max() {
                    Some(seq) => *seq,
                    None => Self::head_in(&tx)?,
                };
                write_audiences(&tx, &batch.audience, at)?;
            }
        }
        tx.commit()?;
        Ok(seqs)
    }

    fn read_entries(&self, after: u64, max_entries: usize, max_bytes: usize) -> Res<Vec<LogEntry>> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(max_entries.max(1)).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, doc_id, bytes FROM log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query(params![after, limit])?;
        Ok(page_of(rows, max_entries, max_bytes)?.0)
    }

    fn changes_of(&self, doc_id: &str) -> Res<Vec<Vec<u8>>> {
        // One read transaction, so the logged and waiting halves agree.
        let tx = self.conn.unchecked_transaction()?;
        let mut out: Vec<Vec<u8>> = tx
            .prepare_cached("SELECT bytes FROM log WHERE doc_id = ?1 ORDER BY seq")?
            .query_map([doc_id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let waiting = tx
            .prepare_cached("SELECT bytes FROM waiting WHERE doc_id = ?1 ORDER BY rowid")?
            .query_map([doc_id], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<Vec<u8>>>>()?;
        out.extend(waiting);
        tx.finish()?;
        Ok(out)
    }

    fn pruned_through(&self) -> Res<u64> {
        let value: Option<String> = self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = 'pruned_through'")?
            .query_row([], |r| r.get(0))
            .optional()?;
        match value {
            None => Ok(0),
            Some(v) => v.parse().map_err(|_| {
                Failure(LogStoreError::Corrupt(format!(
                    "meta pruned_through is not a sequence number: {v:?}"
                )))
            }),
        }
    }
}

/// `(seq, doc_id, bytes)` rows (the query's `LIMIT` is `max_entries`) taken up to
/// about `max_bytes`; whether a limit cut the page.
fn page_of(
    mut rows: rusqlite::Rows<'_>,
    max_entries: usize,
    max_bytes: usize,
) -> Res<(Vec<LogEntry>, bool)> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = rows.next()? {
        let entry = LogEntry {
            seq: row.get(0)?,
            doc_id: row.get(1)?,
            bytes: row.get(2)?,
        };
        bytes = bytes.saturating_add(entry.bytes.len());
        out.push(entry);
        if out.len() >= max_entries.max(1) || bytes >= max_bytes {
            return Ok((out, true));
        }
    }
    Ok((out, false))
}

impl LogStore for SqliteLogStore {
    fn relay_id(&self) -> String {
        self.relay_id.clone()
    }

    fn head(&self) -> Result<u64, LogStoreError> {
        Ok(Self::head_in(&self.conn)?)
    }

    fn oldest_resumable(&self) -> Result<u64, LogStoreError> {
        Ok(self.pruned_through()?)
    }

    fn commit(&mut self, batch: &IngestBatch) -> Result<Vec<u64>, LogStoreError> {
        Ok(self.commit_batch(batch)?)
    }

    fn read_log(
        &self,
        after: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<LogEntry>, LogStoreError> {
        Ok(self.read_entries(after, max_entries, max_bytes)?)
    }

    fn read_log_for(
        &self,
        principal: &str,
        after: u64,
        head: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<(Vec<LogEntry>, u64), LogStoreError> {
        let read = (|| -> Res<(Vec<LogEntry>, u64)> {
            let limit = i64::try_from(max_entries.max(1)).unwrap_or(i64::MAX);
            let (after_i, head_i) = (
                i64::try_from(after).unwrap_or(i64::MAX),
                i64::try_from(head).unwrap_or(i64::MAX),
            );
            // The other documents' entries are skipped inside SQLite: neither their
            // bytes nor a row for them reaches the relay.
            let mut stmt = self.conn.prepare_cached(
                "SELECT seq, doc_id, bytes FROM log
                 WHERE seq > ?1 AND seq <= ?2
                   AND (doc_id IN (SELECT doc_id FROM audience WHERE principal = ?3)
                        OR doc_id IN (SELECT doc_id FROM view_changes
                                      WHERE principal = ?3 AND seq > ?1))
                 ORDER BY seq LIMIT ?4",
            )?;
            let rows = stmt.query(params![after_i, head_i, principal, limit])?;
            let (out, full) = page_of(rows, max_entries, max_bytes)?;
            let through = match out.last() {
                Some(last) if full => last.seq,
                _ => head.max(after),
            };
            Ok((out, through))
        })()?;
        Ok(read)
    }

    fn contains(&self, hash: &[u8]) -> Result<bool, LogStoreError> {
        let found = (|| -> Res<bool> {
            Ok(self
                .conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM log WHERE hash = ?1)
                         OR EXISTS (SELECT 1 FROM waiting WHERE hash = ?1)",
                )?
                .query_row([hash], |r| r.get(0))?)
        })()?;
        Ok(found)
    }

    fn stored_among(&self, hashes: &[Vec<u8>]) -> Result<HashSet<Vec<u8>>, LogStoreError> {
        Ok(self.hashes_among(
            "SELECT hash FROM log WHERE hash IN (SELECT unhex(value) FROM json_each(?1))
             UNION SELECT hash FROM waiting WHERE hash IN (SELECT unhex(value) FROM json_each(?1))",
            hashes,
        )?)
    }

    fn quarantined_among(&self, hashes: &[Vec<u8>]) -> Result<HashSet<Vec<u8>>, LogStoreError> {
        Ok(self.hashes_among(
            "SELECT DISTINCT hash FROM quarantine
             WHERE hash IN (SELECT unhex(value) FROM json_each(?1)) AND length(hash) > 0",
            hashes,
        )?)
    }

    fn doc_changes(&self, doc_id: &str) -> Result<Vec<Vec<u8>>, LogStoreError> {
        Ok(self.changes_of(doc_id)?)
    }

    fn doc_version(&self, doc_id: &str) -> Result<u64, LogStoreError> {
        let found = (|| -> Res<Option<u64>> {
            Ok(self
                .conn
                .prepare_cached(DOC_VERSION_SQL)?
                .query_row([doc_id], |r| r.get(0))
                .optional()?)
        })()?;
        Ok(found.unwrap_or(0))
    }

    fn doc_ids(&self) -> Result<Vec<String>, LogStoreError> {
        let ids = (|| -> Res<Vec<String>> {
            Ok(self
                .conn
                .prepare_cached(
                    "SELECT doc_id FROM log UNION SELECT doc_id FROM waiting ORDER BY doc_id",
                )?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?)
        })()?;
        Ok(ids)
    }

    fn is_quarantined(&self, hash: &[u8]) -> Result<bool, LogStoreError> {
        let found = (|| -> Res<bool> {
            Ok(self
                .conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM quarantine WHERE hash = ?1 AND length(hash) > 0)",
                )?
                .query_row([hash], |r| r.get(0))?)
        })()?;
        Ok(found)
    }

    fn quarantined(&self) -> Result<Vec<QuarantinedChange>, LogStoreError> {
        Ok(self
            .quarantine_rows()?
            .into_iter()
            .map(|(_, q)| q)
            .collect())
    }

    fn audience_of(&self, doc_id: &str) -> Result<BTreeSet<String>, LogStoreError> {
        let audience = (|| -> Res<BTreeSet<String>> {
            Ok(self
                .conn
                .prepare_cached("SELECT principal FROM audience WHERE doc_id = ?1")?
                .query_map([doc_id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?)
        })()?;
        Ok(audience)
    }

    fn audiences_of(
        &self,
        doc_ids: &[&str],
    ) -> Result<HashMap<String, BTreeSet<String>>, LogStoreError> {
        if doc_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let ids =
            serde_json::to_string(doc_ids).map_err(|e| LogStoreError::Backend(e.to_string()))?;
        let rows = (|| -> Res<Vec<(String, String)>> {
            Ok(self
                .conn
                .prepare_cached(
                    "SELECT doc_id, principal FROM audience \
                     WHERE doc_id IN (SELECT value FROM json_each(?1))",
                )?
                .query_map([ids], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?)
        })()?;
        Ok(audiences_by_doc(rows))
    }

    fn view(&self, principal: &str) -> Result<Vec<String>, LogStoreError> {
        let docs = (|| -> Res<Vec<String>> {
            Ok(self
                .conn
                .prepare_cached("SELECT doc_id FROM audience WHERE principal = ?1 ORDER BY doc_id")?
                .query_map([principal], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?)
        })()?;
        Ok(docs)
    }

    fn view_changes(&self, principal: &str, after: u64) -> Result<Vec<ViewChange>, LogStoreError> {
        let changes = (|| -> Res<Vec<ViewChange>> {
            Ok(self
                .conn
                .prepare_cached(
                    "SELECT principal, doc_id, seq, joined FROM view_changes
                     WHERE principal = ?1 AND seq > ?2 ORDER BY seq, id",
                )?
                .query_map(params![principal, after], |r| {
                    Ok(ViewChange {
                        principal: r.get(0)?,
                        doc_id: r.get(1)?,
                        seq: r.get(2)?,
                        joined: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?)
        })()?;
        Ok(changes)
    }

    fn doc_log(&self, doc_id: &str) -> Result<Vec<LogEntry>, LogStoreError> {
        let entries = (|| -> Res<Vec<LogEntry>> {
            Ok(self
                .conn
                .prepare_cached(
                    "SELECT seq, doc_id, bytes FROM log WHERE doc_id = ?1 ORDER BY seq",
                )?
                .query_map([doc_id], entry_row)?
                .collect::<rusqlite::Result<_>>()?)
        })()?;
        Ok(entries)
    }

    fn docs_log(&self, doc_ids: &[String]) -> Result<Vec<LogEntry>, LogStoreError> {
        if doc_ids.is_empty() {
            return Ok(Vec::new());
        }
        let entries = (|| -> Res<Vec<LogEntry>> {
            let ids = serde_json::to_string(doc_ids)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            Ok(self
                .conn
                .prepare_cached(
                    "SELECT seq, doc_id, bytes FROM log
                     WHERE doc_id IN (SELECT value FROM json_each(?1)) ORDER BY seq",
                )?
                .query_map([ids], entry_row)?
                .collect::<rusqlite::Result<_>>()?)
        })()?;
        Ok(entries)
    }

    fn fresh_snapshots(&self, doc_ids: &[String]) -> Result<Vec<(String, Vec<u8>)>, LogStoreError> {
        if doc_ids.is_empty() {
            return Ok(Vec::new());
        }
        let found = (|| -> Res<Vec<(String, Vec<u8>)>> {
            let ids = serde_json::to_string(doc_ids)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            Ok(self
                .conn
                .prepare_cached(
                    "SELECT s.doc_id, s.bytes FROM doc_snapshot s
                     JOIN doc_version v ON v.doc_id = s.doc_id AND v.version = s.version
                     WHERE s.doc_id IN (SELECT value FROM json_each(?1))",
                )?
                .query_map([ids], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?)
        })()?;
        Ok(found)
    }

    fn put_snapshots(&mut self, saved: &[SavedDoc]) -> Result<(), LogStoreError> {
        if saved.is_empty() {
            return Ok(());
        }
        (|| -> Res<()> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut put = tx.prepare_cached(
                    "INSERT INTO doc_snapshot (doc_id, version, bytes) VALUES (?1, ?2, ?3)
                     ON CONFLICT (doc_id) DO UPDATE SET version = excluded.version, bytes = excluded.bytes
                     WHERE excluded.version > doc_snapshot.version",
                )?;
                for doc in saved {
                    put.execute(params![doc.doc_id, doc.version, doc.bytes])?;
                }
            }
            tx.commit()?;
            Ok(())
        })()?;
        Ok(())
    }

    fn is_revoked(&self, device_id: &str) -> Result<bool, LogStoreError> {
        let revoked = (|| -> Res<bool> {
            Ok(self
                .conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM revoked WHERE device_id = ?1)")?
                .query_row([device_id], |r| r.get(0))?)
        })()?;
        Ok(revoked)
    }

    fn revoke(&mut self, device_id: &str) -> Result<(), LogStoreError> {
        (|| -> Res<()> {
            self.conn
                .prepare_cached(
                    "INSERT INTO revoked (device_id, at_ms) VALUES (?1, ?2)
                     ON CONFLICT (device_id) DO NOTHING",
                )?
                .execute(params![device_id, now_ms()])?;
            Ok(())
        })()?;
        tracing::info!(device = %device_id, "device revoked");
        Ok(())
    }
}

/// Replace documents' audiences, recording who gained and who lost each at `seq`.
fn write_audiences(tx: &Connection, updates: &[AudienceUpdate], seq: u64) -> Res<()> {
    let mut current = tx.prepare_cached("SELECT principal FROM audience WHERE doc_id = ?1")?;
    let mut add = tx.prepare_cached("INSERT INTO audience (doc_id, principal) VALUES (?1, ?2)")?;
    let mut remove =
        tx.prepare_cached("DELETE FROM audience WHERE doc_id = ?1 AND principal = ?2")?;
    let mut record = tx.prepare_cached(
        "INSERT INTO view_changes (principal, doc_id, seq, joined) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for update in updates {
        let old: BTreeSet<String> = current
            .query_map([&update.doc_id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for principal in update.audience.difference(&old) {
            add.execute(params![update.doc_id, principal])?;
            record.execute(params![principal, update.doc_id, seq, true])?;
        }
        for principal in old.difference(&update.audience) {
            remove.execute(params![update.doc_id, principal])?;
            record.execute(params![principal, update.doc_id, seq, false])?;
        }
    }
    Ok(())
}

/// A log entry from a `seq, doc_id, bytes` row.
fn entry_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LogEntry> {
    Ok(LogEntry {
        seq: r.get(0)?,
        doc_id: r.get(1)?,
        bytes: r.get(2)?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use waybill_core::sync::{log_store_conformance, log_store_reopen_conformance};

    fn change(doc: &str, n: u8, len: usize) -> StoredChange {
        StoredChange {
            doc_id: doc.to_owned(),
            hash: vec![n; 32],
            bytes: vec![n.wrapping_mul(3); len],
            device_id: "dev-1".to_owned(),
        }
    }

    fn schema(conn: &Connection) -> Vec<(String, String)> {
        let mut stmt = conn
            .prepare("SELECT name, ifnull(sql, '') FROM sqlite_master ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn in_memory_passes_the_conformance_suite() {
        log_store_conformance(|| SqliteLogStore::open_in_memory("relay-test").unwrap());
    }

    #[test]
    fn file_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let mut n = 0;
        log_store_conformance(|| {
            n += 1;
            SqliteLogStore::open(&dir.path().join(format!("relay-{n}.db")), "relay-test").unwrap()
        });
    }

    #[test]
    fn a_file_database_is_wal_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteLogStore::open(&dir.path().join("relay.db"), "r").unwrap();
        let mode: String = store
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = store
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous = FULL");
    }

    #[test]
    fn reopening_keeps_data_and_the_stored_relay_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        log_store_reopen_conformance(|relay_id| SqliteLogStore::open(&path, relay_id).unwrap());
    }

    #[test]
    fn a_committed_change_is_durable_across_close_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        let c = change("dlv_x", 9, 100);
        let mut store = SqliteLogStore::open(&path, "relay").unwrap();
        let seqs = store
            .commit(&IngestBatch {
                log: vec![c.clone()],
                ..IngestBatch::default()
            })
            .unwrap();
        assert_eq!(seqs, vec![1]);
        // Committed means visible to another connection before this one closes.
        let other = Connection::open(&path).unwrap();
        let bytes: Vec<u8> = other
            .query_row("SELECT bytes FROM log WHERE seq = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(bytes, c.bytes);
        drop(other);
        drop(store);
        let store = SqliteLogStore::open(&path, "relay").unwrap();
        assert!(store.contains(&c.hash).unwrap());
        assert_eq!(store.read_log(0, 1, 1).unwrap()[0].bytes, c.bytes);
    }

    #[test]
    fn a_file_of_garbage_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        let garbage: Vec<u8> = (0..8192u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(&path, &garbage).unwrap();
        match SqliteLogStore::open(&path, "relay") {
            Err(LogStoreError::Backend(msg)) => {
                assert!(msg.contains("not a SQLite database"), "{msg}");
            }
            other => panic!("garbage accepted: {other:?}"),
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            garbage,
            "the file is not touched"
        );
    }

    #[test]
    fn another_sqlite_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE notes (body TEXT); PRAGMA user_version = 1;")
            .unwrap();
        drop(conn);
        match SqliteLogStore::open(&path, "relay") {
            Err(LogStoreError::Backend(msg)) => {
                assert!(msg.contains("not a Waybill relay database"), "{msg}");
            }
            other => panic!("foreign database accepted: {other:?}"),
        }
        // Nor one with tables but no version.
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 0).unwrap();
        drop(conn);
        assert!(matches!(
            SqliteLogStore::open(&path, "relay"),
            Err(LogStoreError::Backend(msg)) if msg.contains("not a Waybill relay database")
        ));
    }

    #[test]
    fn a_database_from_a_newer_waybill_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.db");
        drop(SqliteLogStore::open(&path, "relay").unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        match SqliteLogStore::open(&path, "relay") {
            Err(LogStoreError::Backend(msg)) => assert_eq!(
                msg,
                format!(
                    "relay database schema {} is newer than this waybill ({SCHEMA_VERSION}); upgrade waybill",
                    SCHEMA_VERSION + 1
                )
            ),
            other => panic!("future schema accepted: {other:?}"),
        }
    }

    #[test]
    fn a_new_database_needs_a_relay_id() {
        assert!(matches!(
            SqliteLogStore::open_in_memory(" "),
            Err(LogStoreError::Backend(_))
        ));
    }

    #[test]
    fn stepwise_migration_equals_a_fresh_database() {
        let fresh = SqliteLogStore::open_in_memory("r").unwrap();
        let stepwise = Connection::open_in_memory().unwrap();
        for v in 1..=SCHEMA_VERSION {
            let tx = stepwise.unchecked_transaction().unwrap();
            migrate_to(&tx, v, "test").unwrap();
            tx.commit().unwrap();
        }
        assert_eq!(schema(&fresh.conn), schema(&stepwise));
        let v: i64 = stepwise
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }

    #[test]
    fn operators_see_the_quarantine_by_id_and_counts() {
        let mut store = SqliteLogStore::open_in_memory("r").unwrap();
        assert_eq!(
            store.stats().unwrap(),
            LogStats {
                head: 0,
                documents: 0,
                waiting: 0,
                quarantined: 0
            }
        );
        let refused = |n: u8| QuarantinedChange {
            change: change("ord_q", n, 4),
            code: "Forbidden".to_owned(),
            reason: format!("refusal {n}"),
            at_ms: i64::from(n),
        };
        store
            .commit(&IngestBatch {
                log: vec![
                    change("ord_a", 1, 1),
                    change("ord_b", 2, 1),
                    change("ord_a", 3, 1),
                ],
                waiting: vec![change("ord_c", 4, 1), change("ord_a", 5, 1)],
                quarantine: vec![refused(6), refused(7)],
                ..IngestBatch::default()
            })
            .unwrap();
        assert_eq!(
            store.stats().unwrap(),
            LogStats {
                head: 3,
                documents: 3,
                waiting: 2,
                quarantined: 2
            }
        );
        let list = store.quarantine_list().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].1, refused(6));
        assert_eq!(list[1].1, refused(7));
        assert!(list[0].0 < list[1].0);
        assert_eq!(
            store.quarantine_entry(list[1].0).unwrap(),
            Some(list[1].clone())
        );
        assert_eq!(store.quarantine_entry(list[1].0 + 100).unwrap(), None);
    }

    #[test]
    fn reads_use_the_primary_key_and_the_document_index() {
        let store = SqliteLogStore::open_in_memory("r").unwrap();
        let plan = |sql: &str| -> String {
            let mut stmt = store
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            stmt.query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect::<Vec<_>>()
                .join("; ")
        };
        let read_log =
            plan("SELECT seq, doc_id, bytes FROM log WHERE seq > 1 ORDER BY seq LIMIT 10");
        assert!(read_log.contains("INTEGER PRIMARY KEY"), "{read_log}");
        let doc = plan("SELECT bytes FROM log WHERE doc_id = 'x' ORDER BY seq");
        assert!(doc.contains("USING INDEX log_doc_seq"), "{doc}");
        assert!(!doc.contains("TEMP B-TREE"), "{doc}");
        let waiting = plan("SELECT bytes FROM waiting WHERE doc_id = 'x' ORDER BY rowid");
        assert!(waiting.contains("USING INDEX waiting_doc"), "{waiting}");
        assert!(!waiting.contains("TEMP B-TREE"), "{waiting}");
    }
}
