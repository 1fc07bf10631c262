//! The relay is killed (SIGKILL) in the middle of a device's uploads and restarted:
//! every change it acknowledged before dying is in its log, and after the restart the
//! device finishes uploading with nothing lost or logged twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::{Duration, Instant};
use waybill_core::net::{NetError, SyncOptions, sync_once};
use waybill_core::sync::LogStore;
use waybill_server::log_store::SqliteLogStore;

mod support;

use support::{enroll_store, file_replica, free_udp_port, order, outbox_hashes, serve};

const ORDERS: usize = 3_000;

#[test]
fn no_acknowledged_change_is_lost_when_the_relay_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    let port = free_udp_port();
    let credential = enroll_store(&data, "S1", port, &dir.path().join("tablet.credential"));
    let replica = file_replica(&dir.path().join("tablet.db"), &credential);
    for n in 0..ORDERS {
        replica.create_order(&order(n)).unwrap();
    }
    let all = outbox_hashes(&replica);
    assert_eq!(all.len(), ORDERS);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let options = SyncOptions::default();
    let relay = serve(&data, port, &[]);

    // Upload in the background; kill the relay once some, not all, are acknowledged.
    let uploading = {
        let replica = replica.clone();
        let credential = credential.clone();
        let options = options.clone();
        runtime.spawn(async move {
            // The relay may still be starting: retry until it answers.
            loop {
                match sync_once(
                    replica.clone(),
                    &credential,
                    &options,
                    Duration::from_secs(60),
                )
                .await
                {
                    Ok(report) => return Ok(report),
                    Err(NetError::Connect { .. } | NetError::Timeout { .. }) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pending = replica.pending_uploads().unwrap() as usize;
        if pending < ORDERS {
            break;
        }
        assert!(Instant::now() < deadline, "no upload was acknowledged");
        std::thread::sleep(Duration::from_millis(2));
    }
    relay.kill(); // SIGKILL
    // The device would only notice at its idle timeout; stop it now.
    uploading.abort();
    let _ = runtime.block_on(uploading);
    let acknowledged: HashSet<Vec<u8>> =
        all.difference(&outbox_hashes(&replica)).cloned().collect();
    assert!(
        !acknowledged.is_empty() && acknowledged.len() < ORDERS,
        "the kill must land mid-upload ({} acknowledged)",
        acknowledged.len()
    );

    // What the relay acknowledged is on its disk, though it died without warning.
    let relay_id = std::fs::read_to_string(data.join("relay-id")).unwrap();
    {
        let log = SqliteLogStore::open(&data.join("relay.db"), relay_id.trim()).unwrap();
        for hash in &acknowledged {
            assert!(
                log.contains(hash).unwrap(),
                "an acknowledged change was lost"
            );
        }
    }

    // Restart; the device finishes; every change is logged exactly once.
    let _relay = serve(&data, port, &[]);
    let report = runtime
        .block_on(async {
            loop {
                match sync_once(
                    replica.clone(),
                    &credential,
                    &options,
                    Duration::from_secs(60),
                )
                .await
                {
                    Err(NetError::Connect { .. } | NetError::Timeout { .. }) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => return other,
                }
            }
        })
        .unwrap();
    assert_eq!(replica.pending_uploads().unwrap(), 0, "{report:?}");
    drop(_relay);
    let log = SqliteLogStore::open(&data.join("relay.db"), relay_id.trim()).unwrap();
    assert_eq!(
        log.head().unwrap(),
        ORDERS as u64,
        "each change logged once"
    );
    for hash in &all {
        assert!(log.contains(hash).unwrap());
    }
}
