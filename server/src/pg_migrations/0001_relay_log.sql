-- Waybill relay log on PostgreSQL, schema 1 (the same tables as the SQLite
-- migrations/0001_relay_log.sql, plus `log_head`).
-- The sequenced log of accepted Automerge changes, the changes waiting for their
-- dependencies, the quarantine of refused changes, and revoked devices. Change bytes
-- are stored as received and never interpreted here.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The newest sequence number, in one row. A writer locks this row (UPDATE) in its
-- commit transaction and holds the lock until it commits, so sequence numbers are
-- handed out, and become visible, strictly in order: whoever sees seq N sees every
-- seq below it. See pg_log_store.rs for why this is not a SEQUENCE / BIGSERIAL.
CREATE TABLE log_head (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    head      BIGINT NOT NULL CHECK (head >= 0)
);
INSERT INTO log_head (singleton, head) VALUES (TRUE, 0);

-- Sequence numbers are assigned by the writer from `log_head`, never reused, and never
-- renumbered; `pruned_through` in `meta` records how far compaction removed entries.
CREATE TABLE log (
    seq         BIGINT PRIMARY KEY CHECK (seq > 0),
    doc_id      TEXT NOT NULL,
    hash        BYTEA NOT NULL UNIQUE,
    bytes       BYTEA NOT NULL,
    device_id   TEXT NOT NULL,
    accepted_ms BIGINT NOT NULL
);

CREATE INDEX log_doc_seq ON log (doc_id, seq);

-- Accepted changes whose dependencies have not arrived yet (`id` keeps arrival order).
CREATE TABLE waiting (
    hash        BYTEA PRIMARY KEY,
    id          BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    doc_id      TEXT NOT NULL,
    bytes       BYTEA NOT NULL,
    device_id   TEXT NOT NULL,
    received_ms BIGINT NOT NULL
);

CREATE INDEX waiting_doc ON waiting (doc_id, id);

-- Refused changes, kept with their reason, never applied. `hash` is empty when the
-- bytes did not decode.
CREATE TABLE quarantine (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    doc_id    TEXT NOT NULL,
    hash      BYTEA NOT NULL,
    bytes     BYTEA NOT NULL,
    device_id TEXT NOT NULL,
    code      TEXT NOT NULL,
    reason    TEXT NOT NULL,
    at_ms     BIGINT NOT NULL
);

CREATE TABLE revoked (
    device_id TEXT PRIMARY KEY,
    at_ms     BIGINT NOT NULL
);

INSERT INTO meta (key, value) VALUES ('pruned_through', '0');
