//! Upload metadata in SQL: SQLite (one instance; WAL, synchronous=FULL) or PostgreSQL (many
//! instances sharing it), through sqlx's `Any` driver. The statements are written once, with
//! `$1`-style parameters, which both accept; only connecting and the migrations differ.

use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor, Row};

use super::{Meta, MetaError, Result};
use crate::upload::model::{State, Upload, UploadId};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone)]
pub struct SqlMeta {
    pool: AnyPool,
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of(url: &str) -> Option<Backend> {
        let scheme = url.split_once(':').map(|(scheme, _)| scheme)?;
        match scheme {
            "sqlite" => Some(Backend::Sqlite),
            "postgres" | "postgresql" => Some(Backend::Postgres),
            _ => None,
        }
    }
}

const COLUMNS: &str = "id, name, size, received, state, content_type, expected_sha256, sha256, \
                       hash_state, store_state, metadata, created_at, updated_at, expires_at, removed_at";

impl SqlMeta {
    /// Opens the database `url` names (creating an SQLite file if missing) with at most
    /// `connections` connections, and runs its migrations. Instances starting at once on one
    /// PostgreSQL take turns: the migrator holds an advisory lock while it runs.
    pub async fn connect(url: &str, connections: u32) -> Result<SqlMeta> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let backend = Backend::of(url).ok_or(MetaError::Scheme)?;
        let options = AnyPoolOptions::new().max_connections(connections);
        let pool = match backend {
            Backend::Sqlite => {
                options
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // FULL: a committed `received` survives power loss, like the
                            // fsynced bytes it counts.
                            conn.execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                                 PRAGMA busy_timeout = 10000;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect(&sqlite_creating(url))
                    .await?
            }
            Backend::Postgres => {
                options
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(url)
                    .await?
            }
        };
        let migrations = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrations.run(&pool).await?;
        Ok(SqlMeta { pool })
    }

    /// The ids a query selects, binding `values` in order.
    async fn ids(&self, sql: &str, values: &[i64]) -> Result<Vec<UploadId>> {
        let query = values
            .iter()
            .fold(sqlx::query(sql), |query, value| query.bind(*value));
        let rows = query.fetch_all(&self.pool).await?;
        // Every stored id was made by UploadId; one that is not cannot be acted on anyway.
        Ok(rows
            .iter()
            .filter_map(|r| r.get::<String, _>(0).parse().ok())
            .collect())
    }
}

/// An SQLite URL that creates the file when it is missing (`mode=rwc`), unless it says a mode.
fn sqlite_creating(url: &str) -> String {
    match url.split_once('?') {
        Some((_, query)) if query.split('&').any(|p| p.starts_with("mode=")) => url.to_owned(),
        Some(_) => format!("{url}&mode=rwc"),
        None => format!("{url}?mode=rwc"),
    }
}

