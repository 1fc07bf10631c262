//! Seeded, deterministic simulation of the sync layer (DESIGN.md principle 1).
//!
//! One sans-IO [`Relay`] over a [`MemoryLogStore`] (its "disk") and 3–6 devices with
//! file-backed replicas: store tablets of S1 and S2, couriers and a dispatcher. Each
//! step the seeded RNG picks one thing to happen: a device makes a local change
//! through the typed API, one message is delivered, a disconnected device reconnects,
//! or a fault fires. Devices are honest: they only act through the typed API, whose
//! local rules refuse what their role may not do (those refusals are normal
//! outcomes). Store tablets and the dispatcher assign couriers, and assigning an order
//! that has an open delivery reassigns it, so deliveries and their orders move between
//! couriers' views (one courier has no phone: a delivery given to it leaves every
//! phone's view).
//!
//! The relay enforces access control (DESIGN.md principle 7): a device sees only the
//! documents whose audience names its principal (`sync::audience`; dispatchers see
//! everything). Every relay → device message is checked when it is delivered (the
//! no-leak property): each document it carries (`Changes` entries, `DocSync`) was in
//! the device's view, per the relay's durable audiences, at the moment the relay
//! handed the message out (`poll_transmit`, when it decided to send it; a later batch
//! may have moved the document away before the frame lands), and each document an
//! `Unshare` removes was no longer in it.
//!
//! The network: a connection is a pair of FIFO queues of encoded frames (device →
//! relay, relay → device), decoded with [`FrameDecoder`] on arrival, so the wire
//! format is exercised. Like a QUIC stream, a connection never reorders or skips;
//! the faults are the ones a real network and real machines have:
//! - a connection dies (everything queued either way is lost, both sides forget it);
//! - a set of devices is partitioned away for a while (no reconnect until healed);
//! - a device crashes (its `Replica` and session are dropped, the file reopened
//!   later) and the relay crashes (`into_store`: only committed batches survive;
//!   sessions, queued messages and cached documents are gone), sometimes restarting
//!   after a log compaction so that old cursors fall back to per-document sync;
//! - an already delivered `Upload` or `Changes` is delivered again on its connection.
//!
//! Reordering and duplication happen across connections: the relay serves devices
//! in random interleavings, and a reconnecting device re-sends every upload whose
//! ack was lost with the old connection.
//!
//! After the faulty phase everything heals (restart, reconnect, deliver until quiet,
//! twice) and the invariants are checked:
//! - the relay's recorded audience of every document is the one its content gives;
//! - each device holds exactly the documents in its view (the dispatcher: all of
//!   them), each with the relay's heads and changes, and derived views equal to the
//!   dispatcher's (no divergence);
//! - nothing lost: every change a device made is on the relay and on every device
//!   whose view holds its document; outboxes are empty;
//! - nothing refused or quarantined, except one race honest devices cannot avoid: a
//!   change made, offline, to a document (or at the door of a delivery) that had
//!   meanwhile been reassigned away from the device. Those must be in the quarantine
//!   and in the device's refused list (it was told), and a payment refused that way
//!   must be nowhere else. Any other refusal of an honest change is a bug, reported
//!   with the relay's reason;
//! - every recorded payment appears exactly once wherever its order is held;
//! - every cursor is at the relay's head.
//!
//! Reproducing: a seed fixes the schedule of operations, deliveries and faults.
//! Document ids and Automerge actor ids are random (uuid), so a rerun replays the
//! same schedule, not byte-identical documents (hashes and ids differ from run to
//! run). `WAYBILL_SIM_SEED=n` runs one seed; `WAYBILL_SIM_SEEDS=n` sets how many
//! seeds `seeds` runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use automerge::{Automerge, Change, ReadDoc};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use waybill_core::credential::CredentialIssuer;
use waybill_core::hlc::WallClock;
use waybill_core::model::{
    Document, EntryKind, EventDetails, NewDelivery, NewLedgerEntry, PaymentMethod, document,
};
use waybill_core::protocol::{
    self, DEFAULT_MAX_FRAME, ErrorCode, FrameDecoder, Message, PROTOCOL_VERSION, Version,
};
use waybill_core::replica::ReplicaOptions;
use waybill_core::store::{Durability, StoreOptions};
use waybill_core::sync::audience::{self, DISPATCH};
use waybill_core::sync::{
    ClientConfig, ClientSession, ConnId, LogStore, MemoryLogStore, Relay, RelayConfig,
};
use waybill_core::{DeviceIdentity, DocId, DocKind, Replica, ReplicaError, Role};
use waybill_tests::{YEAR_3000_MS, credential, order};

const START_MS: i64 = 1_700_000_000_000;
const RELAY_ID: &str = "sim-relay";
/// Seeds `seeds` runs by default: about 25 s in a debug build on 2 cores (the whole
/// file about 40 s).
const DEFAULT_SEEDS: u64 = 100;
/// Messages the healing phase may deliver before the network counts as stuck.
const QUIET_LIMIT: usize = 200_000;

#[rustfmt::skip]
const ORDER_KINDS: [&str; 11] = [
    "placed", "confirmed", "picking", "packed", "ready_for_pickup", "handed_over",
    "completed", "cancelled", "return_requested", "returned", "conflict_resolved",
];
#[rustfmt::skip]
const DELIVERY_KINDS: [&str; 7] = [
    "picked_up", "in_transit", "arrived", "delivered", "failed_attempt",
    "returned_to_store", "conflict_resolved",
];
/// Couriers deliveries are assigned to; the last has no phone in the simulation, so a
/// delivery reassigned to it leaves every courier phone's view.
const COURIERS: [&str; 3] = ["courier-1", "courier-2", "courier-3"];

// ------------------------------------------------------------------------ config

/// What a run does; the fault knobs are probabilities per step.
#[derive(Debug, Clone)]
struct Config {
    /// Steps of the faulty phase.
    steps: usize,
    /// Chance a step is a fault (drop, partition, crash, duplicate).
    fault: f64,
    /// Chance the relay crashes right after handling an `Upload` (before its ack
    /// reaches the device).
    crash_after_upload: f64,
    /// Chance a `Changes` message silently vanishes from a live connection: a network
    /// QUIC never is, used only to show that the invariants catch lost messages.
    skip: f64,
    /// Chance a `Changes` or `Snapshots` message the relay hands out is also queued to another
    /// device: a relay that leaks, used only to show that the no-leak check bites.
    misroute: f64,
}

impl Config {
    fn standard() -> Self {
        Self {
            steps: 300,
            fault: 0.06,
            crash_after_upload: 0.0,
            skip: 0.0,
            misroute: 0.0,
        }
    }
}

/// What happened in a run (for the report and for tests that need a fault to fire).
#[derive(Debug, Default, Clone)]
struct Stats {
    devices: usize,
    local_changes: usize,
    refusals: usize,
    payments: usize,
    delivered: usize,
    drops: usize,
    partitions: usize,
    device_crashes: usize,
    relay_crashes: usize,
    crashes_before_ack: usize,
    compactions: usize,
    duplicates: usize,
    reconnects: usize,
    full_syncs: usize,
    log_head: u64,
    documents: usize,
    /// Deliveries moved to another courier (views changed hands).
    reassignments: usize,
    /// Relay → device messages carrying documents, checked against the grants.
    grant_checks: usize,
    /// `Unshare` messages delivered.
    unshares: usize,
    /// Changes the relay refused because the device had lost the document to a
    /// reassignment it had not heard of when it made them (see `grant_race`).
    grant_races: usize,
    /// Payments among those.
    refused_payments: usize,
    /// Changes refused that way once, then logged after all (the document came back
    /// into the device's view before it gave up on them).
    refused_then_logged: usize,
}

// ------------------------------------------------------------------------ world

/// Simulated time, read by each device with its own skew.
struct SkewedClock(Arc<AtomicI64>, i64);

impl WallClock for SkewedClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst) + self.1
    }
}

/// What the relay's durable state said, at the moment the relay handed a message out
/// (`poll_transmit`, when it decided to send it), about each document the message
/// carries: its audience then, or None when the relay held no change of it (a
/// `DocSync` answering a document only the device has).
type Grants = BTreeMap<String, Option<BTreeSet<String>>>;

/// A frame in flight, with (relay → device) the grants when it was sent.
#[derive(Clone)]
struct Frame {
    bytes: Vec<u8>,
    grants: Grants,
}

