-- Waybill relay log, schema 1.
-- The sequenced log of accepted Automerge changes, the changes waiting for their
-- dependencies, the quarantine of refused changes, and revoked devices. Change bytes
-- are stored as received and never interpreted here.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;

-- Sequence numbers are assigned by the writer (head + 1), never reused, and never
-- renumbered; `pruned_through` in `meta` records how far compaction removed entries.
CREATE TABLE log (
    seq         INTEGER PRIMARY KEY,
    doc_id      TEXT NOT NULL,
    hash        BLOB NOT NULL UNIQUE,
    bytes       BLOB NOT NULL,
    device_id   TEXT NOT NULL,
    accepted_ms INTEGER NOT NULL
) STRICT;

CREATE INDEX log_doc_seq ON log (doc_id, seq);

-- Accepted changes whose dependencies have not arrived yet.
CREATE TABLE waiting (
    hash        BLOB PRIMARY KEY NOT NULL,
    doc_id      TEXT NOT NULL,
    bytes       BLOB NOT NULL,
    device_id   TEXT NOT NULL,
    received_ms INTEGER NOT NULL
) STRICT;

CREATE INDEX waiting_doc ON waiting (doc_id);

-- Refused changes, kept with their reason, never applied. `hash` is empty when the
-- bytes did not decode.
CREATE TABLE quarantine (
    id        INTEGER PRIMARY KEY,
    doc_id    TEXT NOT NULL,
    hash      BLOB NOT NULL,
    bytes     BLOB NOT NULL,
    device_id TEXT NOT NULL,
    code      TEXT NOT NULL,
    reason    TEXT NOT NULL,
    at_ms     INTEGER NOT NULL
) STRICT;

CREATE TABLE revoked (
    device_id TEXT PRIMARY KEY NOT NULL,
    at_ms     INTEGER NOT NULL
) STRICT;

INSERT INTO meta (key, value) VALUES ('pruned_through', '0');
