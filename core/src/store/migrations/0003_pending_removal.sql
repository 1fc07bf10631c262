-- Waybill device store, schema 3: documents waiting to be removed.
-- The relay stopped sharing a document (`refresh = 0`), or refused a local change to
-- one this device still sees (`refresh = 1`: remove the local copy, which holds the
-- refused change, and fetch the relay's again). Removal waits until none of the
-- document's own changes await the relay's answer; kept here so that a restart in
-- between forgets nothing.
CREATE TABLE pending_removal (
    doc_id  TEXT PRIMARY KEY,
    refresh INTEGER NOT NULL CHECK (refresh IN (0, 1))
) STRICT;
