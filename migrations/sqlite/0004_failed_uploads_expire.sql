-- Failed uploads expire too (their expires_at is set when they fail), so the sweep looks at
-- every live row with an expiry, not only the uploading ones.
DROP INDEX uploads_expiry;
CREATE INDEX uploads_expiry ON uploads (expires_at)
    WHERE removed_at IS NULL AND expires_at IS NOT NULL;

-- The sweep forgets old tombstones by removal time.
CREATE INDEX uploads_removed ON uploads (removed_at) WHERE removed_at IS NOT NULL;
