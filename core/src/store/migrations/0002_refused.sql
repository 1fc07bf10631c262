-- Waybill device store, schema 2: local changes the relay refused.
-- A refused change leaves the outbox (it would be refused again) but is never
-- dropped: it stays here with the relay's reason, and the app can show it.
CREATE TABLE refused (
    hash       BLOB PRIMARY KEY,
    doc_id     TEXT NOT NULL,
    bytes      BLOB NOT NULL,
    code       TEXT NOT NULL,
    reason     TEXT NOT NULL,
    refused_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX refused_by_doc ON refused (doc_id);
