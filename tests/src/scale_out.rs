//! Support for the scale-out scenarios: several relay nodes on the real PostgreSQL
//! and NATS services (see `waybill_server::testing` for how tests find them).

use std::path::Path;
use std::sync::Arc;
use waybill_server::bus::Bus;
use waybill_server::service::{RunningRelay, ServeOptions, start};

pub use waybill_server::testing::{PgSchema, nats_server, postgres_server};

/// How the nodes of a test hear each other.
#[derive(Clone)]
pub enum Link {
    /// One in-process bus shared by the nodes (each gets its own handle).
    InProcess(Vec<Arc<dyn Bus>>),
    /// A NATS server.
    Nats(String),
}

/// Start `n` relay nodes on 127.0.0.1 sharing the keys in `data` and the log in
/// PostgreSQL at `url`. `tick` is long in tests that must prove notices, not the
/// tick, carry changes between nodes.
pub async fn nodes(
    n: usize,
    data: &Path,
    url: &str,
    link: &Link,
    tick: std::time::Duration,
) -> Vec<RunningRelay> {
    let mut nodes = Vec::new();
    for i in 0..n {
        let mut options = ServeOptions::new(data, "127.0.0.1:0".parse().unwrap());
        options.postgres = Some(url.to_owned());
        options.tick = tick;
        match link {
            Link::InProcess(buses) => options.bus = Some(buses[i].clone()),
            Link::Nats(server) => options.nats = Some(server.clone()),
        }
        nodes.push(start(options).await.unwrap());
    }
    nodes
}
