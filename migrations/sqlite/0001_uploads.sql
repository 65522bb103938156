-- One row per upload, kept after deletion or expiry as a tombstone (removed_at set) so that
-- the id answers 410 rather than 404.
CREATE TABLE uploads (
    id              TEXT    PRIMARY KEY NOT NULL,
    name            TEXT    NOT NULL,
    size            INTEGER,                        -- NULL while the length is deferred
    received        INTEGER NOT NULL DEFAULT 0,     -- bytes durable in the file
    state           TEXT    NOT NULL CHECK (state IN ('uploading', 'complete', 'failed')),
    content_type    TEXT,
    expected_sha256 TEXT,
    sha256          TEXT,
    -- SHA-256 state after `received` bytes, so a resumed append need not re-read the file.
    hash_state      BLOB,
    -- tus Upload-Metadata exactly as the client sent it, echoed on HEAD.
    metadata        TEXT,
    created_at      INTEGER NOT NULL,               -- unix milliseconds
    updated_at      INTEGER NOT NULL,
    expires_at      INTEGER,                        -- NULL once complete
    removed_at      INTEGER,                        -- set when deleted or expired
    removed_reason  TEXT
);

CREATE INDEX uploads_expiry ON uploads (expires_at)
    WHERE state = 'uploading' AND removed_at IS NULL;
