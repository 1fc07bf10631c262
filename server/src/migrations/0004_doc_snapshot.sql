-- Relay schema 4: each document's state saved as one Automerge document, with the
-- document version it was saved at. A snapshot is fresh while its version is the
-- document's current one (doc_version); a device that has never synced is sent
-- fresh snapshots instead of the whole log (protocol 1.1). Stale rows are rebuilt
-- when next needed; they are never served.
CREATE TABLE doc_snapshot (
    doc_id  TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    bytes   BLOB NOT NULL
) STRICT, WITHOUT ROWID;
