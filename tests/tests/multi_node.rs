//! Several relay state machines on one shared store, as relay nodes share one
//! PostgreSQL database: driven in process, deterministic. The QUIC, PostgreSQL and
//! NATS version of these scenarios is `scale_out.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use waybill_core::credential::CredentialIssuer;
use waybill_core::model::NewDelivery;
use waybill_core::protocol::LogEntry;
use waybill_core::sync::{
    IngestBatch, LogStore, LogStoreError, QuarantinedChange, Relay, RelayConfig, SharedLogStore,
    StoredChange, ViewChange,
};
use waybill_core::{DocId, Role};
use waybill_tests::{Device, order, pump};

const NOW: i64 = 1_790_000_000_000;

fn node(store: &SharedLogStore, issuer: &CredentialIssuer) -> Relay<SharedLogStore> {
    Relay::new(store.clone(), issuer.verifier(), RelayConfig::default())
}

fn heads(d: &Device, id: &DocId) -> Vec<String> {
    d.replica.heads(id).unwrap()
}

/// A device moves to another node and builds on a change that node has not seen in
/// its working copy. Without the version check the new change would wait forever
/// for a dependency the node's stale copy lacks (acknowledged, never logged).
#[test]
fn a_stale_working_copy_conflicts_and_is_read_again() {
    let issuer = CredentialIssuer::generate();
    let store = SharedLogStore::new("relay-shared");
    let mut node1 = node(&store, &issuer);
    let mut node2 = node(&store, &issuer);
    let mut tablet = Device::with_role(&issuer, "tablet-1", Role::Store, "S1");
    let mut tablet2 = Device::with_role(&issuer, "tablet-2", Role::Store, "S1");

    let order_id = tablet.replica.create_order(&order("S1", 1)).unwrap();
    tablet.connect(&mut node1, 1);
    pump(&mut node1, &mut [&mut tablet], NOW); // node 1 now holds a working copy

    tablet2.connect(&mut node2, 1);
    pump(&mut node2, &mut [&mut tablet2], NOW);
    tablet2.replica.add_note(&order_id, "first note").unwrap();
    tablet2.wrote();
    pump(&mut node2, &mut [&mut tablet2], NOW);
    assert_eq!(store.head().unwrap(), 2, "node 2 logged the first note");

    // Node 1 is not told (a lost notice): its copy of the order is stale.
    tablet2.disconnect(&mut node2);
    tablet2.connect(&mut node1, 2);
    pump(&mut node1, &mut [&mut tablet, &mut tablet2], NOW);
    tablet2.replica.add_note(&order_id, "second note").unwrap();
    tablet2.wrote();
    pump(&mut node1, &mut [&mut tablet, &mut tablet2], NOW);

    assert_eq!(
        store.head().unwrap(),
        3,
        "the second note is logged, not left waiting for a change node 1 had not read"
    );
    assert_eq!(tablet2.replica.pending_uploads().unwrap(), 0);
    assert_eq!(heads(&tablet, &order_id), heads(&tablet2, &order_id));
    let notes = tablet.replica.order(&order_id).unwrap().notes;
    assert!(
        notes.contains("first note") && notes.contains("second note"),
        "the tablet on node 1 got both notes: {notes:?}"
    );
}

