//! Upload metadata in SQL: SQLite (one instance; WAL, synchronous=FULL) or PostgreSQL (many
//! instances sharing it), through sqlx's `Any` driver. The statements are written once, with
//! `$1`-style parameters, which both accept; only connecting and the migrations differ.

use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyArguments, AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Row};

use super::{Meta, MetaError, Result};
use crate::hooks::{NewEvent, QueuedEvent};
use crate::upload::model::{Concat, State, Upload, UploadId};

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
                       hash_state, store_state, metadata, failure, created_at, updated_at, expires_at, removed_at, \
                       concat, parts, final_id";

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
                            // fsynced bytes it counts. In WAL mode NORMAL syncs only at
                            // checkpoints: with it the power-cut test loses an acknowledged
                            // upload at its first cut.
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

    /// Runs a change and, if it changed a row, queues `events` with it in one transaction.
    /// Returns how many rows the change touched.
    async fn change_with_events<'q>(
        &self,
        change: Query<'q, Any, AnyArguments<'q>>,
        events: &[NewEvent],
    ) -> Result<u64> {
        if events.is_empty() {
            return Ok(change.execute(&self.pool).await?.rows_affected());
        }
        let mut tx = self.pool.begin().await?;
        let changed = change.execute(&mut *tx).await?.rows_affected();
        if changed > 0 {
            for event in events {
                enqueue(&mut tx, event).await?;
            }
        }
        tx.commit().await?;
        Ok(changed)
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

    async fn insert(&self, upload: &Upload, events: &[NewEvent]) -> Result<()> {
        let (concat, parts) = concat_columns(&upload.concat);
        let insert = sqlx::query(
            "INSERT INTO uploads (id, name, size, received, state, content_type, expected_sha256, \
             sha256, hash_state, store_state, metadata, created_at, updated_at, expires_at, failure, \
             concat, parts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
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
        .bind(&upload.failure)
        .bind(concat)
        .bind(parts);
        let Concat::Final { parts } = &upload.concat else {
            self.change_with_events(insert, events).await?;
            return Ok(());
        };
        // The final and its claim on every part in one transaction: a part taken by another
        // final meanwhile leaves nothing behind.
        let mut tx = self.pool.begin().await?;
        insert.execute(&mut *tx).await?;
        let claim = format!(
            "UPDATE uploads SET final_id = $1 \
             WHERE concat = 'partial' AND final_id IS NULL AND removed_at IS NULL AND id IN ({})",
            placeholders(2, parts.len())
        );
        let claimed = parts
            .iter()
            .fold(
                sqlx::query(&claim).bind(upload.id.to_string()),
                |query, part| query.bind(part.to_string()),
            )
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if claimed != parts.len() as u64 {
            tx.rollback().await?;
            return Err(MetaError::Stale);
        }
        for event in events {
            enqueue(&mut tx, event).await?;
        }
        tx.commit().await?;
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

    async fn save_progress(&self, upload: &Upload, events: &[NewEvent]) -> Result<()> {
        // Fenced: a holder that lost its claim (another instance took the upload over and
        // moved it on, sealed or removed it) must not write its older view over the newer.
        let save = sqlx::query(
            "UPDATE uploads SET name = $1, size = $2, received = $3, state = $4, sha256 = $5, \
             expected_sha256 = $6, hash_state = $7, store_state = $8, updated_at = $9, expires_at = $10, \
             failure = $12 \
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
        .bind(&upload.failure);
        match self.change_with_events(save, events).await? {
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

    async fn mark_removed(
        &self,
        id: UploadId,
        reason: &str,
        at: SystemTime,
        events: &[NewEvent],
    ) -> Result<()> {
        let mark = sqlx::query(
            "UPDATE uploads SET removed_at = $1, removed_reason = $2, hash_state = NULL, \
             expires_at = NULL, updated_at = $3 WHERE id = $4 AND removed_at IS NULL",
        )
        .bind(millis(at))
        .bind(reason)
        .bind(millis(at))
        .bind(id.to_string());
        self.change_with_events(mark, events).await?;
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
        let mut tx = self.pool.begin().await?;
        for table in [
            "DELETE FROM hook_events WHERE upload_id = $1",
            // A final that never was lets its parts go.
            "UPDATE uploads SET final_id = NULL WHERE final_id = $1",
            "DELETE FROM uploads WHERE id = $1",
        ] {
            sqlx::query(table)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn set_expiry(&self, ids: &[UploadId], at: SystemTime) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE uploads SET expires_at = $1 WHERE removed_at IS NULL AND id IN ({})",
            placeholders(2, ids.len())
        );
        ids.iter()
            .fold(sqlx::query(&sql).bind(millis(at)), |query, id| {
                query.bind(id.to_string())
            })
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn parts_sum(&self, whole: UploadId) -> Result<(u64, Option<u64>)> {
        let row = sqlx::query(
            // PostgreSQL sums BIGINTs as NUMERIC: cast back.
            "SELECT CAST(COALESCE(SUM(received), 0) AS BIGINT), CAST(SUM(size) AS BIGINT), \
             CAST(COUNT(*) - COUNT(size) AS BIGINT) FROM uploads WHERE final_id = $1",
        )
        .bind(whole.to_string())
        .fetch_one(&self.pool)
        .await?;
        let received = to_u64(row.try_get(0)?, "received")?;
        let unknown: i64 = row.try_get(2)?;
        let size = match unknown {
            0 => row
                .try_get::<Option<i64>, _>(1)?
                .map(|s| to_u64(s, "size"))
                .transpose()?,
            _ => None,
        };
        Ok((received, size))
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

    async fn due_events(&self, now: SystemTime, limit: u32) -> Result<Vec<QueuedEvent>> {
        let rows = sqlx::query(
            "SELECT seq, kind, upload_id, created_at, attempts, body \
             FROM hook_events e WHERE next_attempt_at <= $1 AND NOT EXISTS \
             (SELECT 1 FROM hook_events p WHERE p.upload_id = e.upload_id AND p.seq < e.seq) \
             ORDER BY seq LIMIT $2",
        )
        .bind(millis(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        // One row this version cannot read (a kind from a newer version, mid-upgrade) holds
        // back its own upload's events, not the whole queue.
        Ok(rows
            .iter()
            .filter_map(|row| {
                event_from_row(row)
                    .map_err(|e| tracing::warn!(error = %e, "an unreadable hook event is skipped"))
                    .ok()
            })
            .collect())
    }

    async fn claim_events(
        &self,
        seqs: &[i64],
        now: SystemTime,
        until: SystemTime,
    ) -> Result<Vec<i64>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        // Still due means nobody claimed it meanwhile: a claim moves it past `now`.
        let sql = format!(
            "UPDATE hook_events SET next_attempt_at = $1 WHERE next_attempt_at <= $2 \
             AND seq IN ({}) RETURNING seq",
            placeholders(3, seqs.len())
        );
        let query = sqlx::query(&sql).bind(millis(until)).bind(millis(now));
        let rows = seqs
            .iter()
            .fold(query, |query, seq| query.bind(*seq))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .filter_map(|row| row.try_get::<i64, _>(0).ok())
            .collect())
    }

    async fn events_done(&self, seqs: &[i64]) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "DELETE FROM hook_events WHERE seq IN ({})",
            placeholders(1, seqs.len())
        );
        seqs.iter()
            .fold(sqlx::query(&sql), |query, seq| query.bind(*seq))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn event_retry(&self, seq: i64, at: SystemTime, error: &str) -> Result<()> {
        sqlx::query(
            "UPDATE hook_events SET attempts = attempts + 1, next_attempt_at = $1, \
             last_error = $2 WHERE seq = $3",
        )
        .bind(millis(at))
        .bind(error)
        .bind(seq)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn oldest_event(&self) -> Result<Option<SystemTime>> {
        let row = sqlx::query("SELECT created_at FROM hook_events ORDER BY seq LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| time(r.try_get(0)?, "created_at")).transpose()
    }
}

/// `$first, $first+1, …` for `count` values.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Queues one event inside the caller's transaction.
async fn enqueue(conn: &mut AnyConnection, event: &NewEvent) -> Result<()> {
    let at = millis(event.created_at);
    sqlx::query(
        "INSERT INTO hook_events (event_id, upload_id, kind, body, created_at, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&event.event_id)
    .bind(&event.upload_id)
    .bind(event.kind.as_str())
    .bind(&event.body)
    .bind(at)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

fn event_from_row(row: &AnyRow) -> Result<QueuedEvent> {
    let kind: String = row.try_get("kind")?;
    let attempts: i64 = row.try_get("attempts")?;
    Ok(QueuedEvent {
        seq: row.try_get("seq")?,
        kind: kind.parse().map_err(|_| MetaError::OutOfRange("kind"))?,
        upload_id: row.try_get("upload_id")?,
        created_at: time(row.try_get("created_at")?, "created_at")?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        body: row.try_get("body")?,
    })
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
        failure: row.try_get("failure")?,
        created_at: time(row.try_get("created_at")?, "created_at")?,
        updated_at: time(row.try_get("updated_at")?, "updated_at")?,
        expires_at: optional_time(row, "expires_at")?,
        removed_at: optional_time(row, "removed_at")?,
        concat: concat_from_row(row)?,
    })
}

/// The `concat` and `parts` columns of a new upload (a part is claimed later: `final_id`).
fn concat_columns(concat: &Concat) -> (Option<&'static str>, Option<String>) {
    match concat {
        Concat::Whole => (None, None),
        Concat::Partial { .. } => (Some("partial"), None),
        Concat::Final { parts } => {
            let ids: Vec<String> = parts.iter().map(UploadId::to_string).collect();
            (Some("final"), Some(ids.join(" ")))
        }
    }
}

fn concat_from_row(row: &AnyRow) -> Result<Concat> {
    let kind: Option<String> = row.try_get("concat")?;
    let id = |text: &str| text.parse().map_err(|_| MetaError::OutOfRange("parts"));
    Ok(match kind.as_deref() {
        None => Concat::Whole,
        Some("partial") => Concat::Partial {
            whole: row
                .try_get::<Option<String>, _>("final_id")?
                .map(|w| id(&w))
                .transpose()?,
        },
        Some("final") => Concat::Final {
            parts: row
                .try_get::<Option<String>, _>("parts")?
                .unwrap_or_default()
                .split_whitespace()
                .map(id)
                .collect::<Result<_>>()?,
        },
        Some(_) => return Err(MetaError::OutOfRange("concat")),
    })
}
