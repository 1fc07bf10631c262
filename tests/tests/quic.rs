//! Devices and the relay over real QUIC on loopback: convergence through one-shot
//! syncs, live push to a background client, and refusals with clear errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;
use waybill_core::credential::{Credential, CredentialIssuer};
use waybill_core::model::{EventDetails, NewDelivery, NewLedgerEntry, PaymentMethod};
use waybill_core::net::tls::TlsError;
use waybill_core::net::{
    ConnectionState, NetError, SyncClient, SyncOptions, SyncStatus, sync_once,
};
use waybill_core::protocol::ErrorCode;
use waybill_core::replica::Replica;
use waybill_core::sync::LogStore;
use waybill_core::{DocId, Role};
use waybill_server::keys::{self};
use waybill_server::log_store::SqliteLogStore;
use waybill_server::service::{ServeOptions, start};
use waybill_tests::loopback::{
    HOUR_MS, SYNC_TIMEOUT, credential, credential_from, eventually, now_ms, relay, replica, sync,
};
use waybill_tests::order;

async fn sync_err(replica: &Arc<Replica>, credential: &Credential) -> NetError {
    sync_once(
        Arc::clone(replica),
        credential,
        &SyncOptions::default(),
        SYNC_TIMEOUT,
    )
    .await
    .unwrap_err()
}

