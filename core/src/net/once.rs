//! One sync with the relay: connect, catch up, upload, say goodbye.

use super::SyncOptions;
use super::drive::{self, Failure, Received};
use super::error::NetError;
use super::link::Link;
use crate::credential::Credential;
use crate::replica::Replica;
use crate::sync::{ClientSession, SyncError, SyncEvent};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// What a one-shot sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Local changes the relay acknowledged.
    pub uploaded: u64,
    /// Changes received that were new to this device.
    pub received: u64,
    /// Bytes written to the relay (frames).
    pub bytes_sent: u64,
    /// Bytes read from the relay (frames).
    pub bytes_received: u64,
    /// Messages written.
    pub messages_sent: u64,
    /// Messages read.
    pub messages_received: u64,
    /// Round trips after the handshake: times the device wrote messages (an
    /// upload, a sync reply) and then waited for the relay again. Pages the relay
    /// streams without being asked do not count.
    pub round_trips: u64,
    /// Automerge change bytes uploaded (inside `Upload` frames).
    pub change_bytes_sent: u64,
    /// Automerge change bytes received (inside `Changes` frames).
    pub change_bytes_received: u64,
    /// From the start of connecting until the device was caught up with every
    /// local change acknowledged (the goodbye and QUIC's draining period after it
    /// are not included).
    pub converged_in: Duration,
    /// The relay log position this device has now applied.
    pub cursor: u64,
    /// Whether the relay could not resume the device's cursor and ran a
    /// per-document sync instead.
    pub full_sync: bool,
}

/// Connect to the relay once, exchange changes until this device has caught up
/// with the relay's log and every local change is acknowledged, then close. Fails
/// if that takes longer than `timeout` (connecting included).
pub async fn sync_once(
    replica: Arc<Replica>,
    credential: &Credential,
    options: &SyncOptions,
    timeout: Duration,
) -> Result<SyncReport, NetError> {
    let addr = options.relay_addr(credential).to_owned();
    let span = tracing::info_span!("sync_once", device = %credential.body.device_id, relay = %addr);
    run(&replica, credential, options, &addr, timeout)
        .instrument(span)
        .await
}

async fn run(
    replica: &Replica,
    credential: &Credential,
    options: &SyncOptions,
    addr: &str,
    timeout: Duration,
) -> Result<SyncReport, NetError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let timed_out = |what| NetError::Timeout {
        addr: addr.to_owned(),
        what,
        after: timeout,
    };
    let connect_by = deadline.min(Instant::now() + options.connect_timeout);
    let mut link = tokio::time::timeout_at(connect_by, Link::connect(credential, addr))
        .await
        .map_err(|_| timed_out("connecting"))??;
    let mut session = ClientSession::new(credential.to_bytes(), options.client.clone());
    let mut report = SyncReport::default();
    let exchanged = tokio::time::timeout_at(
        deadline,
        exchange(&mut link, &mut session, replica, &mut report),
    )
    .await;
    match exchanged {
        Ok(Ok(())) => {
            report.converged_in = started.elapsed();
            fill_counts(&mut report, &link, &session);
            drive::goodbye(link, &mut session).await;
            tracing::info!(
                uploaded = report.uploaded,
                received = report.received,
                cursor = report.cursor,
                "sync complete"
            );
            Ok(report)
        }
        Ok(Err(failure)) => Err(drive::fail(link, &mut session, failure).await),
        Err(_) => {
            drive::goodbye(link, &mut session).await;
            Err(timed_out("syncing"))
        }
    }
}

/// Run the session until it is idle (caught up, nothing awaiting acknowledgement).
async fn exchange(
    link: &mut Link,
    session: &mut ClientSession,
    replica: &Replica,
    report: &mut SyncReport,
) -> Result<(), Failure> {
    session.start(replica).map_err(|e| sync_failure(link, e))?;
    link.flush(session).await.map_err(Failure::Net)?;
    while !session.is_idle() {
        match drive::receive(link, session, replica).await? {
            Received::Events(events) => {
                for event in events {
                    if let SyncEvent::Connected { full_sync, .. } = event {
                        report.full_sync = full_sync;
                    }
                }
            }
            Received::RelayClosed => {
                return Err(Failure::Net(NetError::Connection {
                    addr: link.addr.clone(),
                    reason: "the relay closed the session before the sync finished".into(),
                }));
            }
        }
        let written = link.flush(session).await.map_err(Failure::Net)?;
        if written > 0 && session.progress().connected {
            report.round_trips += 1;
        }
    }
    Ok(())
}

fn fill_counts(report: &mut SyncReport, link: &Link, session: &ClientSession) {
    let progress = session.progress();
    report.uploaded = progress.uploaded;
    report.received = progress.received;
    report.cursor = progress.cursor;
    report.bytes_sent = link.counters.bytes_sent;
    report.bytes_received = link.counters.bytes_received;
    report.messages_sent = link.counters.messages_sent;
    report.messages_received = link.counters.messages_received;
    report.change_bytes_sent = link.counters.change_bytes_sent;
    report.change_bytes_received = link.counters.change_bytes_received;
}

pub(crate) fn sync_failure(link: &Link, source: SyncError) -> Failure {
    Failure::Net(NetError::Sync {
        addr: link.addr.clone(),
        source,
    })
}
