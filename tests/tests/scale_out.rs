//! Three relay nodes sharing PostgreSQL, linked by a bus (in process, and NATS
//! JetStream), with devices spread over them over real QUIC. Needs the services
//! `.ci/run` starts; without `WAYBILL_TEST_POSTGRES` / `WAYBILL_TEST_NATS` the tests
//! say which tier they skipped. Node loss (SIGKILL of a relay process) is
//! `server/tests/node_loss.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use waybill_core::model::{EventDetails, NewDelivery};
use waybill_core::net::{ConnectionState, SyncClient, SyncOptions};
use waybill_core::replica::Replica;
use waybill_core::{DocId, Role};
use waybill_server::bus::{Bus, InProcessBus};
use waybill_tests::loopback::{credential, eventually, replica, sync};
use waybill_tests::order;
use waybill_tests::scale_out::{Link, PgSchema, nats_server, nodes};

/// Long enough that only commit notices, never the tick, move changes between
/// nodes while a test looks.
const NO_TICK: Duration = Duration::from_secs(3600);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn in_process_link() -> Link {
    let bus = InProcessBus::new();
    let buses: Vec<Arc<dyn Bus>> = vec![
        Arc::new(bus.join()),
        Arc::new(bus.join()),
        Arc::new(bus.join()),
    ];
    Link::InProcess(buses)
}

fn orders_of(replica: &Replica) -> BTreeSet<String> {
    replica
        .doc_ids()
        .unwrap()
        .into_iter()
        .map(|id| id.to_string())
        .filter(|id| id.starts_with("ord_"))
        .collect()
}

fn same_heads(a: &Replica, b: &Replica, ids: &[DocId]) -> bool {
    ids.iter()
        .all(|id| a.heads(id).unwrap() == b.heads(id).unwrap())
}

/// Where the changes one device has and another lacks are in the shared log (for
/// the failure message).
async fn locate(url: &str, differ: &[(String, Vec<String>, Vec<String>)]) -> Vec<String> {
    let missing: Vec<String> = differ
        .iter()
        .flat_map(|(_, theirs, mine)| theirs.iter().filter(|h| !mine.contains(h)).cloned())
        .collect();
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let head: i64 = db
            .query_one("SELECT head FROM log_head", &[])
            .unwrap()
            .get(0);
        missing
            .iter()
            .map(|hex| {
                let hash: Vec<u8> = (0..hex.len() / 2)
                    .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                    .collect();
                let logged = db
                    .query_opt("SELECT seq, device_id FROM log WHERE hash = $1", &[&hash])
                    .unwrap()
                    .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)));
                let waiting = db
                    .query_opt("SELECT device_id FROM waiting WHERE hash = $1", &[&hash])
                    .unwrap()
                    .map(|r| r.get::<_, String>(0));
                format!(
                    "{}: logged {logged:?}, waiting {waiting:?}, head {head}",
                    &hex[..8]
                )
            })
            .collect()
    })
    .await
    .unwrap()
}

#[test]
fn three_nodes_on_postgres_converge_with_the_in_process_bus() {
    let Some(pg) = PgSchema::for_test("converge_local") else {
        return;
    };
    runtime().block_on(three_nodes_converge(&pg, in_process_link()));
}

#[test]
fn three_nodes_on_postgres_converge_over_nats_jetstream() {
    let Some(pg) = PgSchema::for_test("converge_nats") else {
        return;
    };
    let Some(nats) = nats_server("converge_nats") else {
        return;
    };
    runtime().block_on(three_nodes_converge(&pg, Link::Nats(nats)));
}