/// A change accepted on node 1 reaches a device following the log live on node 2
/// when node 2 hears node 1's notice, and at node 2's next tick if it never does.
#[test]
fn commits_on_one_node_reach_live_devices_on_another() {
    let issuer = CredentialIssuer::generate();
    let store = SharedLogStore::new("relay-shared");
    let mut node1 = node(&store, &issuer);
    let mut node2 = node(&store, &issuer);
    let mut tablet = Device::with_role(&issuer, "tablet-1", Role::Store, "S1");
    let mut phone = Device::with_role(&issuer, "phone-7", Role::Courier, "courier-7");
    tablet.connect(&mut node1, 1);
    phone.connect(&mut node2, 1);
    pump(&mut node1, &mut [&mut tablet], NOW);
    pump(&mut node2, &mut [&mut phone], NOW);
    while node1.poll_committed().is_some() {}

    let order_id = tablet.replica.create_order(&order("S1", 1)).unwrap();
    let delivery_id = tablet
        .replica
        .assign_courier(&order_id, "courier-7", &NewDelivery::default())
        .unwrap();
    tablet.wrote();
    pump(&mut node1, &mut [&mut tablet], NOW);
    pump(&mut node2, &mut [&mut phone], NOW);
    assert!(
        phone.replica.doc_ids().unwrap().is_empty(),
        "nothing moves on node 2 before it hears of the commit"
    );

    let mut woken = Vec::new();
    while let Some(notice) = node1.poll_committed() {
        assert!(notice.doc_ids.contains(&delivery_id.to_string()));
        woken.extend(node2.on_remote_commit(&notice));
    }
    assert_eq!(woken, vec![1], "the live phone is woken");
    pump(&mut node2, &mut [&mut phone], NOW);
    assert_eq!(heads(&phone, &delivery_id), heads(&tablet, &delivery_id));
    assert_eq!(heads(&phone, &order_id), heads(&tablet, &order_id));

    // A notice lost on the way: the tick finds the log moved on.
    tablet.replica.add_note(&order_id, "side door").unwrap();
    tablet.wrote();
    pump(&mut node1, &mut [&mut tablet], NOW);
    while node1.poll_committed().is_some() {}
    assert_ne!(heads(&phone, &order_id), heads(&tablet, &order_id));
    assert_eq!(node2.tick(NOW), vec![1]);
    pump(&mut node2, &mut [&mut phone], NOW);
    assert_eq!(heads(&phone, &order_id), heads(&tablet, &order_id));
}

/// A device and the node it is connected to.
struct Placed {
    device: Device,
    node: usize,
}

fn pump_node(nodes: &mut [Relay<SharedLogStore>], devices: &mut [Placed], i: usize) -> usize {
    let mut here: Vec<&mut Device> = devices
        .iter_mut()
        .filter(|p| p.node == i)
        .map(|p| &mut p.device)
        .collect();
    pump(&mut nodes[i], &mut here, NOW)
}