/// One connection: the device's session and the frames in flight each way.
struct Link {
    conn: ConnId,
    session: ClientSession,
    up: VecDeque<Frame>,
    down: VecDeque<Frame>,
    up_decoder: FrameDecoder,
    down_decoder: FrameDecoder,
    /// The last `Upload` the relay received and `Changes` the device received, as
    /// frames: a duplicate fault delivers one of them again.
    last_upload: Option<Frame>,
    last_changes: Option<Frame>,
    /// The relay's `Welcome`: (head, full_sync), for failure reports.
    welcome: Option<(u64, bool)>,
}

struct Dev {
    name: String,
    identity: DeviceIdentity,
    /// Whose documents it sees (`courier:c`, `store:S`, `dispatch`).
    principal: String,
    path: PathBuf,
    options: ReplicaOptions,
    credential: Vec<u8>,
    /// None while crashed.
    replica: Option<Replica>,
    link: Option<Link>,
    /// Crashed until this step.
    down_until: usize,
    /// Partitioned away until this step.
    cut_until: usize,
    /// The newest outbox seq seen: later entries are this device's new changes.
    outbox_seen: i64,
    orders_made: usize,
}

impl Dev {
    fn open(&self) -> Result<Replica, String> {
        Replica::open(&self.path, self.identity.clone(), self.options.clone())
            .map_err(|e| format!("{}: cannot reopen its store: {e}", self.name))
    }
}

enum RelayState {
    Up(Box<Relay<MemoryLogStore>>),
    /// Crashed: only the "disk" remains, until the given step.
    Down(Box<MemoryLogStore>, usize),
    Gone,
}

struct Sim {
    cfg: Config,
    rng: StdRng,
    clock: Arc<AtomicI64>,
    issuer: CredentialIssuer,
    relay_config: RelayConfig,
    client_config: ClientConfig,
    relay: RelayState,
    devices: Vec<Dev>,
    next_conn: ConnId,
    step: usize,
    faults: bool,
    /// Every change a device made through the typed API (hex hash → who made it,
    /// and the document).
    made: BTreeMap<String, (String, String)>,
    /// Every document a device created, in order.
    created: Vec<DocId>,
    /// Every payment entry recorded (order id, entry id) → (who, hashes of the
    /// changes that recorded it).
    payments: BTreeMap<(String, String), (String, Vec<String>)>,
    stats: Stats,
    _dir: tempfile::TempDir,
}

type Outcome = Result<(), String>;