#[async_trait::async_trait]
impl Meta for SqlMeta {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn insert(&self, upload: &Upload) -> Result<()> {
        sqlx::query(
            "INSERT INTO uploads (id, name, size, received, state, content_type, expected_sha256, \
             sha256, hash_state, store_state, metadata, created_at, updated_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(upload.id.to_string())
        .bind(&upload.name)
        .bind(upload.size.map(to_i64))
        .bind(to_i64(upload.received))
        .bind(upload.state.as_str())
        .bind(&upload.content_type)
        .bind(&upload.expected_sha256)
        .bind(&upload.sha256)
        .bind(&upload.hash_state)
        .bind(&upload.store_state)
        .bind(&upload.metadata)
        .bind(millis(upload.created_at))
        .bind(millis(upload.updated_at))
        .bind(upload.expires_at.map(millis))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get(&self, id: UploadId) -> Result<Option<Upload>> {
        let sql = format!("SELECT {COLUMNS} FROM uploads WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| from_row(&r)).transpose()
    }

    async fn save_progress(&self, upload: &Upload) -> Result<()> {
        // Fenced: a holder that lost its claim (another instance took the upload over and
        // moved it on, sealed or removed it) must not write its older view over the newer.
        let saved = sqlx::query(
            "UPDATE uploads SET name = $1, size = $2, received = $3, state = $4, sha256 = $5, \
             expected_sha256 = $6, hash_state = $7, store_state = $8, updated_at = $9, expires_at = $10 \
             WHERE id = $11 AND state = 'uploading' AND removed_at IS NULL AND received <= $3",
        )
        .bind(&upload.name)
        .bind(upload.size.map(to_i64))
        .bind(to_i64(upload.received))
        .bind(upload.state.as_str())
        .bind(&upload.sha256)
        .bind(&upload.expected_sha256)
        .bind(&upload.hash_state)
        .bind(&upload.store_state)
        .bind(millis(upload.updated_at))
        .bind(upload.expires_at.map(millis))
        .bind(upload.id.to_string())
        .execute(&self.pool)
        .await?;
        match saved.rows_affected() {
            0 => Err(MetaError::Stale),
            _ => Ok(()),
        }
    }

    async fn rewind(&self, upload: &Upload) -> Result<()> {
        sqlx::query(
            "UPDATE uploads SET received = $1, hash_state = $2, store_state = $3, updated_at = $4 \
             WHERE id = $5 AND state = 'uploading' AND removed_at IS NULL",
        )
        .bind(to_i64(upload.received))
        .bind(&upload.hash_state)
        .bind(&upload.store_state)
        .bind(millis(upload.updated_at))
        .bind(upload.id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn mark_removed(&self, id: UploadId, reason: &str, at: SystemTime) -> Result<()> {
        sqlx::query(
            "UPDATE uploads SET removed_at = $1, removed_reason = $2, hash_state = NULL, \
             expires_at = NULL, updated_at = $3 WHERE id = $4 AND removed_at IS NULL",
        )
        .bind(millis(at))
        .bind(reason)
        .bind(millis(at))
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn mark_bytes_removed(&self, id: UploadId, at: SystemTime) -> Result<()> {
        sqlx::query("UPDATE uploads SET bytes_removed_at = $1 WHERE id = $2")
            .bind(millis(at))
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn removed_with_bytes(&self, limit: u32) -> Result<Vec<Upload>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM uploads WHERE removed_at IS NOT NULL \
             AND bytes_removed_at IS NULL LIMIT $1"
        );
        let rows = sqlx::query(&sql)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    async fn forget_removed(&self, before: SystemTime) -> Result<u64> {
        let gone = "SELECT id FROM uploads WHERE removed_at IS NOT NULL AND removed_at < $1 \
                    AND bytes_removed_at IS NOT NULL";
        sqlx::query(&format!(
            "DELETE FROM tutorial_files WHERE upload_id IN ({gone})"
        ))
        .bind(millis(before))
        .execute(&self.pool)
        .await?;
        let done = sqlx::query(&format!("DELETE FROM uploads WHERE id IN ({gone})"))
            .bind(millis(before))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn purge(&self, id: UploadId) -> Result<()> {
        sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn expired(&self, now: SystemTime, limit: u32) -> Result<Vec<UploadId>> {
        let sql = "SELECT id FROM uploads WHERE removed_at IS NULL \
                   AND expires_at IS NOT NULL AND expires_at <= $1 LIMIT $2";
        self.ids(sql, &[millis(now), i64::from(limit)]).await
    }

    async fn unfinished(&self) -> Result<Vec<UploadId>> {
        // Ids only: the rows (each with its part list) are read one at a time by the caller.
        let sql = "SELECT id FROM uploads WHERE state = 'uploading' AND removed_at IS NULL";
        self.ids(sql, &[]).await
    }

    async fn key_upload(&self, key: &str) -> Result<Option<UploadId>> {
        let row = sqlx::query("SELECT upload_id FROM tutorial_files WHERE file_id = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(|r| r.get::<String, _>(0).parse().ok()))
    }

    async fn map_key(&self, key: &str, upload: UploadId, stale: Option<UploadId>) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO tutorial_files (file_id, upload_id) VALUES ($1, $2) \
             ON CONFLICT (file_id) DO UPDATE SET upload_id = excluded.upload_id \
             WHERE tutorial_files.upload_id = $3",
        )
        .bind(key)
        .bind(upload.to_string())
        .bind(stale.map(|id| id.to_string()))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

fn to_i64(value: u64) -> i64 {
    // Every size is checked against MAX_REPRESENTABLE_SIZE before it gets here.
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64, column: &'static str) -> Result<u64> {
    u64::try_from(value).map_err(|_| MetaError::OutOfRange(column))
}

/// Times are stored as milliseconds since the epoch.
fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn time(millis: i64, column: &'static str) -> Result<SystemTime> {
    Ok(UNIX_EPOCH + Duration::from_millis(to_u64(millis, column)?))
}

fn optional_time(row: &AnyRow, column: &'static str) -> Result<Option<SystemTime>> {
    row.try_get::<Option<i64>, _>(column)?
        .map(|m| time(m, column))
        .transpose()
}

fn from_row(row: &AnyRow) -> Result<Upload> {
    let id: String = row.try_get("id")?;
    let state: String = row.try_get("state")?;
    Ok(Upload {
        id: id.parse().map_err(|_| MetaError::OutOfRange("id"))?,
        name: row.try_get("name")?,
        size: row
            .try_get::<Option<i64>, _>("size")?
            .map(|s| to_u64(s, "size"))
            .transpose()?,
        received: to_u64(row.try_get("received")?, "received")?,
        state: State::parse(&state).ok_or(MetaError::OutOfRange("state"))?,
        content_type: row.try_get("content_type")?,
        expected_sha256: row.try_get("expected_sha256")?,
        sha256: row.try_get("sha256")?,
        hash_state: row.try_get("hash_state")?,
        store_state: row.try_get("store_state")?,
        metadata: row.try_get("metadata")?,
        created_at: time(row.try_get("created_at")?, "created_at")?,
        updated_at: time(row.try_get("updated_at")?, "updated_at")?,
        expires_at: optional_time(row, "expires_at")?,
        removed_at: optional_time(row, "removed_at")?,
    })
}