/// Every document with its heads, and every document's status.
fn snapshot(replica: &Replica) -> Vec<(String, Vec<String>, String)> {
    replica
        .doc_ids()
        .unwrap()
        .into_iter()
        .map(|id| {
            let status = match id.kind() {
                waybill_core::DocKind::Order => replica.order(&id).unwrap().status,
                waybill_core::DocKind::Delivery => replica.delivery(&id).unwrap().status,
            };
            (id.to_string(), replica.heads(&id).unwrap(), status)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_and_two_couriers_converge_after_working_offline() {
    let (_dir, relay) = relay().await;
    let tablet_cred = credential(&relay, "tablet-1", Role::Store, "S1");
    let c1_cred = credential(&relay, "phone-1", Role::Courier, "courier-1");
    let c2_cred = credential(&relay, "phone-2", Role::Courier, "courier-2");
    let (tablet, c1, c2) = (replica(&tablet_cred), replica(&c1_cred), replica(&c2_cred));

    let a = tablet.create_order(&order("S1", 1)).unwrap();
    let b = tablet.create_order(&order("S1", 2)).unwrap();
    let da = tablet
        .assign_courier(&a, "courier-1", &NewDelivery::default())
        .unwrap();
    let db = tablet
        .assign_courier(&b, "courier-2", &NewDelivery::default())
        .unwrap();
    let first = sync(&tablet, &tablet_cred).await;
    assert_eq!(first.uploaded, 6, "{first:?}");
    assert!(!first.full_sync);
    assert_eq!(tablet.pending_uploads().unwrap(), 0);
    let got = sync(&c1, &c1_cred).await;
    // Its delivery and that delivery's order (created, then given the delivery):
    // not the other courier's.
    assert_eq!(got.received, 3, "{got:?}");
    assert!(got.bytes_received > 0 && got.messages_received >= 2);
    sync(&c2, &c2_cred).await;

    // Everyone works offline, on the same orders.
    let details = EventDetails::default();
    c1.record_event(&da, "picked_up", &details).unwrap();
    c1.record_event(&da, "delivered", &details).unwrap();
    let cash = NewLedgerEntry {
        delivery_id: Some(da.to_string()),
        ..NewLedgerEntry::payment(PaymentMethod::Cash, 7_800_000, "IRR")
    };
    c1.record_payment(&a, &cash).unwrap();
    c2.record_event(&db, "picked_up", &details).unwrap();
    c2.record_event(&db, "failed_attempt", &details).unwrap();
    c2.add_note(&db, "nobody home, left a card").unwrap();
    tablet
        .add_note(&a, "customer asked for the side door")
        .unwrap();
    tablet
        .add_note(&db, "call before the second attempt")
        .unwrap();
    let c = tablet.create_order(&order("S1", 3)).unwrap();

    // They come back in different orders; two rounds carry everything everywhere.
    for (replica, cred) in [(&c2, &c2_cred), (&tablet, &tablet_cred), (&c1, &c1_cred)] {
        sync(replica, cred).await;
    }
    for (replica, cred) in [(&c2, &c2_cred), (&tablet, &tablet_cred)] {
        sync(replica, cred).await;
    }

    // The store holds all five documents; each courier exactly its delivery and
    // its order, identical to the store's copies.
    let expected = snapshot(&tablet);
    assert_eq!(expected.len(), 5);
    for (courier, mine) in [(&c1, [&a, &da]), (&c2, [&b, &db])] {
        let held = snapshot(courier);
        let mut want: Vec<String> = mine.iter().map(|id| id.to_string()).collect();
        want.sort();
        assert_eq!(
            held.iter().map(|(id, ..)| id.clone()).collect::<Vec<_>>(),
            want
        );
        assert!(held.iter().all(|doc| expected.contains(doc)), "{held:?}");
        assert_eq!(courier.pending_uploads().unwrap(), 0);
    }
    assert_eq!(tablet.pending_uploads().unwrap(), 0);
    for device in [&tablet, &c1] {
        assert_eq!(device.delivery(&da).unwrap().status, "delivered");
        assert_eq!(device.order(&a).unwrap().payments.len(), 1);
    }
    for device in [&tablet, &c2] {
        assert_eq!(device.delivery(&db).unwrap().failed_attempts, 1);
    }
    assert!(tablet.order(&c).is_ok());
    assert!(c1.order(&c).is_err() && c2.order(&b).is_ok() && c1.order(&b).is_err());
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_client_receives_pushed_changes_without_polling() {
    let (_dir, relay) = relay().await;
    let tablet_cred = credential(&relay, "tablet-1", Role::Store, "S1");
    let phone_cred = credential(&relay, "phone-1", Role::Courier, "courier-1");
    let (tablet, phone) = (replica(&tablet_cred), replica(&phone_cred));
    let a = tablet.create_order(&order("S1", 1)).unwrap();
    let da = tablet
        .assign_courier(&a, "courier-1", &NewDelivery::default())
        .unwrap();

    let client = SyncClient::start(
        Arc::clone(&tablet),
        tablet_cred.clone(),
        SyncOptions::default(),
    );
    let seen: Arc<Mutex<Vec<SyncStatus>>> = Arc::default();
    let log = Arc::clone(&seen);
    let _subscription = client.subscribe_status(Arc::new(move |s: &SyncStatus| {
        log.lock().unwrap().push(s.clone())
    }));
    let live = |s: &SyncStatus| s.state == ConnectionState::Live && s.pending_uploads == 0;
    assert!(
        eventually(Duration::from_secs(10), || live(&client.status())).await,
        "{:?}",
        client.status()
    );
    assert!(client.status().last_synced_ms.is_some());
    assert!(seen.lock().unwrap().iter().any(live));

    // The courier syncs once; the tablet hears about it from the relay's push.
    sync(&phone, &phone_cred).await;
    phone
        .record_event(&da, "picked_up", &EventDetails::default())
        .unwrap();
    sync(&phone, &phone_cred).await;
    assert!(
        eventually(Duration::from_secs(10), || status_of(&tablet, &da)
            == "picked_up")
        .await,
        "the pushed change did not arrive: {:?}",
        client.status()
    );

    // A local write on the tablet is uploaded without being asked.
    tablet.add_note(&a, "fragile").unwrap();
    assert!(
        eventually(Duration::from_secs(10), || tablet
            .pending_uploads()
            .unwrap()
            == 0)
        .await,
        "{:?}",
        client.status()
    );
    sync(&phone, &phone_cred).await;
    assert_eq!(
        phone.order(&a).unwrap().notes,
        tablet.order(&a).unwrap().notes
    );

    client.stop().await;
    drop(_subscription);
    let last = seen.lock().unwrap().last().cloned().unwrap();
    assert!(
        matches!(last.state, ConnectionState::Stopped { .. }),
        "{last:?}"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_client_reconnects_after_the_relay_restarts() {
    let (dir, relay) = relay().await;
    let addr = relay.local_addr;
    let tablet_cred = credential(&relay, "tablet-1", Role::Store, "S1");
    let phone_cred = credential(&relay, "phone-1", Role::Courier, "courier-1");
    let (tablet, phone) = (replica(&tablet_cred), replica(&phone_cred));
    let a = tablet.create_order(&order("S1", 1)).unwrap();
    let da = tablet
        .assign_courier(&a, "courier-1", &NewDelivery::default())
        .unwrap();
    let options = SyncOptions {
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..SyncOptions::default()
    };
    let client = SyncClient::start(Arc::clone(&tablet), tablet_cred, options);
    // Every status, so a short-lived one is not missed on a loaded machine.
    let seen: Arc<Mutex<Vec<SyncStatus>>> = Arc::default();
    let log = Arc::clone(&seen);
    let _subscription = client.subscribe_status(Arc::new(move |s: &SyncStatus| {
        log.lock().unwrap().push(s.clone())
    }));
    let live = || client.status().state == ConnectionState::Live;
    assert!(eventually(Duration::from_secs(10), live).await);

    // The relay stops: the client hears why and goes offline, without giving up.
    relay.shutdown().await;
    let told_why = || {
        seen.lock().unwrap().iter().any(|s| {
            s.state == ConnectionState::Offline
                && s.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("shutting down"))
        })
    };
    assert!(
        eventually(Duration::from_secs(10), told_why).await,
        "{:?}",
        seen.lock().unwrap()
    );
    assert!(
        !matches!(client.status().state, ConnectionState::Stopped { .. }),
        "the client keeps trying"
    );

    // Same data directory and address: same keys, so the credentials still work.
    // (The old socket is released by a background task: retry the bind briefly.)
    let mut restarted = None;
    for _ in 0..100 {
        match start(ServeOptions::new(dir.path(), addr)).await {
            Ok(relay) => {
                restarted = Some(relay);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let relay = restarted.expect("the relay restarts on the same address");
    assert!(
        eventually(Duration::from_secs(10), live).await,
        "{:?}",
        client.status()
    );
    sync(&phone, &phone_cred).await;
    phone
        .record_event(&da, "picked_up", &EventDetails::default())
        .unwrap();
    sync(&phone, &phone_cred).await;
    assert!(
        eventually(Duration::from_secs(10), || status_of(&tablet, &da)
            == "picked_up")
        .await,
        "{:?}",
        client.status()
    );
    client.stop().await;
    relay.shutdown().await;
}

fn status_of(replica: &Replica, delivery: &DocId) -> String {
    replica
        .delivery(delivery)
        .map(|d| d.status)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_distinct_and_clear() {
    let (_dir, relay) = relay().await;

    // A relay presenting another certificate than the pinned one.
    let mut other = relay.keys.clone();
    other.cert_der = keys::self_signed(&["localhost".to_owned()]).unwrap().0;
    let wrong_pin = credential_from(&other, &relay, "phone-1", Role::Courier, "c-1", now_ms());
    let err = sync_err(&replica(&wrong_pin), &wrong_pin).await;
    assert!(
        matches!(
            err,
            NetError::Tls {
                source: TlsError::PinMismatch,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("pinned"), "{err}");

    // Signed by someone else.
    let mut forger = relay.keys.clone();
    forger.issuer = CredentialIssuer::generate();
    let forged = credential_from(&forger, &relay, "phone-2", Role::Courier, "c-2", now_ms());
    let err = sync_err(&replica(&forged), &forged).await;
    assert_eq!(err.relay_code(), Some(ErrorCode::BadCredential), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&relay.local_addr.to_string()) && text.contains("refused the credential"),
        "{text}"
    );
    assert!(err.is_fatal());

    // Expired an hour ago.
    let expired = credential_from(
        &relay.keys,
        &relay,
        "phone-3",
        Role::Courier,
        "c-3",
        now_ms() - 2 * HOUR_MS,
    );
    let err = sync_err(&replica(&expired), &expired).await;
    assert_eq!(
        err.relay_code(),
        Some(ErrorCode::ExpiredCredential),
        "{err}"
    );
    assert!(err.to_string().contains("expired"), "{err}");

    // Revoked by the operator (through the database, as the command line does).
    let revoked = credential(&relay, "phone-4", Role::Courier, "c-4");
    let device = replica(&revoked);
    sync(&device, &revoked).await;
    SqliteLogStore::open(relay.database.as_ref().unwrap(), &relay.keys.relay_id)
        .unwrap()
        .revoke("phone-4")
        .unwrap();
    let err = sync_err(&device, &revoked).await;
    assert_eq!(
        err.relay_code(),
        Some(ErrorCode::RevokedCredential),
        "{err}"
    );
    assert!(err.to_string().contains("revoked"), "{err}");

    // A background client stops for good instead of retrying a refused credential.
    let client = SyncClient::start(device, revoked, SyncOptions::default());
    assert!(
        eventually(Duration::from_secs(10), || matches!(
            client.status().state,
            ConnectionState::Stopped { .. }
        ))
        .await,
        "{:?}",
        client.status()
    );
    let status = client.status();
    assert!(status.last_error.unwrap().contains("revoked"));
    client.stop().await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_relay_times_out_with_its_address() {
    let (_dir, relay) = relay().await;
    let cred = credential(&relay, "phone-1", Role::Courier, "c-1");
    let addr = relay.local_addr.to_string();
    relay.shutdown().await;
    let options = SyncOptions {
        connect_timeout: Duration::from_millis(500),
        ..SyncOptions::default()
    };
    let err = sync_once(replica(&cred), &cred, &options, SYNC_TIMEOUT)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&addr), "{err}");
    assert!(!err.is_fatal());
}

/// Reconnect costs O(changes): a console holding 10,000 orders that missed 100
/// changes receives those 100 changes, touching 100 documents, in a handful of
/// messages, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_holding_10000_orders_receives_only_the_100_changes_it_missed() {
    const ORDERS: usize = 10_000;
    let (_dir, relay) = relay().await;
    let tablet_cred = credential(&relay, "tablet-1", Role::Store, "S1");
    let console_cred = credential(&relay, "console-1", Role::Dispatcher, "");
    let tablet = replica(&tablet_cred);
    let console = replica(&console_cred);
    let ids: Vec<DocId> = (0..ORDERS)
        .map(|n| tablet.create_order(&order("S1", n)).unwrap())
        .collect();
    let long = Duration::from_secs(300);
    let up = sync_once(tablet.clone(), &tablet_cred, &SyncOptions::default(), long)
        .await
        .unwrap();
    assert_eq!(up.uploaded, ORDERS as u64);
    let initial = sync_once(
        console.clone(),
        &console_cred,
        &SyncOptions::default(),
        long,
    )
    .await
    .unwrap();
    assert_eq!(initial.received, ORDERS as u64);
    assert_eq!(console.doc_ids().unwrap().len(), ORDERS);

    // 100 orders move on while the console is offline.
    for id in ids.iter().step_by(ORDERS / 100) {
        tablet
            .record_event(id, "confirmed", &EventDetails::default())
            .unwrap();
    }
    let changed: Vec<Vec<u8>> = tablet
        .outbox(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| e.bytes)
        .collect();
    assert_eq!(changed.len(), 100);
    sync(&tablet, &tablet_cred).await;

    let again = sync(&console, &console_cred).await;
    assert_eq!(again.received, 100, "only the missed changes: {again:?}");
    assert!(!again.full_sync);
    // Welcome and one page of changes (its cursor marks the catch-up).
    assert_eq!(again.messages_received, 2, "{again:?}");
    // Bytes: the changes themselves plus framing, far from 10,000 documents' worth.
    let change_bytes: usize = changed.iter().map(Vec::len).sum();
    assert!(
        (again.bytes_received as usize) < change_bytes * 3 / 2 + 2048,
        "{} bytes received for {change_bytes} bytes of changes",
        again.bytes_received
    );
    assert_eq!(snapshot(&tablet), snapshot(&console));
    relay.shutdown().await;
}