impl Sim {
    fn new(seed: u64, cfg: Config) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(AtomicI64::new(START_MS));
        let issuer = CredentialIssuer::generate();
        // Small pages, batches and caches, so paging, windowing and eviction run.
        let relay_config = RelayConfig {
            page_entries: rng.gen_range(1..=8),
            page_bytes: rng.gen_range(512..=64 * 1024),
            cached_docs: rng.gen_range(1..=16),
            max_sync_rounds: 16,
            snapshot_docs: rng.gen_range(1..=8),
        };
        let client_config = ClientConfig {
            batch_changes: rng.gen_range(1..=6),
            batch_bytes: rng.gen_range(512..=64 * 1024),
            batches_in_flight: rng.gen_range(1..=3),
            client: "sim".into(),
            // Half the runs talk protocol 1.0 (never-synced devices read the whole
            // log), half 1.1 (they get snapshots first).
            version: Version {
                major: PROTOCOL_VERSION.major,
                minor: rng.gen_range(0..=PROTOCOL_VERSION.minor),
            },
        };
        // Always a tablet of each store, a courier and the dispatcher; then 0–2 more.
        let mut roles = vec![
            DeviceIdentity::store("tablet-s1", "S1"),
            DeviceIdentity::courier("phone-c1", COURIERS[0]),
            DeviceIdentity::dispatcher("console"),
        ];
        if rng.gen_bool(0.7) {
            roles.insert(1, DeviceIdentity::store("tablet-s2", "S2"));
        }
        for extra in 0..rng.gen_range(0..=2) {
            roles.push(match extra {
                0 => DeviceIdentity::courier("phone-c2", COURIERS[1]),
                _ => DeviceIdentity::store("tablet-s1b", "S1"),
            });
        }
        let devices = roles
            .into_iter()
            .map(|identity| {
                let name = identity.device_id.clone();
                let skew = rng.gen_range(-5_000..5_000);
                let options = ReplicaOptions {
                    store: StoreOptions {
                        durability: Durability::Normal,
                        ..StoreOptions::default()
                    },
                    clock: Arc::new(SkewedClock(Arc::clone(&clock), skew)),
                };
                let path = dir.path().join(format!("{name}.db"));
                let credential = credential(&issuer, &identity, YEAR_3000_MS);
                let replica = Replica::open(&path, identity.clone(), options.clone()).unwrap();
                Dev {
                    name,
                    principal: audience::principal(&identity),
                    identity,
                    path,
                    options,
                    credential,
                    replica: Some(replica),
                    link: None,
                    down_until: 0,
                    cut_until: 0,
                    outbox_seen: 0,
                    orders_made: 0,
                }
            })
            .collect::<Vec<_>>();
        let relay = Relay::new(
            MemoryLogStore::new(RELAY_ID),
            issuer.verifier(),
            relay_config.clone(),
        );
        let stats = Stats {
            devices: devices.len(),
            ..Stats::default()
        };
        Self {
            cfg,
            rng,
            clock,
            issuer,
            relay_config,
            client_config,
            relay: RelayState::Up(Box::new(relay)),
            devices,
            next_conn: 1,
            step: 0,
            faults: true,
            made: BTreeMap::new(),
            created: Vec::new(),
            payments: BTreeMap::new(),
            stats,
            _dir: dir,
        }
    }

    fn now(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }

    fn relay(&mut self) -> Option<&mut Relay<MemoryLogStore>> {
        match &mut self.relay {
            RelayState::Up(relay) => Some(relay),
            _ => None,
        }
    }

    // -------------------------------------------------------------------- run

    fn run(&mut self) -> Result<Stats, String> {
        for step in 0..self.cfg.steps {
            self.step = step;
            self.clock
                .fetch_add(self.rng.gen_range(1..500), Ordering::SeqCst);
            self.restarts()?;
            self.one_step()?;
            self.flush()?;
        }
        self.heal()?;
        self.check().map_err(|e| format!("after healing: {e}"))?;
        let relay = self.relay().expect("up after healing");
        let (head, documents) = (
            relay.store().head().unwrap(),
            relay.store().doc_ids().unwrap().len(),
        );
        self.stats.log_head = head;
        self.stats.documents = documents;
        Ok(self.stats.clone())
    }

    /// Bring back what crashed, once its time is up (or unconditionally when healing).
    fn restarts(&mut self) -> Outcome {
        let step = self.step;
        let all = !self.faults;
        if let RelayState::Down(_, until) = &self.relay
            && (all || *until <= step)
        {
            let RelayState::Down(mut store, _) =
                std::mem::replace(&mut self.relay, RelayState::Gone)
            else {
                unreachable!()
            };
            // Sometimes the log was compacted while the relay was down: devices with
            // older cursors must fall back to per-document sync.
            let head = store.head().unwrap();
            if self.faults && head > 0 && self.rng.gen_bool(0.3) {
                store.prune_through(self.rng.gen_range(1..=head));
                self.stats.compactions += 1;
            }
            self.relay = RelayState::Up(Box::new(Relay::new(
                *store,
                self.issuer.verifier(),
                self.relay_config.clone(),
            )));
        }
        for i in 0..self.devices.len() {
            let d = &self.devices[i];
            if d.replica.is_none() && (all || d.down_until <= step) {
                let replica = d.open()?;
                self.devices[i].replica = Some(replica);
            }
        }
        Ok(())
    }

    fn one_step(&mut self) -> Outcome {
        let roll: f64 = self.rng.r#gen();
        let fault = self.cfg.fault;
        if roll < fault {
            self.fault()
        } else if roll < fault + 0.30 {
            let live: Vec<usize> = (0..self.devices.len())
                .filter(|&i| self.devices[i].replica.is_some())
                .collect();
            match live.choose(&mut self.rng) {
                Some(&i) => self.local_op(i),
                None => Ok(()),
            }
        } else if roll < fault + 0.38 {
            let eligible: Vec<usize> = (0..self.devices.len())
                .filter(|&i| self.can_connect(i))
                .collect();
            match eligible.choose(&mut self.rng) {
                Some(&i) => self.connect(i),
                None => Ok(()),
            }
        } else {
            self.deliver_one()
        }
    }

    fn can_connect(&self, i: usize) -> bool {
        let d = &self.devices[i];
        matches!(self.relay, RelayState::Up(_))
            && d.replica.is_some()
            && d.link.is_none()
            && (!self.faults || d.cut_until <= self.step)
    }

    fn connect(&mut self, i: usize) -> Outcome {
        let conn = self.next_conn;
        self.next_conn += 1;
        let d = &self.devices[i];
        let replica = d.replica.as_ref().expect("connect a live device");
        let mut session = ClientSession::new(d.credential.clone(), self.client_config.clone());
        session
            .start(replica)
            .map_err(|e| format!("{}: start: {e}", d.name))?;
        self.relay().expect("connect to a live relay").connect(conn);
        self.devices[i].link = Some(Link {
            conn,
            session,
            up: VecDeque::new(),
            down: VecDeque::new(),
            up_decoder: FrameDecoder::new(DEFAULT_MAX_FRAME),
            down_decoder: FrameDecoder::new(DEFAULT_MAX_FRAME),
            last_upload: None,
            last_changes: None,
            welcome: None,
        });
        self.stats.reconnects += 1;
        if trace() {
            eprintln!(
                "step {} {} connects as {conn}",
                self.step, self.devices[i].name
            );
        }
        Ok(())
    }

    /// The connection is gone: everything in flight is lost, both sides forget it.
    fn drop_link(&mut self, i: usize) {
        let Some(link) = self.devices[i].link.take() else {
            return;
        };
        trace_lost(self.step, &self.devices[i].name, &link);
        if let RelayState::Up(relay) = &mut self.relay {
            relay.disconnect(link.conn);
        }
    }

    // -------------------------------------------------------------------- network

    /// Move whatever the state machines want to send into the queues, and close
    /// connections either side has finished with.
    fn flush(&mut self) -> Outcome {
        let mut misrouted = Vec::new();
        for i in 0..self.devices.len() {
            let RelayState::Up(relay) = &mut self.relay else {
                break;
            };
            let Dev { name, link, .. } = &mut self.devices[i];
            let Some(link) = link.as_mut() else {
                continue;
            };
            while let Some(message) = link.session.poll_transmit() {
                link.up.push_back(Frame {
                    bytes: frame(&message)?,
                    grants: Grants::new(),
                });
            }
            while let Some(message) = relay.poll_transmit(link.conn) {
                // The relay has just decided to send this: record what its durable
                // state says about every document the message names, now (a later
                // batch may move a document out of the view before the frame lands).
                let store = relay.store();
                let mut grants = Grants::new();
                for doc_id in carried(&message).into_iter().chain(unshared(&message)) {
                    let held = !store.doc_changes(&doc_id).unwrap().is_empty();
                    grants.insert(
                        doc_id.clone(),
                        held.then(|| store.audience_of(&doc_id).unwrap()),
                    );
                }
                let sent = Frame {
                    bytes: frame(&message)?,
                    grants,
                };
                if self.faults
                    && self.cfg.misroute > 0.0
                    && !carried(&message).is_empty()
                    && matches!(&message, Message::Changes(_) | Message::Snapshots(_))
                    && self.rng.gen_bool(self.cfg.misroute)
                {
                    misrouted.push(sent.clone());
                }
                link.down.push_back(sent);
            }
            let closed = link.session.is_closed() && link.up.is_empty()
                || relay.wants_close(link.conn) && link.down.is_empty();
            if closed {
                // Honest devices and a healthy relay never close a session.
                return Err(format!(
                    "{}: connection {} was closed by the protocol",
                    name, link.conn
                ));
            }
        }
        // A relay that gets its routing wrong: the frame also goes to another device.
        for sent in misrouted {
            let linked: Vec<usize> = (0..self.devices.len())
                .filter(|&i| self.devices[i].link.is_some())
                .collect();
            if let Some(&j) = linked.choose(&mut self.rng) {
                self.devices[j].link.as_mut().unwrap().down.push_back(sent);
            }
        }
        Ok(())
    }

    /// Deliver the next frame of a random non-empty queue.
    fn deliver_one(&mut self) -> Outcome {
        let mut ready = Vec::new();
        for (i, d) in self.devices.iter().enumerate() {
            if let Some(link) = &d.link {
                if !link.up.is_empty() {
                    ready.push((i, true));
                }
                if !link.down.is_empty() {
                    ready.push((i, false));
                }
            }
        }
        match ready.choose(&mut self.rng).copied() {
            Some((i, up)) => self.deliver(i, up, None),
            None => Ok(()),
        }
    }

    /// Deliver the head of a queue (or `again`, a frame delivered before).
    fn deliver(&mut self, i: usize, up: bool, again: Option<Frame>) -> Outcome {
        let now = self.now();
        let name = self.devices[i].name.clone();
        let principal = self.devices[i].principal.clone();
        let link = self.devices[i].link.as_mut().expect("a connected device");
        let queue = if up { &mut link.up } else { &mut link.down };
        let again_flag = again.is_some();
        let sent = match again {
            Some(sent) => sent,
            None => queue.pop_front().expect("a non-empty queue"),
        };
        let decoder = if up {
            &mut link.up_decoder
        } else {
            &mut link.down_decoder
        };
        decoder.push(&sent.bytes);
        let payload = decoder
            .next_frame()
            .map_err(|e| format!("{name}: framing: {e}"))?
            .ok_or_else(|| format!("{name}: a whole frame did not decode as one"))?;
        let message = protocol::decode(&payload).map_err(|e| format!("{name}: decode: {e}"))?;
        self.stats.delivered += 1;
        if trace() {
            eprintln!(
                "step {} {} {name} conn {}: {}{}",
                self.step,
                if up { "->relay" } else { "->device" },
                link.conn,
                describe(&message),
                if again_flag { " (again)" } else { "" }
            );
        }
        if !up {
            // No leak: every document this message carries was in the device's view
            // when the relay sent it.
            check_grants(&name, &principal, &message, &sent.grants)?;
            self.stats.grant_checks += usize::from(!carried(&message).is_empty());
            self.stats.unshares += usize::from(matches!(message, Message::Unshare(_)));
        }
        if let Message::Error(e) = &message {
            // A refusal of a change made before the device heard that the document
            // was reassigned away is the one error honest devices can get.
            let race = !up
                && !e.fatal
                && e.code == ErrorCode::Forbidden
                && match (&self.relay, e.message.split_once(':')) {
                    (RelayState::Up(relay), Some((doc_id, _))) => {
                        grant_race(relay.store(), &principal, doc_id)
                    }
                    _ => false,
                };
            if !race {
                return Err(format!(
                    "{name}: {} sent an error: {e:?}",
                    if up { "the device" } else { "the relay" }
                ));
            }
            if trace() {
                eprintln!(
                    "step {} {name}: refused after losing the grant: {e:?}",
                    self.step
                );
            }
        }
        let link = self.devices[i].link.as_mut().expect("a connected device");
        if up {
            let is_upload = matches!(message, Message::Upload(_));
            if is_upload {
                link.last_upload = Some(sent);
            }
            let conn = link.conn;
            let RelayState::Up(relay) = &mut self.relay else {
                unreachable!("links exist only while the relay is up")
            };
            relay.handle(conn, message, now);
            if is_upload && self.faults && self.rng.gen_bool(self.cfg.crash_after_upload) {
                // The batch may be committed; its ack is queued and dies with the relay.
                self.stats.crashes_before_ack += 1;
                self.crash_relay();
            }
        } else {
            if let Message::Changes(changes) = &message {
                if self.faults
                    && self.cfg.skip > 0.0
                    && !changes.entries.is_empty()
                    && self.rng.gen_bool(self.cfg.skip)
                {
                    return Ok(());
                }
                link.last_changes = Some(sent);
            }
            if let Message::Welcome(w) = &message {
                link.welcome = Some((w.head, w.full_sync));
                self.stats.full_syncs += usize::from(w.full_sync);
            }
            let Dev { replica, link, .. } = &mut self.devices[i];
            let replica = replica.as_ref().expect("a live device");
            let link = link.as_mut().expect("a connected device");
            link.session
                .handle(replica, message)
                .map_err(|e| format!("{name}: the session failed: {e}"))?;
        }
        Ok(())
    }

    // -------------------------------------------------------------------- faults

    fn fault(&mut self) -> Outcome {
        let n = self.devices.len();
        let step = self.step;
        let roll = self.rng.gen_range(0..100);
        if trace() {
            eprintln!("step {step} fault {roll}");
        }
        match roll {
            // A connection dies.
            0..35 => {
                let linked: Vec<usize> =
                    (0..n).filter(|&i| self.devices[i].link.is_some()).collect();
                if let Some(&i) = linked.choose(&mut self.rng) {
                    self.drop_link(i);
                    self.stats.drops += 1;
                }
            }
            // Some devices are cut off for a while.
            35..50 => {
                let k = self.rng.gen_range(1..=n.div_ceil(2));
                let mut all: Vec<usize> = (0..n).collect();
                all.shuffle(&mut self.rng);
                let until = step + self.rng.gen_range(10..80);
                for &i in &all[..k] {
                    self.drop_link(i);
                    self.devices[i].cut_until = until;
                }
                self.stats.partitions += 1;
            }
            // A device crashes.
            50..70 => {
                let live: Vec<usize> = (0..n)
                    .filter(|&i| self.devices[i].replica.is_some())
                    .collect();
                if let Some(&i) = live.choose(&mut self.rng) {
                    self.drop_link(i);
                    self.devices[i].replica = None;
                    self.devices[i].down_until = step + self.rng.gen_range(3..60);
                    self.stats.device_crashes += 1;
                }
            }
            // The relay crashes.
            70..82 => self.crash_relay(),
            // A delivered message arrives again on the same connection.
            _ => {
                let mut repeats = Vec::new();
                for (i, d) in self.devices.iter().enumerate() {
                    if let Some(link) = &d.link {
                        if let Some(f) = &link.last_upload {
                            repeats.push((i, true, f.clone()));
                        }
                        if let Some(f) = &link.last_changes {
                            repeats.push((i, false, f.clone()));
                        }
                    }
                }
                if let Some((i, up, f)) = repeats.choose(&mut self.rng).cloned() {
                    self.stats.duplicates += 1;
                    self.deliver(i, up, Some(f))?;
                }
            }
        }
        Ok(())
    }

    /// Everything in the relay's memory is lost; the store keeps what it committed.
    fn crash_relay(&mut self) {
        if !matches!(self.relay, RelayState::Up(_)) {
            return;
        }
        let RelayState::Up(relay) = std::mem::replace(&mut self.relay, RelayState::Gone) else {
            unreachable!()
        };
        for d in &mut self.devices {
            if let Some(link) = d.link.take() {
                trace_lost(self.step, &d.name, &link);
            }
        }
        let until = self.step + self.rng.gen_range(1..40);
        self.relay = RelayState::Down(Box::new(relay.into_store()), until);
        self.stats.relay_crashes += 1;
    }

    // -------------------------------------------------------------------- local work

    /// One thing the device's user does, through the typed API. Refusals by the
    /// model's rules (wrong role, invalid transition) are normal outcomes.
    fn local_op(&mut self, i: usize) -> Outcome {
        let Self {
            rng,
            devices,
            created,
            ..
        } = self;
        let d = &mut devices[i];
        let replica = d.replica.as_ref().expect("a live device");
        // Candidates in the order the documents were created (doc ids are random, so
        // sorting by id would make the choice differ between runs of a seed).
        let held: BTreeSet<DocId> = replica
            .doc_ids()
            .map_err(|e| format!("{}: {e}", d.name))?
            .into_iter()
            .collect();
        let ids: Vec<DocId> = created
            .iter()
            .filter(|id| held.contains(id))
            .cloned()
            .collect();
        let orders: Vec<&DocId> = ids
            .iter()
            .filter(|id| id.kind() == DocKind::Order)
            .collect();
        let deliveries: Vec<&DocId> = ids
            .iter()
            .filter(|id| id.kind() == DocKind::Delivery)
            .collect();
        let role = d.identity.role;
        // What this role mostly does (the others are tried, and refused, too).
        let weights: [u32; 6] = match role {
            // create, assign, order event, delivery event, payment, note
            // (assigning an order that has an open delivery reassigns it)
            Role::Store => [3, 3, 4, 1, 2, 1],
            Role::Courier => [0, 0, 1, 6, 3, 1],
            Role::Dispatcher => [1, 3, 3, 3, 1, 1],
        };
        let total: u32 = weights.iter().sum();
        let mut pick = rng.gen_range(0..total);
        let mut what = 0;
        while pick >= weights[what] {
            pick -= weights[what];
            what += 1;
        }
        let mut payment = None;
        let mut reassigned = false;
        let result: Result<(), ReplicaError> = match what {
            0 => {
                let store = match &d.identity.store_id {
                    Some(s) => s.clone(),
                    None => ["S1", "S2"].choose(rng).unwrap().to_string(),
                };
                d.orders_made += 1;
                let n = d.orders_made + 1000 * i;
                replica
                    .create_order(&order(&store, n))
                    .map(|id| created.push(id))
            }
            1 => match orders.choose(rng) {
                Some(id) => {
                    // On an order with an open delivery this reassigns it: the
                    // delivery and its order move between couriers' views.
                    let courier = COURIERS.choose(rng).unwrap();
                    let before: BTreeMap<String, Option<String>> = replica
                        .order(id)
                        .map(|o| o.deliveries)
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|dl| {
                            let v = replica.delivery(&DocId::parse(&dl).ok()?).ok()?;
                            Some((dl, v.courier))
                        })
                        .collect();
                    replica
                        .assign_courier(id, courier, &NewDelivery::default())
                        .map(|dlv| {
                            if let Some(old) = before.get(dlv.as_str()) {
                                reassigned = old.as_deref() != Some(*courier);
                            }
                            if !created.contains(&dlv) {
                                created.push(dlv);
                            }
                        })
                }
                None => Ok(()),
            },
            2 => match orders.choose(rng) {
                Some(id) => try_events(rng, replica, id, &ORDER_KINDS),
                None => Ok(()),
            },
            3 => {
                // A courier works on its own deliveries.
                let mine: Vec<&DocId> = match &d.identity.courier_id {
                    Some(me) => deliveries
                        .iter()
                        .copied()
                        .filter(|id| {
                            replica
                                .delivery(id)
                                .is_ok_and(|v| v.courier.as_deref() == Some(me.as_str()))
                        })
                        .collect(),
                    None => deliveries.clone(),
                };
                match mine.choose(rng) {
                    Some(id) => try_events(rng, replica, id, &DELIVERY_KINDS),
                    None => Ok(()),
                }
            }
            4 => {
                // At the door (a delivery of the order) or at the till; sometimes a refund.
                let target = if role == Role::Courier {
                    deliveries
                        .choose(rng)
                        .and_then(|dl| replica.delivery(dl).ok())
                        .map(|v| (v.order_id.clone(), Some(v.id.clone())))
                } else {
                    orders.choose(rng).map(|o| (o.to_string(), None))
                };
                match target {
                    Some((order_id, door)) => {
                        let method = [PaymentMethod::Cash, PaymentMethod::Card]
                            .choose(rng)
                            .copied()
                            .unwrap();
                        let mut entry =
                            NewLedgerEntry::payment(method, rng.gen_range(1..5_000_000), "IRR");
                        entry.delivery_id = door;
                        if role != Role::Courier && rng.gen_bool(0.2) {
                            entry.kind = EntryKind::Refund;
                        }
                        let order_id = DocId::parse(&order_id).unwrap();
                        replica.record_payment(&order_id, &entry).map(|pay| {
                            payment = Some((order_id.to_string(), pay));
                        })
                    }
                    None => Ok(()),
                }
            }
            _ => match ids.choose(rng) {
                Some(id) => replica.add_note(id, &format!("note from {}", d.name)),
                None => Ok(()),
            },
        };
        match result {
            Ok(()) => {}
            Err(
                ReplicaError::Model(_)
                | ReplicaError::NotFound { .. }
                | ReplicaError::Incomplete { .. },
            ) => self.stats.refusals += 1,
            Err(e) => return Err(format!("{}: a local write failed: {e}", d.name)),
        }
        self.stats.reassignments += usize::from(reassigned);
        // The new local changes are the outbox entries after the last one seen.
        let new = replica
            .outbox_after(d.outbox_seen, 1_000_000)
            .map_err(|e| format!("{}: outbox: {e}", d.name))?;
        if trace() {
            eprintln!(
                "step {} {} {}: {} ({})",
                self.step,
                d.name,
                [
                    "create",
                    "assign",
                    "order event",
                    "delivery event",
                    "payment",
                    "note"
                ][what],
                match &result {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => format!("refused locally: {e}"),
                },
                new.iter()
                    .map(|e| short(&e.doc_id))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let mut hashes = Vec::new();
        for entry in new {
            d.outbox_seen = d.outbox_seen.max(entry.seq);
            hashes.push(hex(&entry.hash));
            self.made
                .insert(hex(&entry.hash), (d.name.clone(), entry.doc_id.clone()));
            self.stats.local_changes += 1;
        }
        if let Some(p) = payment {
            self.stats.payments += 1;
            self.payments.insert(p, (d.name.clone(), hashes));
        }
        if let Some(link) = d.link.as_mut() {
            link.session
                .local_changes(replica)
                .map_err(|e| format!("{}: local_changes: {e}", d.name))?;
        }
        Ok(())
    }

    // -------------------------------------------------------------------- healing

    /// No more faults: restart everything, reconnect everyone, deliver until quiet;
    /// then once more on fresh connections.
    fn heal(&mut self) -> Outcome {
        self.faults = false;
        self.restarts()?;
        for round in 1..=2 {
            for i in 0..self.devices.len() {
                if round == 2 {
                    self.drop_link(i);
                }
                if self.can_connect(i) {
                    self.connect(i)?;
                }
            }
            self.pump()
                .map_err(|e| format!("healing round {round}: {e}"))?;
            // Time passes on a quiet network: the relay's tick revives any stalled
            // exchange (its liveness backstop), as it does every 2 s in production.
            for _ in 0..3 {
                let busy = self
                    .devices
                    .iter()
                    .any(|d| d.link.as_ref().is_some_and(|l| !l.session.is_idle()));
                if !busy {
                    break;
                }
                let now = self.clock.fetch_add(5_000, Ordering::SeqCst) + 5_000;
                if let Some(relay) = self.relay() {
                    relay.tick(now);
                }
                self.pump()
                    .map_err(|e| format!("healing round {round}: {e}"))?;
            }
            for d in &self.devices {
                let link = d.link.as_ref().ok_or_else(|| {
                    format!(
                        "healing round {round}: {} is not connected (replica up: {}, relay up: {})",
                        d.name,
                        d.replica.is_some(),
                        matches!(self.relay, RelayState::Up(_))
                    )
                })?;
                if !link.session.is_idle() {
                    return Err(format!(
                        "healing round {round}: {}'s session is stuck (not idle once the \
                         network is quiet): {:?}, {} upload(s) in flight, welcome (head, \
                         full_sync) {:?}, relay head now {}, documents not in sync {:?}",
                        d.name,
                        link.session.progress(),
                        link.session.uploads_in_flight(),
                        link.welcome,
                        match &self.relay {
                            RelayState::Up(r) => r.store().head().unwrap(),
                            _ => 0,
                        },
                        match &self.relay {
                            RelayState::Up(r) => r.full_sync_pending(link.conn),
                            _ => None,
                        }
                    ));
                }
            }
        }
        Ok(())
    }

    /// Deliver everything, connection by connection, in order, until nothing moves.
    fn pump(&mut self) -> Outcome {
        let mut delivered = 0;
        loop {
            self.flush()?;
            let mut moved = false;
            for i in 0..self.devices.len() {
                for up in [true, false] {
                    while self.devices[i]
                        .link
                        .as_ref()
                        .is_some_and(|l| !if up { &l.up } else { &l.down }.is_empty())
                    {
                        self.deliver(i, up, None)?;
                        self.flush()?;
                        delivered += 1;
                        moved = true;
                        if delivered > QUIET_LIMIT {
                            return Err(format!("still busy after {QUIET_LIMIT} messages"));
                        }
                    }
                }
            }
            if !moved {
                return Ok(());
            }
        }
    }

    // -------------------------------------------------------------------- invariants

    fn check(&mut self) -> Outcome {
        let RelayState::Up(relay) = &self.relay else {
            return Err("the relay is down".into());
        };
        let store = relay.store();
        let head = store.head().unwrap();
        // The relay's documents, rebuilt from what it stored.
        let mut relay_docs: BTreeMap<String, (Vec<String>, BTreeSet<String>, Document)> =
            BTreeMap::new();
        let mut logged = 0;
        for id in store.doc_ids().unwrap() {
            let bytes = store.doc_changes(&id).unwrap();
            logged += bytes.len();
            let changes: Vec<Change> = bytes
                .iter()
                .map(|b| Change::try_from(b.as_slice()).unwrap())
                .collect();
            let mut doc = Automerge::new();
            doc.apply_changes(changes).unwrap();
            if !doc.get_missing_deps(&[]).is_empty() {
                // Typically: changes acknowledged as waiting whose dependency the relay
                // refused.
                let refused: Vec<String> = store
                    .quarantined()
                    .unwrap()
                    .iter()
                    .filter(|q| q.change.doc_id == id)
                    .map(|q| format!("{} by {}: {}", q.code, q.change.device_id, q.reason))
                    .collect();
                return Err(format!(
                    "the relay's {id} still misses dependencies (changes of it waiting for \
                     good; refused changes of it: {refused:?})"
                ));
            }
            let typed = document::read(&DocId::parse(&id).unwrap(), &doc)
                .map_err(|e| format!("the relay's {id} does not read: {e}"))?;
            relay_docs.insert(id, (heads(&doc), hashes(&doc), typed));
        }
        // Every stored change is logged exactly once, none left waiting.
        if logged as u64 != head {
            return Err(format!(
                "the relay stores {logged} change(s) for its documents but its log head is {head} \
                 (changes doubled in the log, or left waiting)"
            ));
        }
        let all: BTreeSet<&String> = relay_docs.values().flat_map(|(_, h, _)| h).collect();
        if all.len() != logged {
            return Err(format!(
                "{logged} stored changes but only {} distinct",
                all.len()
            ));
        }
        // The audience the relay recorded for each document is the one its content
        // gives (an order's couriers are its deliveries' current couriers).
        let courier_of = |dl: &str| match relay_docs.get(dl) {
            Some((_, _, Document::Delivery(d))) => d.courier(),
            _ => None,
        };
        for (id, (_, _, typed)) in &relay_docs {
            let want = audience::audience(typed, &courier_of);
            let recorded = store.audience_of(id).unwrap();
            if recorded != want {
                return Err(format!(
                    "the relay records {id}'s audience as {recorded:?}, its content gives {want:?}"
                ));
            }
        }
        // The quarantine: honest devices get nothing refused, except a change made
        // before the device heard that the document was reassigned away.
        let by_device: BTreeMap<&str, &Dev> =
            self.devices.iter().map(|d| (d.name.as_str(), d)).collect();
        let mut raced: BTreeMap<String, String> = BTreeMap::new();
        for q in store.quarantined().unwrap() {
            let doc_id = &q.change.doc_id;
            let who = q.change.device_id.as_str();
            let principal = by_device.get(who).map_or("", |d| d.principal.as_str());
            if !grant_race(store, principal, doc_id) {
                return Err(format!(
                    "BUG: the relay refused a legitimate change of {doc_id} by {who} \
                     ({principal}), made through the typed API: {} {}",
                    q.code, q.reason
                ));
            }
            if trace() {
                eprintln!(
                    "refused after losing the grant: {} by {who} ({principal}): {}; view \
                     changes: {:?}",
                    short(doc_id),
                    q.reason,
                    store
                        .view_changes(principal, 0)
                        .unwrap()
                        .iter()
                        .map(|c| format!(
                            "{}{}@{}",
                            if c.joined { "+" } else { "-" },
                            short(&c.doc_id),
                            c.seq
                        ))
                        .collect::<Vec<_>>()
                );
            }
            raced.insert(hex(&q.change.hash), format!("{}: {}", q.code, q.reason));
        }
        // A change refused while the document was away may be accepted once it is back
        // (re-sent after a lost ack, or offered in a full sync): it is then logged, and
        // its quarantine entry is stale.
        let quarantined = raced.clone();
        raced.retain(|hash, _| !all.contains(hash));
        self.stats.grant_races += raced.len();
        self.stats.refused_then_logged += quarantined.len() - raced.len();
        // Every change any device made reached the relay (or was refused as above,
        // and is in the quarantine).
        for (hash, (who, doc_id)) in &self.made {
            if !all.contains(hash) && !raced.contains_key(hash) {
                return Err(format!(
                    "change {hash} to {doc_id} made on {who} is not on the relay (nor in its \
                     quarantine)"
                ));
            }
        }
        // Payments refused with their change: recorded nowhere but the quarantine
        // and the collecting device's refused list.
        let refused_payments: BTreeSet<&(String, String)> = self
            .payments
            .iter()
            .filter(|(_, (_, made))| made.iter().any(|h| raced.contains_key(h)))
            .map(|(p, _)| p)
            .collect();
        self.stats.refused_payments += refused_payments.len();
        for (order_id, pay) in &refused_payments {
            if let Some((_, _, Document::Order(o))) = relay_docs.get(order_id.as_str())
                && o.payments.iter().any(|p| &p.id == pay)
            {
                return Err(format!(
                    "payment {pay} of {order_id} is on the relay, but a change recording it \
                     was refused"
                ));
            }
        }
        // The dispatcher's replica is the reference for derived views: it holds every
        // document.
        let reference = self
            .devices
            .iter()
            .find(|d| d.principal == DISPATCH)
            .expect("a dispatcher");
        let reference_name = reference.name.clone();
        let reference = reference.replica.as_ref().expect("up");
        for d in &self.devices {
            let r = d.replica.as_ref().expect("up after healing");
            let name = &d.name;
            let principal = &d.principal;
            // (1) Exactly the documents in its view, with the relay's heads.
            let want: BTreeSet<String> = if principal == DISPATCH {
                relay_docs.keys().cloned().collect()
            } else {
                store.view(principal).unwrap().into_iter().collect()
            };
            let held: BTreeSet<String> = r
                .doc_ids()
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect();
            if held != want {
                return Err(format!(
                    "{name} ({principal}) holds {} document(s), its view on the relay has {}: \
                     held outside its view: {:?}, in its view but missing: {:?}",
                    held.len(),
                    want.len(),
                    held.difference(&want).collect::<Vec<_>>(),
                    want.difference(&held).collect::<Vec<_>>(),
                ));
            }
            for id in &held {
                let (relay_heads, relay_hashes, _) = relay_docs
                    .get(id)
                    .ok_or_else(|| format!("{name} holds {id}, which the relay does not"))?;
                let doc_id = DocId::parse(id).unwrap();
                let doc = Automerge::load(&r.export(&doc_id).unwrap())
                    .map_err(|e| format!("{name}'s {id} does not load: {e}"))?;
                let mut mine = r.heads(&doc_id).unwrap();
                mine.sort();
                if &mine != relay_heads {
                    return Err(format!(
                        "{id} diverged: heads on {name} {mine:?}, on the relay {relay_heads:?}"
                    ));
                }
                let mine = hashes(&doc);
                if &mine != relay_hashes {
                    return Err(format!(
                        "{id}: {name} and the relay hold different changes (only on {name}: \
                         {:?}, only on the relay: {:?})",
                        mine.difference(relay_hashes).collect::<Vec<_>>(),
                        relay_hashes.difference(&mine).collect::<Vec<_>>()
                    ));
                }
                let mut v = view(r, &doc_id).map_err(|e| format!("on {name}: {e}"))?;
                let mut want =
                    view(reference, &doc_id).map_err(|e| format!("on {reference_name}: {e}"))?;
                // Refusals are the device's own business (checked below).
                v.as_object_mut().unwrap().remove("refused");
                want.as_object_mut().unwrap().remove("refused");
                for key in [
                    "status",
                    "conflicts",
                    "balance",
                    "timeline",
                    "payments",
                    "courier",
                ] {
                    if v.get(key) != want.get(key) {
                        return Err(format!(
                            "{id} diverged in `{key}`: {name} says {:?}, {reference_name} says {:?}",
                            v.get(key),
                            want.get(key)
                        ));
                    }
                }
                if v != want {
                    return Err(format!("{id} diverged on {name}: {v} vs {want}"));
                }
            }
            // (2) Nothing lost: every change made to a document in its view is here.
            for (hash, (who, doc_id)) in &self.made {
                if want.contains(doc_id)
                    && !raced.contains_key(hash)
                    && !relay_docs[doc_id].1.contains(hash)
                {
                    return Err(format!(
                        "change {hash} to {doc_id} made on {who} is missing on {name}"
                    ));
                }
            }
            // Nothing left to upload; nothing refused but what the relay refused after
            // a reassignment the device had not heard of.
            let pending = r.pending_uploads().unwrap();
            if pending != 0 {
                return Err(format!(
                    "{name} still has {pending} change(s) in its outbox"
                ));
            }
            for refused in r.refused_changes().unwrap() {
                if !quarantined.contains_key(&hex(&refused.hash)) {
                    return Err(format!(
                        "{name} lists a refused change of {} that is not in the relay's \
                         quarantine as a reassignment race: {} {}",
                        refused.doc_id, refused.code, refused.reason
                    ));
                }
            }
            for (hash, (who, doc_id)) in &self.made {
                if who == name
                    && raced.contains_key(hash)
                    && !r
                        .refused_changes()
                        .unwrap()
                        .iter()
                        .any(|c| &hex(&c.hash) == hash)
                {
                    return Err(format!(
                        "the relay refused {name}'s change {hash} to {doc_id} ({}), but {name} \
                         was never told",
                        raced[hash]
                    ));
                }
            }
            // (3) Every payment exactly once, wherever its order is held.
            for ((order_id, pay), (who, _)) in &self.payments {
                if !held.contains(order_id) {
                    continue;
                }
                let view = r.order(&DocId::parse(order_id).unwrap()).unwrap();
                let n = view.payments.iter().filter(|p| &p.id == pay).count();
                let expected =
                    usize::from(!refused_payments.contains(&(order_id.clone(), pay.clone())));
                if n != expected {
                    return Err(format!(
                        "payment {pay} of {order_id} (recorded on {who}) appears {n} time(s) \
                         on {name}"
                    ));
                }
            }
            // (4) Caught up with the relay's log.
            let cursor = r.sync_cursor().unwrap();
            let at = cursor.as_ref().map(|c| (c.relay_id.as_str(), c.seq));
            if at != Some((RELAY_ID, head)) {
                return Err(format!(
                    "{name}'s cursor is {at:?}, the relay's head is {head}"
                ));
            }
            let report = r.verify().unwrap();
            if !report.mismatches.is_empty() {
                return Err(format!("{name}'s index disagrees: {:?}", report.mismatches));
            }
        }
        Ok(())
    }
}

