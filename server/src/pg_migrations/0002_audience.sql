-- Relay schema 2 on PostgreSQL: who may see each document (see
-- core/src/sync/audience.rs and the SQLite migrations/0002_audience.sql).
-- `audience` is each document's current audience; `view_changes` records when a
-- document joined or left a principal's view, so a device resuming from a cursor
-- learns what it gained (and gets its whole history) and what it lost (and purges it).
CREATE TABLE audience (
    doc_id    TEXT NOT NULL,
    principal TEXT NOT NULL,
    PRIMARY KEY (doc_id, principal)
);
CREATE INDEX audience_by_principal ON audience (principal, doc_id);

CREATE TABLE view_changes (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    principal TEXT NOT NULL,
    doc_id    TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    joined    BOOLEAN NOT NULL
);
CREATE INDEX view_changes_by_principal ON view_changes (principal, seq);

-- A change built on a refused one is refused too: look refused changes up by hash.
CREATE INDEX quarantine_by_hash ON quarantine (hash);
