-- Concatenation (tus' extension, the native API's parts). `concat` is NULL for a whole upload
-- of its own, 'partial' for a part, 'final' for an upload assembled from parts. A final lists
-- its parts' ids in order, separated by spaces, in `parts`; a part names the final that
-- claimed it in `final_id` (at most one).
ALTER TABLE uploads ADD COLUMN concat TEXT;
ALTER TABLE uploads ADD COLUMN parts TEXT;
ALTER TABLE uploads ADD COLUMN final_id TEXT;

-- A final's progress sums its parts (`WHERE final_id = $1`) on every checkpoint of a part.
CREATE INDEX uploads_final_id ON uploads (final_id);
