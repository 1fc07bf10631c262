//! The device-side store: SQLite in WAL mode, one writer connection, readers apart.
//!
//! Every write is one transaction holding the document's new Automerge changes, its
//! index rows and (for local changes) the outbox entry: after `commit` returns, all
//! of it is on disk, or none of it is. Documents are kept as a snapshot plus the
//! changes since; past a threshold the snapshot is rewritten and the changes dropped.

mod checkpoint;
mod index;
mod migrations;
pub mod query;

pub use index::{DeliveryRow, IndexRows, LedgerRow, OrderRow};
pub use migrations::LATEST_VERSION;

use crate::ids::DocId;
use automerge::{Automerge, Change};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::{Path, PathBuf};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file exists but is not an SQLite database.
    #[error("{path} is not a Waybill store (not an SQLite database)")]
    NotADatabase {
        /// The file.
        path: PathBuf,
    },
    /// The store was written by a newer Waybill.
    #[error(
        "store schema version {found} is newer than the supported {supported}; upgrade the app"
    )]
    FutureSchema {
        /// Version on disk.
        found: i64,
        /// Newest this build knows.
        supported: i64,
    },
    /// Stored Automerge bytes could not be loaded.
    #[error("stored document {doc_id} is corrupt: {reason}")]
    CorruptDocument {
        /// The document.
        doc_id: String,
        /// What Automerge said.
        reason: String,
    },
    /// Any other SQLite failure (disk full, I/O error, locked…).
    #[error("storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// How hard each commit works to survive power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync the WAL on every commit: survives power loss (the default).
    #[default]
    Full,
    /// fsync only at checkpoints: survives an app crash or kill, not power loss.
    Normal,
}

/// Options for opening a store.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Durability of commits.
    pub durability: Durability,
    /// Rewrite a document's snapshot once it has this many changes since the last one.
    pub compact_after: i64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            compact_after: 24,
        }
    }
}

/// One outbox entry: a local change waiting for the relay's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Position in the outbox (increasing).
    pub seq: i64,
    /// The document it changes.
    pub doc_id: String,
    /// Automerge change hash.
    pub hash: Vec<u8>,
    /// Raw Automerge change bytes.
    pub bytes: Vec<u8>,
}

/// A local change the relay refused, kept with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedChange {
    /// The document it changes.
    pub doc_id: String,
    /// Automerge change hash.
    pub hash: Vec<u8>,
    /// The relay's error code.
    pub code: String,
    /// The relay's reason.
    pub reason: String,
    /// When the refusal arrived (ms since the epoch).
    pub refused_ms: i64,
}

/// A document write in a [`Store::commit`] batch.
pub struct DocWrite<'a> {
    /// The document.
    pub id: &'a DocId,
    /// Its in-memory state after the changes (used for compaction snapshots).
    pub doc: &'a Automerge,
    /// The changes to persist.
    pub changes: &'a [Change],
    /// Its index rows after the changes (None: not readable yet, e.g. changes waiting
    /// for their dependencies).
    pub index: Option<IndexRows>,
    /// Whether the changes are local and go to the outbox.
    pub local: bool,
    /// The document's whole state as saved Automerge bytes, stored as its snapshot
    /// in place of its changes (a document received whole from the relay).
    pub snapshot: Option<&'a [u8]>,
}

/// The writer side of a store.
pub struct Store {
    conn: Connection,
    path: Option<PathBuf>,
    options: StoreOptions,
    checkpointer: Option<checkpoint::Checkpointer>,
}

fn not_a_database(path: &Path, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => StoreError::NotADatabase {
            path: path.to_owned(),
        },
        _ => StoreError::Sqlite(e),
    }
}

fn configure(conn: &Connection, options: &StoreOptions) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = match options.durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "wal_autocheckpoint", checkpoint::BACKSTOP_PAGES)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

fn now_ms() -> i64 {
    use crate::hlc::WallClock;
    crate::hlc::SystemClock.now_ms()
}

