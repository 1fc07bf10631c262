//! Three relay processes share PostgreSQL (and NATS when the tier is on). One is
//! killed with SIGKILL in the middle of a device's uploads: the device reconnects to
//! another node and resumes from its cursor; nothing it was told was accepted is
//! lost, and nothing is logged or received twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use waybill_core::Replica;
use waybill_core::credential::Credential;
use waybill_core::net::{NetError, SyncOptions, SyncReport, sync_once};
use waybill_server::testing::{PgSchema, nats_server};

mod support;

use support::{
    RelayProcess, enroll_store, file_replica, free_udp_port, order, outbox_hashes, serve,
};

const ORDERS: usize = 3_000;

fn start_node(data: &Path, port: u16, postgres: &str, nats: Option<&str>) -> RelayProcess {
    let mut extra = vec!["--postgres", postgres];
    if let Some(nats) = nats {
        extra.extend(["--nats", nats]);
    }
    serve(data, port, &extra)
}

/// Sync through `addr`, retrying while the node is still starting.
async fn sync_via(
    replica: &Arc<Replica>,
    credential: &Credential,
    addr: &str,
) -> Result<SyncReport, NetError> {
    let options = SyncOptions {
        relay_addr: Some(addr.to_owned()),
        ..SyncOptions::default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match sync_once(
            replica.clone(),
            credential,
            &options,
            Duration::from_secs(60),
        )
        .await
        {
            Err(NetError::Connect { .. } | NetError::Timeout { .. })
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

#[test]
fn a_node_killed_mid_upload_loses_nothing_and_its_devices_resume_elsewhere() {
    let Some(pg) = PgSchema::for_test("node_loss") else {
        return;
    };
    let nats = nats_server("node_loss");
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_udp_port(), free_udp_port(), free_udp_port()];
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);

    // One deployment: the keys made by the first `enroll` are copied to every node.
    let data: Vec<_> = (0..3)
        .map(|i| dir.path().join(format!("node{i}")))
        .collect();
    let tablet_cred = enroll_store(&data[0], "S1", ports[0], &dir.path().join("tablet.cred"));
    let reader_cred = enroll_store(&data[0], "S1", ports[2], &dir.path().join("reader.cred"));
    for target in &data[1..] {
        std::fs::create_dir_all(target).unwrap();
        for file in std::fs::read_dir(&data[0]).unwrap() {
            let file = file.unwrap();
            std::fs::copy(file.path(), target.join(file.file_name())).unwrap();
        }
    }
    let mut nodes: Vec<Option<RelayProcess>> = (0..3)
        .map(|i| Some(start_node(&data[i], ports[i], &pg.url, nats.as_deref())))
        .collect();

    let tablet = file_replica(&dir.path().join("tablet.db"), &tablet_cred);
    for n in 0..ORDERS {
        tablet.create_order(&order(n)).unwrap();
    }
    let all = outbox_hashes(&tablet);
    assert_eq!(all.len(), ORDERS);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let uploading = {
        let (tablet, cred, to) = (tablet.clone(), tablet_cred.clone(), addr(0));
        runtime.spawn(async move { sync_via(&tablet, &cred, &to).await })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while tablet.pending_uploads().unwrap() as usize >= ORDERS {
        assert!(Instant::now() < deadline, "no upload was acknowledged");
        std::thread::sleep(Duration::from_millis(2));
    }
    nodes[0].take().unwrap().kill(); // SIGKILL
    uploading.abort();
    let _ = runtime.block_on(uploading);
    let acknowledged: HashSet<Vec<u8>> = all.difference(&outbox_hashes(&tablet)).cloned().collect();
    assert!(
        !acknowledged.is_empty() && acknowledged.len() < ORDERS,
        "the kill must land mid-upload ({} acknowledged)",
        acknowledged.len()
    );
    let mut db = pg.client();
    let logged = |db: &mut postgres::Client, hash: &Vec<u8>| -> bool {
        db.query_one("SELECT EXISTS (SELECT 1 FROM log WHERE hash = $1)", &[hash])
            .unwrap()
            .get(0)
    };
    for hash in &acknowledged {
        assert!(logged(&mut db, hash), "an acknowledged change was lost");
    }

    // The tablet's load balancer now sends it to node 1: it resumes from its cursor.
    let report = runtime
        .block_on(sync_via(&tablet, &tablet_cred, &addr(1)))
        .unwrap();
    assert!(
        !report.full_sync,
        "same deployment, same log: the cursor resumes"
    );
    assert_eq!(tablet.pending_uploads().unwrap(), 0, "{report:?}");

    // A device on node 2 receives every order exactly once.
    let reader = file_replica(&dir.path().join("reader.db"), &reader_cred);
    let received = runtime
        .block_on(sync_via(&reader, &reader_cred, &addr(2)))
        .unwrap();
    assert_eq!(received.received, ORDERS as u64, "{received:?}");
    assert_eq!(reader.doc_ids().unwrap().len(), ORDERS);

    let row = db
        .query_one(
            "SELECT count(*), count(DISTINCT hash), coalesce(max(seq), 0) FROM log",
            &[],
        )
        .unwrap();
    let (count, distinct, head): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(count, ORDERS as i64, "each change logged once");
    assert_eq!((distinct, head), (count, count));
    for hash in &all {
        assert!(logged(&mut db, hash));
    }
    drop(nodes);
}