/// Random schedules over three nodes on one store: devices edit the same orders,
/// nodes run their devices' exchanges in turn (so their working copies go stale),
/// commit notices are delivered late, out of order or never, devices move between
/// nodes. Once everything is delivered, every device holds the same version of
/// every document it shares with another, nothing waits in the store, and nothing
/// stays unacknowledged. `WAYBILL_MULTI_NODE_SEEDS=n` runs more seeds.
#[test]
fn random_schedules_over_three_nodes_converge() {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let seeds: u64 = std::env::var("WAYBILL_MULTI_NODE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    for seed in 0..seeds {
        let mut rng = StdRng::seed_from_u64(seed);
        let issuer = CredentialIssuer::generate();
        let store = SharedLogStore::new("relay-shared");
        let mut nodes: Vec<Relay<SharedLogStore>> = (0..3).map(|_| node(&store, &issuer)).collect();
        let mut devices: Vec<Placed> = [
            Device::with_role(&issuer, "tablet-a", Role::Store, "S1"),
            Device::with_role(&issuer, "tablet-b", Role::Store, "S1"),
            Device::with_role(&issuer, "console", Role::Dispatcher, ""),
            Device::with_role(&issuer, "phone-7", Role::Courier, "courier-7"),
        ]
        .into_iter()
        .map(|device| Placed { device, node: 0 })
        .collect();
        let orders: Vec<DocId> = (0..5)
            .map(|n| {
                devices[0]
                    .device
                    .replica
                    .create_order(&order("S1", n))
                    .unwrap()
            })
            .collect();
        let mut next_conn = 1;
        for p in &mut devices {
            p.node = rng.gen_range(0..3);
            p.device.connect(&mut nodes[p.node], next_conn);
            next_conn += 1;
        }
        let mut notices = Vec::new();
        for _ in 0..80 {
            match rng.gen_range(0..10) {
                0..=3 => {
                    let d = rng.gen_range(0..devices.len());
                    let id = &orders[rng.gen_range(0..orders.len())];
                    let replica = &devices[d].device.replica;
                    // Edits a device cannot make yet (it lacks the order) just fail.
                    let _ = match d {
                        0 | 1 => replica.add_note(id, &format!("note from {d}")),
                        2 => replica
                            .assign_courier(id, "courier-7", &NewDelivery::default())
                            .map(|_| ()),
                        _ => replica.add_note(id, "courier note"),
                    };
                    devices[d].device.wrote();
                }
                4..=6 => {
                    let i = rng.gen_range(0..3);
                    pump_node(&mut nodes, &mut devices, i);
                    while let Some(notice) = nodes[i].poll_committed() {
                        notices.push((i, notice));
                    }
                }
                7 => {
                    // Deliver, drop or keep some notices, in any order.
                    let mut kept = Vec::new();
                    for (from, notice) in notices.drain(..) {
                        match rng.gen_range(0..4) {
                            0 => kept.push((from, notice)),
                            1 => {}
                            _ => {
                                for to in (0..3).filter(|to| *to != from) {
                                    nodes[to].on_remote_commit(&notice);
                                }
                            }
                        }
                    }
                    notices = kept;
                }
                8 => {
                    let d = rng.gen_range(0..devices.len());
                    let to = rng.gen_range(0..3);
                    let p = &mut devices[d];
                    p.device.disconnect(&mut nodes[p.node]);
                    p.node = to;
                    p.device.connect(&mut nodes[to], next_conn);
                    next_conn += 1;
                }
                _ => {
                    let i = rng.gen_range(0..3);
                    nodes[i].tick(NOW);
                }
            }
        }
        // Quiesce: deliver every notice, tick, and run every node until nothing moves.
        for (from, notice) in notices.drain(..) {
            for to in (0..3).filter(|to| *to != from) {
                nodes[to].on_remote_commit(&notice);
            }
        }
        for _ in 0..10 {
            let mut moved = 0;
            for i in 0..3 {
                nodes[i].tick(NOW);
                moved += pump_node(&mut nodes, &mut devices, i);
                while let Some(notice) = nodes[i].poll_committed() {
                    for to in (0..3).filter(|to| *to != i) {
                        nodes[to].on_remote_commit(&notice);
                    }
                }
            }
            if moved == 0 {
                break;
            }
        }
        for p in &devices {
            assert_eq!(
                p.device.replica.pending_uploads().unwrap(),
                0,
                "seed {seed}: {} has unacknowledged changes",
                p.device.replica.identity().device_id
            );
        }
        for doc in store.doc_ids().unwrap() {
            assert_eq!(
                store.doc_changes(&doc).unwrap().len(),
                store.doc_log(&doc).unwrap().len(),
                "seed {seed}: changes of {doc} wait in the store"
            );
        }
        for a in 0..devices.len() {
            for b in a + 1..devices.len() {
                let (x, y) = (&devices[a].device.replica, &devices[b].device.replica);
                for id in x.doc_ids().unwrap() {
                    let (hx, hy) = (x.heads(&id).unwrap(), y.heads(&id));
                    if let Ok(hy) = hy
                        && !hy.is_empty()
                    {
                        assert_eq!(
                            hx,
                            hy,
                            "seed {seed}: {} and {} differ on {id}",
                            x.identity().device_id,
                            y.identity().device_id
                        );
                    }
                }
            }
        }
    }
}

/// A node's store on which another node commits while this node reads the log:
/// the moment between reading the log head and reading a page.
struct CommitDuringRead {
    store: SharedLogStore,
    injected: std::sync::Mutex<Option<IngestBatch>>,
}

impl CommitDuringRead {
    /// The other node's commit, once, right after this node read a page.
    fn commit_injected(&self) {
        if let Some(batch) = self.injected.lock().unwrap().take() {
            self.store.clone().commit(&batch).unwrap();
        }
    }
}

