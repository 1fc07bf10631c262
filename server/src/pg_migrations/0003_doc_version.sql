-- Relay schema 3: a version per document, advanced by every commit that changes
-- its stored changes or its audience. A relay node checks its batch against the
-- versions of the documents it read (under the head lock), so nodes sharing the
-- database never commit on a stale working copy (see LogStore::doc_version in
-- core/src/sync/log_store.rs).
CREATE TABLE doc_version (
    doc_id  TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);
