-- Why an upload failed: 'sha256_mismatch' (its digest did not match the declared one) or
-- 'rejected' (a pre-finish hook refused it). NULL unless failed.
ALTER TABLE uploads ADD COLUMN failure TEXT;
UPDATE uploads SET failure = 'sha256_mismatch' WHERE state = 'failed';

-- post-* hook events not yet delivered. Each is written in the same transaction as the
-- change it describes, and deleted once the hook took it. Per upload they go out in `seq`
-- order, one at a time; `next_attempt_at` is when it may be tried next (a claim moves it
-- past the delivery's timeout, a failure past its backoff).
CREATE TABLE hook_events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL,
    upload_id       TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    body            TEXT    NOT NULL,                -- the event JSON, exactly as sent
    created_at      INTEGER NOT NULL,                -- unix milliseconds
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT
);

CREATE INDEX hook_events_upload ON hook_events (upload_id, seq);
CREATE INDEX hook_events_due ON hook_events (next_attempt_at);
