//! Versioned schema migrations, tracked in SQLite's `user_version`.

use super::StoreError;
use rusqlite::Connection;

/// The migrations, in order; migration `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_refused.sql"),
    include_str!("migrations/0003_pending_removal.sql"),
];

/// The schema version this build creates and reads.
pub const LATEST_VERSION: i64 = MIGRATIONS.len() as i64;

/// Bring a database to [`LATEST_VERSION`], refusing one from the future.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    migrate_to(conn, LATEST_VERSION)
}

fn migrate_to(conn: &Connection, target: i64) -> Result<(), StoreError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > LATEST_VERSION {
        return Err(StoreError::FutureSchema {
            found,
            supported: LATEST_VERSION,
        });
    }
    for version in found..target {
        let sql = MIGRATIONS[usize::try_from(version).unwrap_or(0)];
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
        tracing::info!(version = version + 1, "store schema migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(conn: &Connection) -> Vec<(String, String)> {
        let mut stmt = conn
            .prepare("SELECT name, ifnull(sql, '') FROM sqlite_master ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn stepwise_migration_equals_a_fresh_database() {
        let fresh = Connection::open_in_memory().unwrap();
        migrate(&fresh).unwrap();
        let stepwise = Connection::open_in_memory().unwrap();
        for v in 1..=LATEST_VERSION {
            migrate_to(&stepwise, v).unwrap();
        }
        assert_eq!(schema(&fresh), schema(&stepwise));
        let v: i64 = stepwise
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, LATEST_VERSION);
    }

    #[test]
    fn a_store_from_the_future_is_refused() {
        let conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", LATEST_VERSION + 1)
            .unwrap();
        assert!(
            matches!(migrate(&conn), Err(StoreError::FutureSchema { found, .. }) if found == LATEST_VERSION + 1)
        );
    }
}
