//! What the tests that run the `waybill` binary as relay processes share: start and
//! kill relays, enrol devices, open file-backed replicas, build orders.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use waybill_core::Replica;
use waybill_core::credential::Credential;
use waybill_core::model::NewOrder;
use waybill_core::replica::ReplicaOptions;
use waybill_core::store::{Durability, StoreOptions};

/// A relay process, killed when the test ends however it ends.
pub struct RelayProcess(pub Child);

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl RelayProcess {
    /// Kill it with SIGKILL and reap it.
    pub fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

/// The `waybill` binary of this build.
pub fn waybill() -> Command {
    Command::new(env!("CARGO_BIN_EXE_waybill"))
}

/// A UDP port free right now on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `waybill serve --data DATA --listen 127.0.0.1:PORT EXTRA…`, quiet.
pub fn serve(data: &Path, port: u16, extra: &[&str]) -> RelayProcess {
    let child = waybill()
        .args(["serve", "--data"])
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    RelayProcess(child)
}

/// A store tablet's credential from `waybill enroll`, pointing at 127.0.0.1:PORT.
pub fn enroll_store(data: &Path, store: &str, port: u16, out: &Path) -> Credential {
    let status = waybill()
        .args(["enroll", "--data"])
        .arg(data)
        .args(["--role", "store", "--store", store, "--relay-addr"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    Credential::load(out).unwrap()
}

/// A replica in a file (normal durability, as a tablet would run).
pub fn file_replica(path: &Path, credential: &Credential) -> Arc<Replica> {
    let options = ReplicaOptions {
        store: StoreOptions {
            durability: Durability::Normal,
            ..StoreOptions::default()
        },
        ..ReplicaOptions::default()
    };
    Arc::new(Replica::open(path, credential.body.identity(), options).unwrap())
}

/// A small point-of-sale order, numbered `n`.
pub fn order(n: usize) -> NewOrder {
    serde_json::from_value(serde_json::json!({
        "number": format!("S1-{n:06}"), "channel": "pos", "store": "S1",
        "customer": {"id": format!("c-{n}"), "name": "Walk-in", "phone": "", "address": ""},
        "currency": "IRR", "fulfilment": "pickup",
        "lines": [{"sku": "TEA-500", "name": "Black tea 500 g", "qty": 1, "unit_price": 1_850_000}]
    }))
    .unwrap()
}

/// The hashes still waiting in a replica's outbox.
pub fn outbox_hashes(replica: &Replica) -> HashSet<Vec<u8>> {
    replica
        .outbox(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| e.hash)
        .collect()
}
