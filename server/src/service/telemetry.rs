//! What the relay's tasks report about themselves, for `/metrics` and the
//! dashboard's device list: counters (connections, bytes, changes accepted and
//! refused) and each device's presence (online, last sync, how far behind).
//!
//! The relay thread and the connection tasks update it through a handful of
//! one-line hooks; the HTTP layer reads snapshots. Everything is in memory: a
//! restarted relay starts with every device offline and unseen until it connects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use waybill_core::identity::DeviceIdentity;
use waybill_core::protocol::Message;
use waybill_core::sync::ConnId;

/// Monotonic counters since the relay started.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections that opened a stream.
    pub connections_total: AtomicU64,
    /// Bytes read from devices.
    pub bytes_received: AtomicU64,
    /// Bytes written to devices.
    pub bytes_sent: AtomicU64,
    /// Changes devices uploaded.
    pub changes_uploaded: AtomicU64,
    /// Uploaded changes the relay acknowledged as durable.
    pub changes_accepted: AtomicU64,
    /// Uploaded changes the relay refused (quarantined).
    pub changes_refused: AtomicU64,
    /// Log entries sent to devices (catch-up pages and live pushes).
    pub changes_sent: AtomicU64,
    /// Whole documents sent to never-synced devices as snapshots.
    pub snapshots_sent: AtomicU64,
}

/// One device as the relay last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSnapshot {
    /// The device id from its credential.
    pub device_id: String,
    /// `courier`, `store` or `dispatcher`.
    pub role: String,
    /// Its store, if any.
    pub store_id: Option<String>,
    /// Its courier id, if any.
    pub courier_id: Option<String>,
    /// Whether a session with it is open now.
    pub online: bool,
    /// When it was last heard from (Unix ms).
    pub last_seen_ms: i64,
    /// When it last caught up with the relay's log or had an upload
    /// acknowledged (Unix ms).
    pub last_sync_ms: Option<i64>,
    /// The relay log position it has been sent up to (its cursor).
    pub cursor: Option<u64>,
    /// Relay log entries it has not been sent yet (`head - cursor`; a device
    /// only receives the entries it may see, so this is an upper bound).
    pub behind: Option<u64>,
    /// Changes it uploaded that the relay has not answered yet.
    pub uploads_in_flight: u64,
    /// Changes it uploaded since the relay started.
    pub uploaded: u64,
    /// Of those, refused.
    pub refused: u64,
}

#[derive(Debug, Default)]
struct ConnState {
    device: Option<String>,
    hello_cursor: Option<u64>,
}

#[derive(Debug, Clone)]
struct DeviceState {
    identity: DeviceIdentity,
    sessions: u32,
    last_seen_ms: i64,
    last_sync_ms: Option<i64>,
    cursor: Option<u64>,
    in_flight: u64,
    uploaded: u64,
    refused: u64,
}

#[derive(Debug, Default)]
struct State {
    conns: HashMap<ConnId, ConnState>,
    devices: HashMap<String, DeviceState>,
    head: u64,
}

/// Counters and presence shared by the relay's tasks and the HTTP layer.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// Monotonic counters.
    pub counters: Counters,
    state: Mutex<State>,
}

impl Telemetry {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A connection opened its stream.
    pub(crate) fn connected(&self, conn: ConnId) {
        self.counters
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        self.state().conns.insert(conn, ConnState::default());
    }

    /// The relay accepted the device's credential on `conn`.
    pub(crate) fn identified(&self, conn: ConnId, identity: &DeviceIdentity) {
        let now = now_ms();
        let mut state = self.state();
        let State { conns, devices, .. } = &mut *state;
        let Some(c) = conns.get_mut(&conn) else {
            return;
        };
        c.device = Some(identity.device_id.clone());
        let device = devices
            .entry(identity.device_id.clone())
            .or_insert_with(|| DeviceState {
                identity: identity.clone(),
                sessions: 0,
                last_seen_ms: now,
                last_sync_ms: None,
                cursor: None,
                in_flight: 0,
                uploaded: 0,
                refused: 0,
            });
        device.identity = identity.clone();
        device.sessions += 1;
        device.last_seen_ms = now;
        if c.hello_cursor.is_some() {
            device.cursor = c.hello_cursor;
        }
    }

    /// A message arrived from `conn` (before the relay handles it).
    pub(crate) fn inbound(&self, conn: ConnId, message: &Message) {
        let now = now_ms();
        let mut state = self.state();
        let State { conns, devices, .. } = &mut *state;
        let Some(c) = conns.get_mut(&conn) else {
            return;
        };
        match message {
            Message::Hello(hello) => c.hello_cursor = hello.cursor.as_ref().map(|c| c.seq),
            Message::Upload(upload) => {
                let n = upload.changes.len() as u64;
                self.counters
                    .changes_uploaded
                    .fetch_add(n, Ordering::Relaxed);
                if let Some(d) = c.device.as_ref().and_then(|d| devices.get_mut(d)) {
                    d.in_flight += n;
                    d.uploaded += n;
                }
            }
            _ => {}
        }
        if let Some(d) = c.device.as_ref().and_then(|d| devices.get_mut(d)) {
            d.last_seen_ms = now;
        }
    }

