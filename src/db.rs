//! The metadata of uploads in SQLite: the only file that speaks SQL.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored value out of range in column {0}")]
    OutOfRange(&'static str),
}

/// One upload as stored. Byte counts are `u64` here; SQLite holds them as i64.
#[derive(Debug, Clone)]
pub struct UploadRow {
    pub id: String,
    pub name: String,
    pub size: Option<u64>,
    pub received: u64,
    pub state: String,
    pub content_type: Option<String>,
    pub expected_sha256: Option<String>,
    pub sha256: Option<String>,
    pub hash_state: Option<Vec<u8>>,
    pub metadata: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: Option<i64>,
    pub removed_at: Option<i64>,
}

#[derive(Clone)]
pub struct Db {
    pool: SqlitePool,
}

const COLUMNS: &str = "id, name, size, received, state, content_type, expected_sha256, sha256, \
                       hash_state, metadata, created_at, updated_at, expires_at, removed_at";

impl Db {
    /// Opens (creating if missing) the database in WAL mode and runs the embedded migrations.
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed `received` survives power loss, like the fsynced bytes it counts.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Db { pool })
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn insert(&self, row: &UploadRow) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO uploads (id, name, size, received, state, content_type, expected_sha256, \
             sha256, hash_state, metadata, created_at, updated_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&row.id)
        .bind(&row.name)
        .bind(row.size.map(to_i64))
        .bind(to_i64(row.received))
        .bind(&row.state)
        .bind(&row.content_type)
        .bind(&row.expected_sha256)
        .bind(&row.sha256)
        .bind(&row.hash_state)
        .bind(&row.metadata)
        .bind(row.created_at)
        .bind(row.updated_at)
        .bind(row.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Option<UploadRow>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM uploads WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| from_row(&r)).transpose()
    }

    /// Writes everything an append or a finish changes, in one statement.
    pub async fn save_progress(&self, row: &UploadRow) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE uploads SET name = ?, size = ?, received = ?, state = ?, sha256 = ?, \
             expected_sha256 = ?, hash_state = ?, updated_at = ?, expires_at = ? WHERE id = ?",
        )
        .bind(&row.name)
        .bind(row.size.map(to_i64))
        .bind(to_i64(row.received))
        .bind(&row.state)
        .bind(&row.sha256)
        .bind(&row.expected_sha256)
        .bind(&row.hash_state)
        .bind(row.updated_at)
        .bind(row.expires_at)
        .bind(&row.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Keeps the row as a tombstone, so the id answers 410 from now on.
    pub async fn mark_removed(&self, id: &str, reason: &str, at: i64) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE uploads SET removed_at = ?, removed_reason = ?, hash_state = NULL, \
             expires_at = NULL, updated_at = ? WHERE id = ? AND removed_at IS NULL",
        )
        .bind(at)
        .bind(reason)
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that a removed upload's bytes are gone.
    pub async fn mark_bytes_removed(&self, id: &str, at: i64) -> Result<(), DbError> {
        sqlx::query("UPDATE uploads SET bytes_removed_at = ? WHERE id = ?")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removed uploads whose bytes may still be stored (the removal was cut short).
    pub async fn removed_with_bytes(&self, limit: i64) -> Result<Vec<String>, DbError> {
        let rows = sqlx::query(
            "SELECT id FROM uploads WHERE removed_at IS NOT NULL AND bytes_removed_at IS NULL \
             LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    /// Forgets removed uploads (and their tutorial file ids) removed before `before`, once
    /// their bytes are gone: from then on their ids answer 404. Returns how many.
    pub async fn forget_removed(&self, before: i64) -> Result<u64, DbError> {
        let gone = "SELECT id FROM uploads WHERE removed_at IS NOT NULL AND removed_at < ? \
                    AND bytes_removed_at IS NOT NULL";
        sqlx::query(&format!(
            "DELETE FROM tutorial_files WHERE upload_id IN ({gone})"
        ))
        .bind(before)
        .execute(&self.pool)
        .await?;
        let done = sqlx::query(&format!("DELETE FROM uploads WHERE id IN ({gone})"))
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Forgets an upload entirely, for a create that failed before anyone saw its id.
    pub async fn purge(&self, id: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM uploads WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Uploads (incomplete or failed) whose expiry time has passed.
    pub async fn expired_ids(&self, now: i64, limit: i64) -> Result<Vec<String>, DbError> {
        let rows = sqlx::query(
            "SELECT id FROM uploads WHERE removed_at IS NULL \
             AND expires_at IS NOT NULL AND expires_at <= ? LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    /// Every live upload still receiving bytes: what start-up reconciles with the files.
    pub async fn unfinished(&self) -> Result<Vec<UploadRow>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM uploads WHERE state = 'uploading' AND removed_at IS NULL"
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(from_row).collect()
    }

    /// The upload a tutorial-protocol file id maps to.
    pub async fn tutorial_upload(&self, file_id: &str) -> Result<Option<String>, DbError> {
        let row = sqlx::query("SELECT upload_id FROM tutorial_files WHERE file_id = ?")
            .bind(file_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    /// Maps a tutorial-protocol file id to an upload, where it is unmapped or still maps to
    /// `stale`. False when another request mapped it first (two first appends racing).
    pub async fn map_tutorial_file(
        &self,
        file_id: &str,
        upload_id: &str,
        stale: Option<&str>,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "INSERT INTO tutorial_files (file_id, upload_id) VALUES (?, ?) \
             ON CONFLICT (file_id) DO UPDATE SET upload_id = excluded.upload_id \
             WHERE tutorial_files.upload_id = ?",
        )
        .bind(file_id)
        .bind(upload_id)
        .bind(stale)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn to_i64(value: u64) -> i64 {
    // Every size is checked against MAX_REPRESENTABLE_SIZE before it gets here.
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64, column: &'static str) -> Result<u64, DbError> {
    u64::try_from(value).map_err(|_| DbError::OutOfRange(column))
}

fn from_row(row: &sqlx::sqlite::SqliteRow) -> Result<UploadRow, DbError> {
    Ok(UploadRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        size: row
            .try_get::<Option<i64>, _>("size")?
            .map(|s| to_u64(s, "size"))
            .transpose()?,
        received: to_u64(row.try_get("received")?, "received")?,
        state: row.try_get("state")?,
        content_type: row.try_get("content_type")?,
        expected_sha256: row.try_get("expected_sha256")?,
        sha256: row.try_get("sha256")?,
        hash_state: row.try_get("hash_state")?,
        metadata: row.try_get("metadata")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        expires_at: row.try_get("expires_at")?,
        removed_at: row.try_get("removed_at")?,
    })
}