/// Record a valid next event: try the kinds in random order until one is allowed.
fn try_events(
    rng: &mut StdRng,
    replica: &Replica,
    id: &DocId,
    kinds: &[&str],
) -> Result<(), ReplicaError> {
    let mut kinds = kinds.to_vec();
    kinds.shuffle(rng);
    let mut last = Ok(());
    for kind in kinds {
        let details = EventDetails {
            resolution: (kind == "conflict_resolved").then(|| {
                (*[&"delivered", &"cancelled", &"completed"]
                    .choose(rng)
                    .unwrap())
                .to_string()
            }),
            ..EventDetails::default()
        };
        match replica.record_event(id, kind, &details) {
            Ok(_) => return Ok(()),
            Err(e @ ReplicaError::Model(_)) => last = Err(e),
            Err(e) => return Err(e),
        }
    }
    last
}

/// `WAYBILL_SIM_TRACE=1`: print every delivery and fault.
fn trace() -> bool {
    std::env::var_os("WAYBILL_SIM_TRACE").is_some()
}

/// Trace what a dying connection loses (frames in flight either way).
fn trace_lost(step: usize, name: &str, link: &Link) {
    if !trace() {
        return;
    }
    for (up, queue) in [(true, &link.up), (false, &link.down)] {
        for sent in queue {
            let what = protocol::decode(&sent.bytes[4..])
                .map_or_else(|e| format!("undecodable: {e}"), |m| describe(&m));
            eprintln!(
                "step {step} LOST {} {name} conn {}: {what}",
                if up { "->relay" } else { "->device" },
                link.conn
            );
        }
    }
}

