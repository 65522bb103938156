-- The tutorial protocol's client-chosen file ids, each mapped to an upload of this service.
CREATE TABLE tutorial_files (
    file_id   TEXT PRIMARY KEY NOT NULL,
    upload_id TEXT NOT NULL
);