    /// The relay hands `message` to `conn`'s writer.
    pub(crate) fn outbound(&self, conn: ConnId, message: &Message) {
        let now = now_ms();
        let mut state = self.state();
        let State { conns, devices, .. } = &mut *state;
        let device = conns
            .get(&conn)
            .and_then(|c| c.device.as_ref())
            .and_then(|d| devices.get_mut(d));
        match message {
            Message::UploadAck(ack) => {
                let (accepted, refused) = (ack.accepted.len() as u64, ack.refused.len() as u64);
                self.counters
                    .changes_accepted
                    .fetch_add(accepted, Ordering::Relaxed);
                self.counters
                    .changes_refused
                    .fetch_add(refused, Ordering::Relaxed);
                if let Some(d) = device {
                    d.in_flight = d.in_flight.saturating_sub(accepted + refused);
                    d.refused += refused;
                    d.last_sync_ms = Some(now);
                }
            }
            Message::Changes(changes) => {
                self.counters
                    .changes_sent
                    .fetch_add(changes.entries.len() as u64, Ordering::Relaxed);
                if let Some(d) = device {
                    d.cursor = Some(changes.cursor);
                    if changes.caught_up {
                        d.last_sync_ms = Some(now);
                    }
                }
            }
            Message::Snapshots(snapshots) => {
                self.counters
                    .snapshots_sent
                    .fetch_add(snapshots.docs.len() as u64, Ordering::Relaxed);
                if let Some(d) = device
                    && snapshots.done
                {
                    d.cursor = Some(snapshots.through);
                }
            }
            Message::DocSyncComplete(_) => {
                if let Some(d) = device {
                    d.last_sync_ms = Some(now);
                }
            }
            _ => {}
        }
    }

    /// The connection is gone.
    pub(crate) fn disconnected(&self, conn: ConnId) {
        let now = now_ms();
        let mut state = self.state();
        let Some(c) = state.conns.remove(&conn) else {
            return;
        };
        if let Some(d) = c.device.and_then(|d| state.devices.get_mut(&d)) {
            d.sessions = d.sessions.saturating_sub(1);
            d.last_seen_ms = now;
            if d.sessions == 0 {
                d.in_flight = 0;
            }
        }
    }

    /// The relay log's newest sequence number.
    pub(crate) fn set_head(&self, head: u64) {
        self.state().head = head;
    }

    /// Bytes read from a device.
    pub(crate) fn received(&self, bytes: usize) {
        self.counters
            .bytes_received
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Bytes written to a device.
    pub(crate) fn sent(&self, bytes: usize) {
        self.counters
            .bytes_sent
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Open connections (with or without an accepted credential).
    pub fn open_connections(&self) -> usize {
        self.state().conns.len()
    }

    /// The relay log head as last seen by the relay thread.
    pub fn head(&self) -> u64 {
        self.state().head
    }

    /// Every device seen since the relay started, online ones first, then by
    /// device id.
    pub fn devices(&self) -> Vec<DeviceSnapshot> {
        let state = self.state();
        let mut list: Vec<DeviceSnapshot> = state
            .devices
            .values()
            .map(|d| DeviceSnapshot {
                device_id: d.identity.device_id.clone(),
                role: d.identity.role.as_str().to_owned(),
                store_id: d.identity.store_id.clone(),
                courier_id: d.identity.courier_id.clone(),
                online: d.sessions > 0,
                last_seen_ms: d.last_seen_ms,
                last_sync_ms: d.last_sync_ms,
                cursor: d.cursor,
                behind: d.cursor.map(|c| state.head.saturating_sub(c)),
                uploads_in_flight: d.in_flight,
                uploaded: d.uploaded,
                refused: d.refused,
            })
            .collect();
        list.sort_by(|a, b| {
            b.online
                .cmp(&a.online)
                .then_with(|| a.device_id.cmp(&b.device_id))
        });
        list
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use waybill_core::identity::Role;
    use waybill_core::protocol::{Changes, Cursor, Hello, MAGIC, Upload, UploadAck, UploadChange};

    fn hello(seq: Option<u64>) -> Message {
        Message::Hello(Hello {
            magic: MAGIC,
            version: waybill_core::protocol::PROTOCOL_VERSION,
            credential: Vec::new(),
            cursor: seq.map(|seq| Cursor {
                relay_id: "r".into(),
                seq,
            }),
            client: "test".into(),
        })
    }

    #[test]
    fn a_device_session_is_tracked_from_hello_to_goodbye() {
        let t = Telemetry::default();
        let phone = DeviceIdentity {
            device_id: "phone-7".into(),
            role: Role::Courier,
            store_id: None,
            courier_id: Some("courier-7".into()),
        };
        t.connected(1);
        t.inbound(1, &hello(Some(3)));
        t.identified(1, &phone);
        t.set_head(10);
        let d = &t.devices()[0];
        assert!(d.online);
        assert_eq!((d.cursor, d.behind), (Some(3), Some(7)));

        let change = UploadChange {
            doc_id: "ord_1".into(),
            bytes: vec![1],
        };
        t.inbound(
            1,
            &Message::Upload(Upload {
                batch: 1,
                changes: vec![change.clone(), change],
            }),
        );
        assert_eq!(t.devices()[0].uploads_in_flight, 2);
        t.outbound(
            1,
            &Message::UploadAck(UploadAck {
                batch: 1,
                accepted: vec![vec![1]],
                refused: Vec::new(),
            }),
        );
        t.outbound(
            1,
            &Message::Changes(Changes {
                entries: Vec::new(),
                cursor: 10,
                caught_up: true,
                unshared: Vec::new(),
            }),
        );
        let d = &t.devices()[0];
        assert_eq!((d.uploads_in_flight, d.uploaded, d.behind), (1, 2, Some(0)));
        assert!(d.last_sync_ms.is_some());
        assert_eq!(t.counters.changes_accepted.load(Ordering::Relaxed), 1);

        t.disconnected(1);
        let d = &t.devices()[0];
        assert!(!d.online);
        assert_eq!(d.uploads_in_flight, 0);
        assert_eq!(t.open_connections(), 0);
    }
}