fn describe(message: &Message) -> String {
    match message {
        Message::Upload(u) => format!("upload batch {} ({} changes)", u.batch, u.changes.len()),
        Message::UploadAck(a) => format!(
            "ack batch {} ({} accepted, {} refused{})",
            a.batch,
            a.accepted.len(),
            a.refused.len(),
            a.refused
                .iter()
                .map(|r| format!("; {} {:?}: {}", short(&r.doc_id), r.code, r.reason))
                .collect::<String>()
        ),
        Message::Changes(c) => format!(
            "changes seqs {:?} cursor {} caught_up {}",
            c.entries
                .iter()
                .map(|e| format!("{}:{}", e.seq, short(&e.doc_id)))
                .collect::<Vec<_>>(),
            c.cursor,
            c.caught_up
        ),
        Message::Snapshots(s) => format!(
            "snapshots {:?} through {} done {}",
            s.docs.iter().map(|d| short(&d.doc_id)).collect::<Vec<_>>(),
            s.through,
            s.done
        ),
        Message::Unshare(u) => format!(
            "unshare {:?}",
            u.doc_ids.iter().map(|d| short(d)).collect::<Vec<_>>()
        ),
        Message::Welcome(w) => format!(
            "welcome head {} oldest {} full_sync {}",
            w.head, w.oldest_resumable, w.full_sync
        ),
        Message::DocSync(d) => match automerge::sync::Message::decode(&d.message) {
            Ok(m) => format!(
                "doc_sync {} heads {:?} need {} changes {}",
                d.doc_id,
                m.heads
                    .iter()
                    .map(|h| h.to_string()[..6].to_owned())
                    .collect::<Vec<_>>(),
                m.need.len(),
                m.changes.len()
            ),
            Err(_) => format!("doc_sync {} (undecodable)", d.doc_id),
        },
        Message::DocSyncComplete(d) => format!("doc_sync_complete cursor {}", d.cursor),
        other => other.name().to_string(),
    }
}

