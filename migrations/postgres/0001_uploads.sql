-- The same schema as migrations/sqlite/ after its 0005, in one step: PostgreSQL started with
-- every column. Integers are BIGINT (sizes and unix milliseconds), bytes are BYTEA.

-- One row per upload, kept after deletion or expiry as a tombstone (removed_at set) so that
-- the id answers 410 rather than 404.
CREATE TABLE uploads (
    id               TEXT    PRIMARY KEY NOT NULL,
    name             TEXT    NOT NULL,
    size             BIGINT,                        -- NULL while the length is deferred
    received         BIGINT  NOT NULL DEFAULT 0,    -- bytes durable in the store
    state            TEXT    NOT NULL CHECK (state IN ('uploading', 'complete', 'failed')),
    content_type     TEXT,
    expected_sha256  TEXT,
    sha256           TEXT,
    -- SHA-256 state after `received` bytes, so any instance can carry on the hash.
    hash_state       BYTEA,
    -- What the byte store must remember with `received` (an object store's multipart upload,
    -- parts and tail), committed in the same statement.
    store_state      BYTEA,
    -- tus Upload-Metadata exactly as the client sent it, echoed on HEAD.
    metadata         TEXT,
    created_at       BIGINT  NOT NULL,              -- unix milliseconds
    updated_at       BIGINT  NOT NULL,
    expires_at       BIGINT,                        -- NULL once complete
    removed_at       BIGINT,                        -- set when deleted or expired
    removed_reason   TEXT,
    -- When a removed upload's bytes were deleted; NULL on a tombstone with bytes left.
    bytes_removed_at BIGINT
);

CREATE INDEX uploads_expiry ON uploads (expires_at)
    WHERE removed_at IS NULL AND expires_at IS NOT NULL;
CREATE INDEX uploads_bytes_left ON uploads (removed_at)
    WHERE removed_at IS NOT NULL AND bytes_removed_at IS NULL;
CREATE INDEX uploads_removed ON uploads (removed_at) WHERE removed_at IS NOT NULL;

-- The tutorial protocol's client-chosen file ids, each mapped to an upload of this service.
CREATE TABLE tutorial_files (
    file_id   TEXT PRIMARY KEY NOT NULL,
    upload_id TEXT NOT NULL
);
CREATE INDEX tutorial_files_upload ON tutorial_files (upload_id);