async fn three_nodes_converge(pg: &PgSchema, link: Link) {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(3, dir.path(), &pg.url, &link, NO_TICK).await;
    let a_cred = credential(&nodes[0], "tablet-a", Role::Store, "S1");
    let b_cred = credential(&nodes[1], "tablet-b", Role::Store, "S1");
    let console_cred = credential(&nodes[2], "console", Role::Dispatcher, "");
    let phone_cred = credential(&nodes[1], "phone-7", Role::Courier, "courier-7");
    let (a, b, console, phone) = (
        replica(&a_cred),
        replica(&b_cred),
        replica(&console_cred),
        replica(&phone_cred),
    );

    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(a.create_order(&order("S1", n)).unwrap());
    }
    sync(&a, &a_cred).await;

    // Tablet B follows the log live on node 1: an order accepted on node 0 reaches
    // it with no poll and no tick.
    let client = SyncClient::start(Arc::clone(&b), b_cred.clone(), SyncOptions::default());
    assert!(
        eventually(Duration::from_secs(20), || client.status().state
            == ConnectionState::Live
            && orders_of(&b).len() == 20)
        .await,
        "tablet B caught up through node 1"
    );
    let live = a.create_order(&order("S1", 20)).unwrap();
    sync(&a, &a_cred).await;
    assert!(
        eventually(Duration::from_secs(10), || same_heads(
            &a,
            &b,
            std::slice::from_ref(&live)
        ))
        .await,
        "an order accepted on node 0 reached the device live on node 1"
    );
    client.stop().await;
    ids.push(live);

    // Concurrent offline edits of the same orders, uploaded through three nodes.
    sync(&console, &console_cred).await;
    let mut deliveries = Vec::new();
    for id in &ids[..10] {
        a.record_event(id, "confirmed", &EventDetails::default())
            .unwrap();
        b.add_note(id, "ring twice").unwrap();
        deliveries.push(
            console
                .assign_courier(id, "courier-7", &NewDelivery::default())
                .unwrap(),
        );
    }
    tokio::join!(
        sync(&a, &a_cred),
        sync(&b, &b_cred),
        sync(&console, &console_cred),
        sync(&phone, &phone_cred),
    );
    for _ in 0..2 {
        tokio::join!(
            sync(&a, &a_cred),
            sync(&b, &b_cred),
            sync(&console, &console_cred),
            sync(&phone, &phone_cred),
        );
    }
    let pending: Vec<u64> = [&a, &b, &console, &phone]
        .iter()
        .map(|d| d.pending_uploads().unwrap())
        .collect();
    for device in [&b, &console] {
        let differ: Vec<_> = ids
            .iter()
            .filter(|id| a.heads(id).unwrap() != device.heads(id).unwrap())
            .map(|id| {
                (
                    id.to_string(),
                    a.heads(id).unwrap(),
                    device.heads(id).unwrap(),
                )
            })
            .collect();
        if !differ.is_empty() {
            let which = if Arc::ptr_eq(device, &b) {
                "b"
            } else {
                "console"
            };
            let found = locate(&pg.url, &differ).await;
            panic!("{which} diverged from a (pending uploads {pending:?}): {found:?}");
        }
    }
    assert!(same_heads(&console, &phone, &deliveries));
    assert!(same_heads(&console, &phone, &ids[..10]));
    for id in &ids[..10] {
        let view = a.order(id).unwrap();
        assert_eq!(view.status, "confirmed");
        assert!(view.notes.contains("ring twice"));
    }
    assert_eq!(
        orders_of(&phone).len(),
        10,
        "the courier sees the orders it delivers, no others"
    );

    // The shared log: gapless, nothing left waiting, nothing logged twice.
    for node in nodes {
        node.shutdown().await;
    }
    let rows = tokio::task::spawn_blocking({
        let url = pg.url.clone();
        move || {
            let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let log = db
                .query_one(
                    "SELECT count(*), coalesce(max(seq), 0), count(DISTINCT hash) FROM log",
                    &[],
                )
                .unwrap();
            let waiting: i64 = db
                .query_one("SELECT count(*) FROM waiting", &[])
                .unwrap()
                .get(0);
            (
                log.get::<_, i64>(0),
                log.get::<_, i64>(1),
                log.get::<_, i64>(2),
                waiting,
            )
        }
    })
    .await
    .unwrap();
    let (count, head, distinct, waiting) = rows;
    assert_eq!(count, head, "sequence numbers 1..head, no gap");
    assert_eq!(count, distinct, "no change logged twice");
    assert_eq!(
        waiting, 0,
        "no change left waiting for one a node had not read"
    );
}
