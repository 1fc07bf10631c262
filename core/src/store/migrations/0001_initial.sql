-- Waybill device store, schema 1.
-- Documents are kept as a compacted Automerge snapshot plus the changes since it;
-- the index tables are derived from the documents and rewritten in the same
-- transaction as every change, so they never disagree with them.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE documents (
    doc_id       TEXT PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('order', 'delivery')),
    snapshot     BLOB,                       -- Automerge save(); NULL before the first compaction
    change_count INTEGER NOT NULL DEFAULT 0, -- rows in `changes` since the snapshot
    updated_ms   INTEGER NOT NULL
) STRICT;

CREATE TABLE changes (
    rowid  INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL REFERENCES documents (doc_id) ON DELETE CASCADE,
    hash   BLOB NOT NULL,
    bytes  BLOB NOT NULL,
    UNIQUE (doc_id, hash)
) STRICT;

-- Local changes not yet acknowledged by the relay.
CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id     TEXT NOT NULL,
    hash       BLOB NOT NULL UNIQUE,
    bytes      BLOB NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE order_index (
    doc_id        TEXT PRIMARY KEY REFERENCES documents (doc_id) ON DELETE CASCADE,
    number        TEXT NOT NULL,
    store         TEXT NOT NULL,
    channel       TEXT NOT NULL,
    fulfilment    TEXT NOT NULL,
    status        TEXT NOT NULL,
    customer_id   TEXT NOT NULL,
    customer_name TEXT NOT NULL,
    currency      TEXT NOT NULL,
    total         INTEGER NOT NULL,
    balance_due   INTEGER NOT NULL,
    created_ms    INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL
) STRICT;
CREATE INDEX order_by_store_status ON order_index (store, status, created_ms);
CREATE INDEX order_by_status ON order_index (status, created_ms);
CREATE INDEX order_by_channel ON order_index (channel, created_ms);
CREATE INDEX order_by_customer ON order_index (customer_id, created_ms);
CREATE INDEX order_by_number ON order_index (number);

CREATE TABLE delivery_index (
    doc_id       TEXT PRIMARY KEY REFERENCES documents (doc_id) ON DELETE CASCADE,
    order_id     TEXT NOT NULL,
    store        TEXT NOT NULL,
    courier      TEXT,
    status       TEXT NOT NULL,
    window_start INTEGER,
    window_end   INTEGER,
    updated_ms   INTEGER NOT NULL
) STRICT;
CREATE INDEX delivery_by_courier_window ON delivery_index (courier, window_start);
CREATE INDEX delivery_by_status ON delivery_index (status, window_start);
CREATE INDEX delivery_by_store_status ON delivery_index (store, status);
CREATE INDEX delivery_by_order ON delivery_index (order_id);

CREATE TABLE ledger_index (
    entry_id    TEXT PRIMARY KEY,
    order_id    TEXT NOT NULL REFERENCES documents (doc_id) ON DELETE CASCADE,
    delivery_id TEXT,
    kind        TEXT NOT NULL,
    method      TEXT NOT NULL,
    amount      INTEGER NOT NULL,
    currency    TEXT NOT NULL,
    actor       TEXT NOT NULL,
    at_ms       INTEGER NOT NULL
) STRICT;
CREATE INDEX ledger_by_order ON ledger_index (order_id);
CREATE INDEX ledger_by_delivery ON ledger_index (delivery_id);

-- Substring search on order number and customer name; rowid = order_index.rowid.
CREATE VIRTUAL TABLE order_search USING fts5 (
    number,
    customer_name,
    tokenize = 'trigram'
);
