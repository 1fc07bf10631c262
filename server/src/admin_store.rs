//! The relay log as the operators' tools see it (the command line and the HTTP
//! side): `relay.db` in the data directory, or the deployment's PostgreSQL database.

use crate::keys::RELAY_ID_FILE;
use crate::log_store::SqliteLogStore;
use crate::pg_log_store::PgLogStore;
use crate::service::DATABASE_FILE;
use std::path::{Path, PathBuf};
use waybill_core::sync::{LogStore, LogStoreError, QuarantinedChange};

/// Why the relay log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AdminStoreError {
    /// The directory holds no relay (no relay id): refused rather than creating one.
    #[error("{} holds no relay (no relay id)", .0.display())]
    NoRelay(PathBuf),
    /// The relay id could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The store failed to open.
    #[error(transparent)]
    Store(#[from] LogStoreError),
}

/// An open relay log, for administration.
pub enum AdminStore {
    /// `relay.db` in the data directory.
    Sqlite(SqliteLogStore),
    /// The deployment's PostgreSQL database.
    Postgres(Box<PgLogStore>),
}

impl AdminStore {
    /// The relay log of an existing relay directory (PostgreSQL when `postgres` is
    /// given). A directory without a relay is refused rather than given fresh keys:
    /// a typo in `--data` must not create a second relay identity. Only the relay id
    /// is read; a log that exists keeps the id it was created with anyway. Blocking.
    pub fn open(data: &Path, postgres: Option<&str>) -> Result<Self, AdminStoreError> {
        let id_file = data.join(RELAY_ID_FILE);
        let relay_id = match std::fs::read_to_string(&id_file) {
            Ok(text) => text.trim().to_owned(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(AdminStoreError::NoRelay(data.to_path_buf()));
            }
            Err(source) => {
                return Err(AdminStoreError::Io {
                    path: id_file,
                    source,
                });
            }
        };
        Ok(match postgres {
            Some(url) => Self::Postgres(Box::new(PgLogStore::connect(url, &relay_id)?)),
            None => Self::Sqlite(SqliteLogStore::open(&data.join(DATABASE_FILE), &relay_id)?),
        })
    }

    /// Revoke a device.
    pub fn revoke(&mut self, device_id: &str) -> Result<(), LogStoreError> {
        match self {
            Self::Sqlite(s) => s.revoke(device_id),
            Self::Postgres(s) => s.revoke(device_id),
        }
    }

    /// The quarantine with ids, oldest first.
    pub fn quarantine_list(&self) -> Result<Vec<(i64, QuarantinedChange)>, LogStoreError> {
        match self {
            Self::Sqlite(s) => s.quarantine_list(),
            Self::Postgres(s) => s.quarantine_list(),
        }
    }

    /// One quarantined change by id.
    pub fn quarantine_entry(
        &self,
        id: i64,
    ) -> Result<Option<(i64, QuarantinedChange)>, LogStoreError> {
        match self {
            Self::Sqlite(s) => s.quarantine_entry(id),
            Self::Postgres(s) => s.quarantine_entry(id),
        }
    }
}