/// The documents a relay → device message carries content of (or heads, for a
/// `DocSync`).
fn carried(message: &Message) -> Vec<String> {
    let mut docs: Vec<String> = match message {
        Message::Changes(c) => c.entries.iter().map(|e| e.doc_id.clone()).collect(),
        Message::Snapshots(s) => s.docs.iter().map(|d| d.doc_id.clone()).collect(),
        // A sync message with no heads and no changes says nothing about the document.
        Message::DocSync(d) => automerge::sync::Message::decode(&d.message)
            .is_ok_and(|m| !m.heads.is_empty() || !m.changes.is_empty())
            .then(|| d.doc_id.clone())
            .into_iter()
            .collect(),
        _ => Vec::new(),
    };
    docs.sort();
    docs.dedup();
    docs
}

/// The documents an `Unshare` tells the device to remove.
fn unshared(message: &Message) -> Vec<String> {
    match message {
        Message::Unshare(u) => u.doc_ids.clone(),
        _ => Vec::new(),
    }
}

/// The no-leak property, for one delivered message: every document it carries was in
/// the device's view (its audience named the device's principal, or the device is a
/// dispatcher) when the relay sent it; and every document it is told to remove was
/// no longer.
fn check_grants(name: &str, principal: &str, message: &Message, grants: &Grants) -> Outcome {
    for doc_id in carried(message) {
        match grants.get(&doc_id) {
            None => return Err(format!("{name}: no grant recorded for {doc_id}")),
            Some(Some(audience)) if !audience::sees(principal, audience) => {
                return Err(format!(
                    "LEAK: the relay sent {doc_id} to {name} ({principal}) in {}, when its \
                     audience was {audience:?}",
                    describe(message)
                ));
            }
            Some(Some(_)) => {}
            // The relay held nothing of it, yet sent heads or changes.
            Some(None) => {
                return Err(format!(
                    "{name}: the relay sent {} about {doc_id}, which it did not hold",
                    describe(message)
                ));
            }
        }
    }
    for doc_id in unshared(message) {
        if let Some(Some(audience)) = grants.get(&doc_id)
            && audience::sees(principal, audience)
        {
            return Err(format!(
                "the relay told {name} ({principal}) to remove {doc_id}, still in its view \
                 (audience {audience:?})"
            ));
        }
    }
    Ok(())
}

