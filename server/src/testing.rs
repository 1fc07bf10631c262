//! Support for tests against the real services of the scale-out tiers: PostgreSQL
//! and NATS, found through `WAYBILL_TEST_POSTGRES` and `WAYBILL_TEST_NATS` (`.ci/run`
//! starts both and sets them). Without them a test says which tier it skipped and
//! passes, so `cargo test` works on a fresh machine; CI never skips. Used by this
//! crate's tests and the workspace's scenarios (`tests/`).

use postgres::{Client, NoTls};

/// The PostgreSQL server URL for the storage tier, or None (and a note naming
/// `test`) when this run has none.
pub fn postgres_server(test: &str) -> Option<String> {
    tier("WAYBILL_TEST_POSTGRES", "postgres", test)
}

/// The NATS server URL for the bus tier, or None (and a note) when this run has none.
pub fn nats_server(test: &str) -> Option<String> {
    tier("WAYBILL_TEST_NATS", "nats", test)
}

fn tier(var: &str, name: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            // Straight to stderr: the test harness would swallow `println!` of a
            // passing test, and the skip must be seen (`.ci/run` fails on it).
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED tier {name} in {test}: set {var} to run it (`.ci/run` does)"
            );
            None
        }
    }
}

/// A fresh schema of its own in the test database, dropped when this goes out of
/// scope (even on panic), so tests run in parallel without seeing each other. The
/// client is blocking: create and drop it outside an async context.
#[derive(Debug)]
pub struct PgSchema {
    server: String,
    name: String,
    /// The URL a relay connects with (its search path is the schema).
    pub url: String,
}

impl PgSchema {
    /// A fresh schema on `server`.
    ///
    /// # Panics
    /// If the server cannot be reached or refuses to create the schema.
    #[allow(clippy::expect_used)]
    pub fn new(server: &str) -> Self {
        let name = format!("wb_test_{:016x}", rand::random::<u64>());
        let mut admin = Client::connect(server, NoTls).expect("connect to the test database");
        admin
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .expect("create a test schema");
        let sep = if server.contains('?') { '&' } else { '?' };
        let url = format!("{server}{sep}options=-c%20search_path%3D{name}");
        Self {
            server: server.to_owned(),
            name,
            url,
        }
    }

    /// A fresh schema on the tier's server, or None when the tier is skipped.
    pub fn for_test(test: &str) -> Option<Self> {
        postgres_server(test).map(|server| Self::new(&server))
    }

    /// A blocking connection to the schema, to look at what relays stored.
    ///
    /// # Panics
    /// If the server cannot be reached.
    #[allow(clippy::expect_used)]
    pub fn client(&self) -> Client {
        Client::connect(&self.url, NoTls).expect("connect to the test schema")
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(&self.server, NoTls) {
            let _ = admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}
