-- What the byte store must remember with `received` to carry on an upload (for an object
-- store: its multipart upload, the parts so far, the tail), committed in the same statement.
-- A local directory keeps nothing here. Kept on tombstones until the bytes are gone, so a
-- removal cut short can still be finished.
ALTER TABLE uploads ADD COLUMN store_state BLOB;
