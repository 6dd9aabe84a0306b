//! Durable storage with sqlx: SQLite (WAL, the default) or PostgreSQL, chosen from the URL
//! scheme. Both run the same queries through sqlx's `Any` driver; each backend has its own
//! migrations folder (`migrations/sqlite`, `migrations/postgres`) because DDL differs slightly.
//! Times are stored as Unix milliseconds (BIGINT) so no query depends on a backend's time type.

mod audit_index;
mod cases;
mod decisions;
mod dedupe;
mod events;
mod history;
mod leases;
mod pairs;
mod poll_state;
mod reminders;
mod retention;
mod settings;
mod sign_ins;
mod sql;

pub use cases::Created;
pub use decisions::DecisionOutcome;
pub use history::Verified;
pub use history::{EventFilter, VerifyError};
pub use pairs::Pair;
pub use retention::Pruned;

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor as _};

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server (several replicas).
    Postgres,
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not a supported database URL.
    #[error("unsupported database URL (use sqlite:// or postgres://)")]
    UnsupportedUrl,
    /// Could not connect.
    #[error("cannot connect to the {backend:?} database: {source}")]
    Connect {
        /// Which database it was.
        backend: Backend,
        /// The driver's error (never carries the URL's password).
        source: sqlx::Error,
    },
    /// Migrations failed.
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// A stored value is not one the code knows.
    #[error("database holds an unexpected value: {0}")]
    Corrupt(String),
}

/// The database: cases, their history, activity dedupe keys.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

fn backend_of(url: &str) -> Option<Backend> {
    if url.starts_with("sqlite:") {
        Some(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Some(Backend::Postgres)
    } else {
        None
    }
}

/// SQLite URLs create the file when missing unless a mode is given.
fn with_create_mode(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

impl Store {
    /// Connects to `url` and creates or migrates the schema.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url).ok_or(StoreError::UnsupportedUrl)?;
        let url = match backend {
            Backend::Sqlite => with_create_mode(url),
            Backend::Postgres => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url).map_err(|source| StoreError::Connect { backend, source })?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 10,
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // A new database gets 32 KiB pages (SQLite's default is 4 KiB): audit
                        // ingestion writes whole pages to the WAL and then to the file at every
                        // commit, and with 32 KiB pages SQLite alone stores 100,000 audit records
                        // in 1.0 s instead of 2.2 s, chatwarden 36,000 a second instead of 24,000
                        // (BENCHMARKS.md). It must come first: the size is fixed when the file is
                        // created; an existing database keeps its own.
                        // WAL lets readers run beside the writer; busy_timeout makes writers queue
                        // instead of failing; synchronous stays FULL: decisions must survive power loss.
                        // Statement journals (multi-row inserts that may stop half way) stay in
                        // memory instead of temporary files. A 16 MiB page cache (default 2 MiB)
                        // holds the audit indexes of ~100,000 records, so indexing a batch reads
                        // no page back from the OS.
                        conn.execute(
                            "PRAGMA page_size = 32768; PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; \
                             PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16384;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect { backend, source })?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&pool).await?,
        }
        let store = Self { pool, backend };
        store.reindex_audit_if_asked().await?;
        let sealed = store.seal_unchained_events().await?;
        if sealed > 0 {
            tracing::info!(events = sealed, "sealed the history written before the hash chain");
        }
        Ok(store)
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Refreshes the query planner's statistics (`ANALYZE`); worth running after a large import,
    /// before the database gathers them by itself.
    pub async fn analyze(&self) -> Result<(), StoreError> {
        sqlx::query("ANALYZE").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_come_from_the_url_scheme() {
        assert_eq!(backend_of("sqlite://chatwarden.db"), Some(Backend::Sqlite));
        assert_eq!(backend_of("postgres://u@h/db"), Some(Backend::Postgres));
        assert_eq!(backend_of("postgresql://u@h/db"), Some(Backend::Postgres));
        assert_eq!(backend_of("mysql://u@h/db"), None);
    }

    #[test]
    fn sqlite_files_are_created_unless_a_mode_is_given() {
        assert_eq!(with_create_mode("sqlite://a.db"), "sqlite://a.db?mode=rwc");
        assert_eq!(with_create_mode("sqlite://a.db?cache=shared"), "sqlite://a.db?cache=shared&mode=rwc");
        assert_eq!(with_create_mode("sqlite://a.db?mode=ro"), "sqlite://a.db?mode=ro");
    }
}