/// A document as the relay holds it, typed (None when absent or incomplete).
fn relay_typed(store: &MemoryLogStore, doc_id: &str) -> Option<Document> {
    let id = DocId::parse(doc_id).ok()?;
    let mut doc = Automerge::new();
    for bytes in store.doc_changes(doc_id).ok()? {
        doc.apply_changes([Change::try_from(bytes.as_slice()).ok()?])
            .ok()?;
    }
    document::read(&id, &doc).ok()
}

/// Whether a refusal of a change to `doc_id` by `principal` is the race that honest
/// devices cannot avoid: the principal lost the document (or, for an order, one of
/// its deliveries) to a reassignment after it last heard from the relay, made the
/// change while it still held it, and the relay, rightly, no longer lets it write.
fn grant_race(store: &MemoryLogStore, principal: &str, doc_id: &str) -> bool {
    if principal.is_empty() || principal == DISPATCH {
        return false;
    }
    let mut related = vec![doc_id.to_owned()];
    if let Some(Document::Order(order)) = relay_typed(store, doc_id) {
        related.extend(order.deliveries);
    }
    store
        .view_changes(principal, 0)
        .unwrap()
        .iter()
        .any(|c| !c.joined && related.contains(&c.doc_id))
}

/// A document id as the trace prints it: kind and the last characters.
fn short(doc_id: &str) -> String {
    format!(
        "{}…{}",
        &doc_id[..3],
        &doc_id[doc_id.len().saturating_sub(6)..]
    )
}

fn frame(message: &Message) -> Result<Vec<u8>, String> {
    protocol::encode(message, DEFAULT_MAX_FRAME).map_err(|e| format!("encode: {e}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn heads(doc: &Automerge) -> Vec<String> {
    let mut heads: Vec<String> = doc.get_heads().iter().map(ToString::to_string).collect();
    heads.sort();
    heads
}

fn hashes(doc: &Automerge) -> BTreeSet<String> {
    doc.get_changes(&[])
        .iter()
        .map(|c| c.hash().to_string())
        .collect()
}

/// A document's hydrated view with everything derived, as JSON.
fn view(r: &Replica, id: &DocId) -> Result<Value, String> {
    match id.kind() {
        DocKind::Order => r.order(id).map(|v| serde_json::to_value(v).unwrap()),
        DocKind::Delivery => r.delivery(id).map(|v| serde_json::to_value(v).unwrap()),
    }
    .map_err(|e| format!("{id} cannot be read: {e}"))
}

// ------------------------------------------------------------------------ entry points

/// Run one seed; a panic inside the state machines counts as a failure of the seed.
fn run_seed(seed: u64, cfg: &Config) -> Result<Stats, String> {
    let cfg = cfg.clone();
    std::panic::catch_unwind(move || Sim::new(seed, cfg).run()).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(ToString::to_string))
            .unwrap_or_default();
        Err(format!("panicked: {what}"))
    })
}

/// Seeds to run: `WAYBILL_SIM_SEED=n` alone, or 0..`WAYBILL_SIM_SEEDS`.
fn seed_range(default: u64) -> Vec<u64> {
    let var = |name| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    match var("WAYBILL_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..var("WAYBILL_SIM_SEEDS").unwrap_or(default)).collect(),
    }
}

fn run_seeds(seeds: &[u64], cfg: &Config, test: &str) -> Stats {
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut total = Stats::default();
    for &seed in seeds {
        match run_seed(seed, cfg) {
            Ok(s) => {
                total.devices += s.devices;
                total.local_changes += s.local_changes;
                total.refusals += s.refusals;
                total.payments += s.payments;
                total.delivered += s.delivered;
                total.drops += s.drops;
                total.partitions += s.partitions;
                total.device_crashes += s.device_crashes;
                total.relay_crashes += s.relay_crashes;
                total.crashes_before_ack += s.crashes_before_ack;
                total.compactions += s.compactions;
                total.duplicates += s.duplicates;
                total.reconnects += s.reconnects;
                total.full_syncs += s.full_syncs;
                total.log_head += s.log_head;
                total.documents += s.documents;
                total.reassignments += s.reassignments;
                total.grant_checks += s.grant_checks;
                total.unshares += s.unshares;
                total.grant_races += s.grant_races;
                total.refused_payments += s.refused_payments;
                total.refused_then_logged += s.refused_then_logged;
            }
            Err(e) => {
                eprintln!("seed {seed} FAILED: {e}");
                failures.push((seed, e));
            }
        }
    }
    eprintln!(
        "{} seed(s) in {:.1?}; totals: {total:?}",
        seeds.len(),
        started.elapsed()
    );
    if let Some((seed, first)) = failures.first() {
        let list: Vec<String> = failures.iter().map(|(s, _)| s.to_string()).collect();
        panic!(
            "simulation failed for seed(s) {}; first, seed {seed}: {first}\n\
             reproduce with WAYBILL_SIM_SEED={} cargo test -p waybill-tests --test simulation {test}",
            list.join(", "),
            // Variants offset their seeds (the crash variant by 1,000,000); the
            // variable takes the seed before the offset.
            seed % 1_000_000
        );
    }
    total
}

#[test]
fn seeds() {
    let total = run_seeds(&seed_range(DEFAULT_SEEDS), &Config::standard(), "seeds");
    assert!(total.local_changes > 0);
}

