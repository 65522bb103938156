-- As migrations/sqlite/0006_hooks.sql.

-- Why an upload failed: 'sha256_mismatch' or 'rejected' (a pre-finish hook refused it).
ALTER TABLE uploads ADD COLUMN failure TEXT;
UPDATE uploads SET failure = 'sha256_mismatch' WHERE state = 'failed';

-- post-* hook events not yet delivered, written in the same transaction as the change they
-- describe; per upload delivered in `seq` order, one at a time.
CREATE TABLE hook_events (
    seq             BIGSERIAL PRIMARY KEY,
    event_id        TEXT   NOT NULL,
    upload_id       TEXT   NOT NULL,
    kind            TEXT   NOT NULL,
    body            TEXT   NOT NULL,
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT
);

CREATE INDEX hook_events_upload ON hook_events (upload_id, seq);
CREATE INDEX hook_events_due ON hook_events (next_attempt_at);
