//! Support for tests over real QUIC on loopback: an in-process relay, credentials
//! signed by its keys as `waybill enroll` issues them, replicas and one-shot syncs.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use waybill_core::Role;
use waybill_core::credential::Credential;
use waybill_core::net::{SyncOptions, SyncReport, sync_once};
use waybill_core::replica::{Replica, ReplicaOptions};
use waybill_server::enroll::{EnrollRequest, enroll};
use waybill_server::keys::RelayKeys;
use waybill_server::service::{RunningRelay, ServeOptions, start};

/// An hour, in milliseconds: how long test credentials stay valid.
pub const HOUR_MS: i64 = 3_600_000;
/// A generous bound on one sync in a test (not a speed assertion).
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// The wall clock, in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A relay on 127.0.0.1 with a fresh data directory (kept alive by the `TempDir`).
pub async fn relay() -> (tempfile::TempDir, RunningRelay) {
    let dir = tempfile::tempdir().unwrap();
    let relay = start(ServeOptions::new(
        dir.path(),
        "127.0.0.1:0".parse().unwrap(),
    ))
    .await
    .unwrap();
    (dir, relay)
}

/// A credential signed with `keys`, as `waybill enroll` issues it, valid for an hour
/// from `issued_ms`.
pub fn credential_from(
    keys: &RelayKeys,
    relay: &RunningRelay,
    device: &str,
    role: Role,
    id: &str,
    issued_ms: i64,
) -> Credential {
    let (courier, store) = match role {
        Role::Courier => (Some(id.to_owned()), None),
        Role::Store => (None, Some(id.to_owned())),
        Role::Dispatcher => (None, None),
    };
    let request = EnrollRequest {
        role,
        courier,
        store,
        device_id: Some(device.to_owned()),
        relay_addr: relay.local_addr.to_string(),
        valid_for_ms: HOUR_MS,
        now_ms: issued_ms,
    };
    enroll(keys, &request).unwrap()
}

/// A credential from this relay, issued now.
pub fn credential(relay: &RunningRelay, device: &str, role: Role, id: &str) -> Credential {
    credential_from(&relay.keys, relay, device, role, id, now_ms())
}

/// An in-memory replica for the credential's device.
pub fn replica(credential: &Credential) -> Arc<Replica> {
    Arc::new(
        Replica::open_in_memory(credential.body.identity(), ReplicaOptions::default()).unwrap(),
    )
}

/// One sync with the relay; panics naming the device if it fails.
pub async fn sync(replica: &Arc<Replica>, credential: &Credential) -> SyncReport {
    sync_once(
        Arc::clone(replica),
        credential,
        &SyncOptions::default(),
        SYNC_TIMEOUT,
    )
    .await
    .unwrap_or_else(|e| panic!("sync of {} failed: {e}", credential.body.device_id))
}

/// Poll `check` until it holds or `limit` passes.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < until {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}