impl Store {
    /// Open (creating if needed) a store file and bring its schema up to date.
    pub fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let conn = Connection::open(path)?;
        configure(&conn, &options).map_err(|e| not_a_database(path, e))?;
        migrations::migrate(&conn).map_err(|e| match e {
            StoreError::Sqlite(e) => not_a_database(path, e),
            other => other,
        })?;
        let checkpoint_conn = Connection::open(path)?;
        checkpoint_conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let checkpointer = checkpoint::Checkpointer::start(checkpoint_conn)
            .map_err(|e| {
                tracing::warn!(error = %e, "no background checkpoint thread; SQLite checkpoints inline");
            })
            .ok();
        if checkpointer.is_none() {
            conn.pragma_update(None, "wal_autocheckpoint", 1000)?;
        }
        Ok(Self {
            conn,
            path: Some(path.to_owned()),
            options,
            checkpointer,
        })
    }

    /// A store that lives in memory only (tests, simulations).
    pub fn open_in_memory(options: StoreOptions) -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrations::migrate(&conn)?;
        Ok(Self {
            conn,
            path: None,
            options,
            checkpointer: None,
        })
    }

    /// A read-only connection for queries, so reads never wait for the writer.
    /// None for in-memory stores, which must read through [`Store::conn`].
    pub fn open_reader(&self) -> Result<Option<Connection>, StoreError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Some(conn))
    }

    /// The writer connection, for queries on in-memory stores.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Read a metadata value.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Write a metadata value (its own transaction).
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            params![key, value],
        )?;
        Ok(())
    }

    /// Whether a document is stored.
    pub fn contains(&self, id: &DocId) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM documents WHERE doc_id = ?1",
                [id.as_str()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Load a document: its snapshot, then every change since.
    pub fn load(&self, id: &DocId) -> Result<Option<Automerge>, StoreError> {
        let snapshot: Option<Option<Vec<u8>>> = self
            .conn
            .prepare_cached("SELECT snapshot FROM documents WHERE doc_id = ?1")?
            .query_row([id.as_str()], |r| r.get(0))
            .optional()?;
        let Some(snapshot) = snapshot else {
            return Ok(None);
        };
        let corrupt = |e: automerge::AutomergeError| StoreError::CorruptDocument {
            doc_id: id.to_string(),
            reason: e.to_string(),
        };
        let mut doc = match snapshot {
            Some(bytes) => Automerge::load(&bytes).map_err(corrupt)?,
            None => Automerge::new(),
        };
        let mut stmt = self
            .conn
            .prepare_cached("SELECT bytes FROM changes WHERE doc_id = ?1 ORDER BY rowid")?;
        let mut changes = Vec::new();
        for bytes in stmt.query_map([id.as_str()], |r| r.get::<_, Vec<u8>>(0))? {
            let bytes = bytes?;
            changes.push(
                Change::from_bytes(bytes).map_err(|e| StoreError::CorruptDocument {
                    doc_id: id.to_string(),
                    reason: e.to_string(),
                })?,
            );
        }
        doc.apply_changes(changes).map_err(corrupt)?;
        Ok(Some(doc))
    }

    /// Persist a batch of document writes (and metadata) in one transaction.
    pub fn commit(
        &mut self,
        writes: &[DocWrite<'_>],
        meta: &[(&str, String)],
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let tx = self.conn.transaction()?;
        for w in writes {
            let id = w.id.as_str();
            tx.prepare_cached(
                "INSERT INTO documents (doc_id, kind, change_count, updated_ms) VALUES (?1, ?2, 0, ?3)
                 ON CONFLICT (doc_id) DO UPDATE SET updated_ms = excluded.updated_ms",
            )?
            .execute(params![id, w.id.kind().as_str(), now])?;
            let mut added = 0i64;
            for change in w.changes {
                let hash = change.hash();
                added += tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO changes (doc_id, hash, bytes) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![id, &hash.0[..], change.raw_bytes()])?
                    as i64;
                if w.local {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO outbox (doc_id, hash, bytes, created_ms) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![id, &hash.0[..], change.raw_bytes(), now])?;
                }
            }
            if let Some(snapshot) = w.snapshot {
                tx.prepare_cached(
                    "UPDATE documents SET snapshot = ?2, change_count = 0 WHERE doc_id = ?1",
                )?
                .execute(params![id, snapshot])?;
                tx.prepare_cached("DELETE FROM changes WHERE doc_id = ?1")?
                    .execute([id])?;
                if let Some(index) = &w.index {
                    index.write(&tx)?;
                }
                continue;
            }
            let count: i64 = tx
                .prepare_cached("UPDATE documents SET change_count = change_count + ?2 WHERE doc_id = ?1 RETURNING change_count")?
                .query_row(params![id, added], |r| r.get(0))?;
            if count >= self.options.compact_after {
                tx.prepare_cached(
                    "UPDATE documents SET snapshot = ?2, change_count = 0 WHERE doc_id = ?1",
                )?
                .execute(params![id, w.doc.save()])?;
                tx.prepare_cached("DELETE FROM changes WHERE doc_id = ?1")?
                    .execute([id])?;
            }
            if let Some(index) = &w.index {
                index.write(&tx)?;
            }
        }
        for (key, value) in meta {
            tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
                .execute(params![key, value])?;
        }
        tx.commit()?;
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.nudge();
        }
        Ok(())
    }

    /// The oldest `limit` outbox entries.
    pub fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.outbox_after(0, limit)
    }

    /// The oldest `limit` outbox entries with `seq > after` (uploads in flight are
    /// skipped by passing the last one sent).
    pub fn outbox_after(&self, after: i64, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, doc_id, hash, bytes FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(
            params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                Ok(OutboxEntry {
                    seq: r.get(0)?,
                    doc_id: r.get(1)?,
                    hash: r.get(2)?,
                    bytes: r.get(3)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of outbox entries.
    pub fn outbox_len(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)?)
    }

    /// Remove acknowledged changes from the outbox; returns how many were removed.
    pub fn ack(&mut self, hashes: &[Vec<u8>]) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let mut removed = 0;
        for hash in hashes {
            removed += tx
                .prepare_cached("DELETE FROM outbox WHERE hash = ?1")?
                .execute([hash])?;
        }
        tx.commit()?;
        Ok(removed)
    }

    /// Move refused changes from the outbox to the `refused` table, with the relay's
    /// reason, in one transaction. Returns how many outbox entries moved.
    pub fn refuse(&mut self, refusals: &[(Vec<u8>, String, String)]) -> Result<usize, StoreError> {
        let now = now_ms();
        let tx = self.conn.transaction()?;
        let mut moved = 0;
        for (hash, code, reason) in refusals {
            moved += tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO refused (hash, doc_id, bytes, code, reason, refused_ms)
                     SELECT hash, doc_id, bytes, ?2, ?3, ?4 FROM outbox WHERE hash = ?1",
                )?
                .execute(params![hash, code, reason, now])?;
            tx.prepare_cached("DELETE FROM outbox WHERE hash = ?1")?
                .execute([hash])?;
        }
        tx.commit()?;
        Ok(moved)
    }

    /// Remove documents this device may no longer see: their changes, snapshot and
    /// index rows, in one transaction. Returns how many were stored. Callers keep
    /// documents with unacknowledged local changes until those are settled.
    pub fn purge(&mut self, ids: &[DocId]) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let mut purged = 0;
        for id in ids {
            tx.prepare_cached(
                "DELETE FROM order_search WHERE rowid = (SELECT rowid FROM order_index WHERE doc_id = ?1)",
            )?
            .execute([id.as_str()])?;
            purged += tx
                .prepare_cached("DELETE FROM documents WHERE doc_id = ?1")?
                .execute([id.as_str()])?;
            tx.prepare_cached("DELETE FROM pending_removal WHERE doc_id = ?1")?
                .execute([id.as_str()])?;
        }
        tx.commit()?;
        Ok(purged)
    }

    /// Mark documents to remove once their own changes are answered (`refresh`:
    /// fetch the relay's copy again afterwards).
    pub fn mark_for_removal(&mut self, ids: &[DocId], refresh: bool) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for id in ids {
            tx.prepare_cached(
                "INSERT INTO pending_removal (doc_id, refresh) VALUES (?1, ?2)
                 ON CONFLICT (doc_id) DO UPDATE SET refresh = max(refresh, excluded.refresh)",
            )?
            .execute(params![id.as_str(), refresh])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Forget pending removals of unshared documents (the relay shares them again).
    /// A refresh stays: the local copy still holds a refused change.
    pub fn cancel_removal(&mut self, ids: &[DocId]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for id in ids {
            tx.prepare_cached("DELETE FROM pending_removal WHERE doc_id = ?1 AND refresh = 0")?
                .execute([id.as_str()])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Documents waiting to be removed, with whether to fetch them again after.
    pub fn pending_removals(&self) -> Result<Vec<(DocId, bool)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT doc_id, refresh FROM pending_removal ORDER BY doc_id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, refresh) = row?;
            if let Ok(id) = DocId::parse(&id) {
                out.push((id, refresh));
            }
        }
        Ok(out)
    }

    /// Whether a document has local changes not yet acknowledged by the relay.
    pub fn has_pending(&self, id: &DocId) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM outbox WHERE doc_id = ?1)")?
            .query_row([id.as_str()], |r| r.get(0))?)
    }

    /// Local changes the relay refused, newest first.
    pub fn refused(&self) -> Result<Vec<RefusedChange>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT doc_id, hash, code, reason, refused_ms FROM refused ORDER BY refused_ms DESC, doc_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(RefusedChange {
                doc_id: r.get(0)?,
                hash: r.get(1)?,
                code: r.get(2)?,
                reason: r.get(3)?,
                refused_ms: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Ids of every stored document, in id order.
    pub fn doc_ids(&self) -> Result<Vec<DocId>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT doc_id FROM documents ORDER BY doc_id")?;
        let ids = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for id in ids {
            let id = id?;
            out.push(DocId::parse(&id).map_err(|e| StoreError::CorruptDocument {
                doc_id: id.clone(),
                reason: e.to_string(),
            })?);
        }
        Ok(out)
    }

    /// The stored index rows of a document, for verification.
    pub fn stored_index(&self, id: &DocId) -> Result<Option<IndexRows>, StoreError> {
        query::index_rows(&self.conn, id)
    }
}