impl LogStore for CommitDuringRead {
    fn relay_id(&self) -> String {
        self.store.relay_id()
    }
    fn head(&self) -> Result<u64, LogStoreError> {
        self.store.head()
    }
    fn oldest_resumable(&self) -> Result<u64, LogStoreError> {
        self.store.oldest_resumable()
    }
    fn commit(&mut self, batch: &IngestBatch) -> Result<Vec<u64>, LogStoreError> {
        self.store.commit(batch)
    }
    fn read_log(&self, after: u64, n: usize, bytes: usize) -> Result<Vec<LogEntry>, LogStoreError> {
        let page = self.store.read_log(after, n, bytes);
        self.commit_injected();
        page
    }
    fn read_log_for(
        &self,
        principal: &str,
        after: u64,
        head: u64,
        n: usize,
        bytes: usize,
    ) -> Result<(Vec<LogEntry>, u64), LogStoreError> {
        let page = self.store.read_log_for(principal, after, head, n, bytes);
        self.commit_injected();
        page
    }
    fn contains(&self, hash: &[u8]) -> Result<bool, LogStoreError> {
        self.store.contains(hash)
    }
    fn doc_changes(&self, doc_id: &str) -> Result<Vec<Vec<u8>>, LogStoreError> {
        self.store.doc_changes(doc_id)
    }
    fn doc_version(&self, doc_id: &str) -> Result<u64, LogStoreError> {
        self.store.doc_version(doc_id)
    }
    fn doc_ids(&self) -> Result<Vec<String>, LogStoreError> {
        self.store.doc_ids()
    }
    fn is_quarantined(&self, hash: &[u8]) -> Result<bool, LogStoreError> {
        self.store.is_quarantined(hash)
    }
    fn quarantined(&self) -> Result<Vec<QuarantinedChange>, LogStoreError> {
        self.store.quarantined()
    }
    fn audience_of(&self, doc_id: &str) -> Result<BTreeSet<String>, LogStoreError> {
        self.store.audience_of(doc_id)
    }
    fn view(&self, principal: &str) -> Result<Vec<String>, LogStoreError> {
        self.store.view(principal)
    }
    fn view_changes(&self, principal: &str, after: u64) -> Result<Vec<ViewChange>, LogStoreError> {
        self.store.view_changes(principal, after)
    }
    fn doc_log(&self, doc_id: &str) -> Result<Vec<LogEntry>, LogStoreError> {
        self.store.doc_log(doc_id)
    }
    fn is_revoked(&self, device_id: &str) -> Result<bool, LogStoreError> {
        self.store.is_revoked(device_id)
    }
    fn revoke(&mut self, device_id: &str) -> Result<(), LogStoreError> {
        self.store.revoke(device_id)
    }
}

/// A device resuming at the head, while another node commits between this node
/// reading the head and reading the (empty) page: the cursor must not move past
/// the new entries (found on the QUIC tier, where it dropped whole upload batches).
#[test]
fn a_commit_between_reading_the_head_and_the_page_is_not_skipped() {
    let issuer = CredentialIssuer::generate();
    let store = SharedLogStore::new("relay-shared");
    let mut node1 = Relay::new(
        CommitDuringRead {
            store: store.clone(),
            injected: std::sync::Mutex::new(None),
        },
        issuer.verifier(),
        RelayConfig::default(),
    );
    let mut node2 = node(&store, &issuer);
    let mut tablet = Device::with_role(&issuer, "tablet-a", Role::Store, "S1");
    let mut reader = Device::with_role(&issuer, "tablet-b", Role::Store, "S1");

    let first = tablet.replica.create_order(&order("S1", 1)).unwrap();
    tablet.connect(&mut node2, 1);
    pump(&mut node2, &mut [&mut tablet], NOW);
    reader.connect(&mut node1, 1);
    pump(&mut node1, &mut [&mut reader], NOW);
    reader.disconnect(&mut node1);
    assert_eq!(store.head().unwrap(), 1);

    // A note on the order, as another node would commit it, lands mid-read (no
    // view change comes with it to carry it another way).
    tablet.replica.add_note(&first, "fragile").unwrap();
    let change = tablet.replica.outbox(usize::MAX).unwrap().remove(0);
    *node1.store().injected.lock().unwrap() = Some(IngestBatch {
        log: vec![StoredChange {
            doc_id: change.doc_id.clone(),
            hash: change.hash.clone(),
            bytes: change.bytes.clone(),
            device_id: "tablet-a".into(),
        }],
        ..IngestBatch::default()
    });
    reader.connect(&mut node1, 2);
    pump(&mut node1, &mut [&mut reader], NOW);
    assert_eq!(store.head().unwrap(), 2, "the other node committed");

    // Its notice (or the tick) now brings the note; a skipped cursor never would.
    node1.tick(NOW);
    pump(&mut node1, &mut [&mut reader], NOW);
    assert_eq!(heads(&reader, &first), heads(&tablet, &first));
}