/// The relay crashes between committing an upload and the device receiving its ack,
/// often: the device re-sends on reconnect, and nothing acknowledged (or merely
/// sent) is lost or logged twice.
#[test]
fn relay_crashes_between_upload_and_ack() {
    let cfg = Config {
        crash_after_upload: 0.3,
        ..Config::standard()
    };
    let seeds: Vec<u64> = seed_range(DEFAULT_SEEDS / 4)
        .into_iter()
        .map(|s| s + 1_000_000)
        .collect();
    let total = run_seeds(&seeds, &cfg, "relay_crashes_between_upload_and_ack");
    if seeds.len() > 3 {
        assert!(
            total.crashes_before_ack > 0,
            "the fault never fired: {total:?}"
        );
    }
}

/// The invariants are not vacuous: a network that silently loses `Changes` messages
/// inside a connection (which QUIC never does) breaks them for most seeds.
#[test]
fn the_checks_catch_a_network_that_loses_messages() {
    let cfg = Config {
        skip: 0.2,
        ..Config::standard()
    };
    let failed = (2_000_000..2_000_008)
        .filter_map(|seed| run_seed(seed, &cfg).err())
        .inspect(|e| eprintln!("caught, as it should be: {e}"))
        .count();
    assert!(failed >= 4, "only {failed} of 8 lossy runs were caught");
}

/// The no-leak check is not vacuous: a relay that sometimes also hands a `Changes`
/// or `Snapshots` message to another device is caught leaking for most seeds.
#[test]
fn the_checks_catch_a_relay_that_leaks() {
    let cfg = Config {
        misroute: 0.5,
        ..Config::standard()
    };
    let leaks = (3_000_000..3_000_008)
        .filter_map(|seed| run_seed(seed, &cfg).err())
        .filter(|e| e.contains("LEAK"))
        .inspect(|e| eprintln!("caught, as it should be: {e}"))
        .count();
    assert!(
        leaks >= 4,
        "only {leaks} of 8 leaking runs were caught leaking"
    );
}

/// The same crash, step by step: an upload is committed, the relay dies before its
/// ack leaves, the device reconnects and re-sends; the change is logged once and the
/// device's outbox clears.
#[test]
fn an_upload_committed_just_before_a_relay_crash_is_not_lost_or_doubled() {
    let issuer = CredentialIssuer::generate();
    let dir = tempfile::tempdir().unwrap();
    let identity = DeviceIdentity::store("tablet-s1", "S1");
    let cred = credential(&issuer, &identity, YEAR_3000_MS);
    let replica =
        Replica::open(dir.path().join("t.db"), identity, ReplicaOptions::default()).unwrap();
    let id = replica.create_order(&order("S1", 1)).unwrap();
    let mut relay = Relay::new(
        MemoryLogStore::new(RELAY_ID),
        issuer.verifier(),
        RelayConfig::default(),
    );
    let wire = |m: Message| protocol::decode(&frame(&m).unwrap()[4..]).unwrap();

    // Hello → Welcome (+ the empty log page) → Upload, then the relay crashes.
    relay.connect(1);
    let mut session = ClientSession::new(cred.clone(), ClientConfig::default());
    session.start(&replica).unwrap();
    relay.handle(1, wire(session.poll_transmit().unwrap()), START_MS);
    while let Some(m) = relay.poll_transmit(1) {
        session.handle(&replica, wire(m)).unwrap();
    }
    let upload = session.poll_transmit().unwrap();
    assert!(matches!(upload, Message::Upload(_)), "{upload:?}");
    relay.handle(1, wire(upload), START_MS);
    let store = relay.into_store();
    assert_eq!(store.head().unwrap(), 1, "committed before the ack");
    assert_eq!(replica.pending_uploads().unwrap(), 1, "no ack came");

    // Restart, reconnect: the device re-sends, the relay acknowledges what it has.
    let mut relay = Relay::new(store, issuer.verifier(), RelayConfig::default());
    relay.connect(2);
    let mut session = ClientSession::new(cred, ClientConfig::default());
    session.start(&replica).unwrap();
    for _ in 0..10 {
        while let Some(m) = session.poll_transmit() {
            relay.handle(2, wire(m), START_MS);
        }
        while let Some(m) = relay.poll_transmit(2) {
            session.handle(&replica, wire(m)).unwrap();
        }
    }
    assert!(session.is_idle());
    assert_eq!(
        replica.pending_uploads().unwrap(),
        0,
        "acknowledged on retry"
    );
    assert_eq!(relay.store().head().unwrap(), 1, "logged once");
    assert_eq!(replica.sync_cursor().unwrap().unwrap().seq, 1);
    let rebuilt = relay.store().doc_changes(&id.to_string()).unwrap();
    assert_eq!(rebuilt.len(), 1);
}

/// The log is compacted while a device is still paging through it from an old
/// cursor. Found by this simulation: the relay used to read the next page from the
/// compaction point, and the device moved its cursor past changes it never received.
/// Now the relay closes with `CursorExpired`, and the reconnect runs a full sync.
#[test]
fn compaction_during_catch_up_never_skips_entries() {
    let issuer = CredentialIssuer::generate();
    let tablet = Replica::open_in_memory(
        DeviceIdentity::store("tablet-s1", "S1"),
        ReplicaOptions::default(),
    )
    .unwrap();
    let console_id = DeviceIdentity::dispatcher("console");
    let console_cred = credential(&issuer, &console_id, YEAR_3000_MS);
    let console = Replica::open_in_memory(console_id, ReplicaOptions::default()).unwrap();
    let config = RelayConfig {
        page_entries: 1,
        ..RelayConfig::default()
    };
    let mut relay = Relay::new(MemoryLogStore::new(RELAY_ID), issuer.verifier(), config);
    let wire = |m: Message| protocol::decode(&frame(&m).unwrap()[4..]).unwrap();
    // Three orders in the log (uploaded by the tablet, all at once).
    let tablet_cred = credential(&issuer, tablet.identity(), YEAR_3000_MS);
    for n in 0..3 {
        tablet.create_order(&order("S1", n)).unwrap();
    }
    relay.connect(1);
    let mut up = ClientSession::new(tablet_cred, ClientConfig::default());
    up.start(&tablet).unwrap();
    for _ in 0..10 {
        while let Some(m) = up.poll_transmit() {
            relay.handle(1, wire(m), START_MS);
        }
        while let Some(m) = relay.poll_transmit(1) {
            up.handle(&tablet, wire(m)).unwrap();
        }
    }
    assert_eq!(relay.store().head().unwrap(), 3);

    // The console starts from scratch and takes one page; then the log is compacted.
    relay.connect(2);
    // It speaks 1.0, so it pages the log from the start (a 1.1 device would get
    // snapshots through the head and never read the compacted stretch).
    let mut down = ClientSession::new(
        console_cred,
        ClientConfig {
            version: Version { major: 1, minor: 0 },
            ..ClientConfig::default()
        },
    );
    down.start(&console).unwrap();
    relay.handle(2, wire(down.poll_transmit().unwrap()), START_MS);
    let welcome = relay.poll_transmit(2).unwrap();
    down.handle(&console, wire(welcome)).unwrap();
    let page = relay.poll_transmit(2).unwrap();
    down.handle(&console, wire(page)).unwrap();
    relay.store_mut().prune_through(3);
    for _ in 0..10 {
        while let Some(m) = down.poll_transmit() {
            relay.handle(2, wire(m), START_MS);
        }
        while let Some(m) = relay.poll_transmit(2) {
            // A relay may answer with an error and close; that is fine, silence is not.
            let _ = down.handle(&console, wire(m));
        }
    }
    let cursor = console.sync_cursor().unwrap().map_or(0, |c| c.seq);
    let held = console.doc_ids().unwrap().len();
    assert!(
        cursor < 3 || held == 3,
        "the console's cursor is at {cursor} (the head) but it holds {held} of 3 orders: \
         the compacted entries were skipped silently"
    );
    assert!(relay.wants_close(2), "closed with CursorExpired");
    relay.disconnect(2);

    // Reconnecting brings everything in by per-document sync.
    relay.connect(3);
    let mut again = ClientSession::new(
        credential(&issuer, console.identity(), YEAR_3000_MS),
        ClientConfig::default(),
    );
    again.start(&console).unwrap();
    for _ in 0..10 {
        while let Some(m) = again.poll_transmit() {
            relay.handle(3, wire(m), START_MS);
        }
        while let Some(m) = relay.poll_transmit(3) {
            again.handle(&console, wire(m)).unwrap();
        }
    }
    assert!(again.is_idle());
    assert_eq!(console.doc_ids().unwrap().len(), 3);
    assert_eq!(console.sync_cursor().unwrap().unwrap().seq, 3);
}
