-- When a removed upload's bytes were deleted. A tombstone without it still has bytes to delete:
-- start-up and the sweeper finish the job, so a crash between the two steps leaks nothing.
-- Tombstones from before this column are retried once (removing a missing file is harmless).
ALTER TABLE uploads ADD COLUMN bytes_removed_at INTEGER;

CREATE INDEX uploads_bytes_left ON uploads (removed_at)
    WHERE removed_at IS NOT NULL AND bytes_removed_at IS NULL;
