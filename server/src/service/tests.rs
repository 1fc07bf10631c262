//! The QUIC service against raw connections that misbehave, then a device that
//! behaves: every bad input gets a typed error frame and the relay keeps serving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::{RunningRelay, ServeOptions, start};
use crate::enroll::{EnrollRequest, enroll};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use waybill_core::identity::Role;
use waybill_core::net::{SyncOptions, sync_once, tls};
use waybill_core::protocol::{
    self, DEFAULT_MAX_FRAME, ErrorCode, FrameDecoder, Hello, MAGIC, Message, Version,
};
use waybill_core::replica::{Replica, ReplicaOptions};

const WAIT: Duration = Duration::from_secs(10);

async fn relay() -> (tempfile::TempDir, RunningRelay) {
    let dir = tempfile::tempdir().unwrap();
    let options = ServeOptions::new(dir.path(), "127.0.0.1:0".parse().unwrap());
    (dir, start(options).await.unwrap())
}

/// Send `bytes` on a fresh connection's stream and return every frame the relay
/// answers with before it closes.
async fn exchange(relay: &RunningRelay, bytes: &[u8]) -> Vec<Message> {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(tls::client_config(&relay.keys.cert_der).unwrap());
    let connection = endpoint
        .connect(relay.local_addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    let reply = tokio::time::timeout(WAIT, recv.read_to_end(1 << 20))
        .await
        .expect("the relay answers and closes")
        .unwrap_or_default();
    connection.close(0u32.into(), b"done");
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    decoder.push(&reply);
    let mut messages = Vec::new();
    while let Some(frame) = decoder.next_frame().unwrap() {
        messages.push(protocol::decode(&frame).unwrap());
    }
    messages
}

fn error_code(messages: &[Message]) -> Option<(ErrorCode, bool)> {
    match messages {
        [Message::Error(e)] => Some((e.code, e.fatal)),
        _ => None,
    }
}

fn frame(message: &Message) -> Vec<u8> {
    protocol::encode(message, DEFAULT_MAX_FRAME).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_typed_error_and_the_relay_keeps_serving() {
    let (_dir, relay) = relay().await;

    let oversize = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
    let garbage = [0, 0, 0, 3, 0xfe, 0xfe, 0xfe];
    let future_major = Message::Hello(Hello {
        magic: MAGIC,
        version: Version {
            major: 99,
            minor: 0,
        },
        credential: Vec::new(),
        cursor: None,
        client: "from the future".into(),
    });
    let cases = [
        (oversize.to_vec(), ErrorCode::FrameTooLarge),
        (garbage.to_vec(), ErrorCode::MalformedMessage),
        (frame(&Message::Bye), ErrorCode::MalformedMessage),
        (frame(&future_major), ErrorCode::UnsupportedVersion),
    ];
    for (bytes, code) in cases {
        let answer = exchange(&relay, &bytes).await;
        assert_eq!(error_code(&answer), Some((code, true)), "{answer:?}");
    }

    // A well-behaved device is served as usual afterwards.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let request = EnrollRequest {
        role: Role::Store,
        courier: None,
        store: Some("S1".into()),
        device_id: Some("tablet-1".into()),
        relay_addr: relay.local_addr.to_string(),
        valid_for_ms: 3_600_000,
        now_ms: now,
    };
    let credential = enroll(&relay.keys, &request).unwrap();
    let replica = Arc::new(
        Replica::open_in_memory(credential.body.identity(), ReplicaOptions::default()).unwrap(),
    );
    let order = serde_json::from_value(serde_json::json!({
        "number": "S1-000001", "channel": "pos", "store": "S1",
        "customer": {"id": "c-1", "name": "A Customer", "phone": "+1 555 0100",
                     "address": "1 Main St"},
        "currency": "IRR", "fulfilment": "in_store_pickup",
        "lines": [{"sku": "TEA-500", "name": "Black tea 500 g", "qty": 1, "unit_price": 1850000}]
    }))
    .unwrap();
    replica.create_order(&order).unwrap();
    let report = sync_once(replica, &credential, &SyncOptions::default(), WAIT)
        .await
        .unwrap();
    assert_eq!(report.uploaded, 1, "{report:?}");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_connected_devices() {
    let (_dir, relay) = relay().await;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(tls::client_config(&relay.keys.cert_der).unwrap());
    let connection = endpoint
        .connect(relay.local_addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    // Opening a stream is only visible to the relay once something is written.
    send.write_all(&[0, 0]).await.unwrap();
    let reader = tokio::spawn(async move { recv.read_to_end(1 << 20).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::time::timeout(WAIT, relay.shutdown())
        .await
        .expect("shutdown is bounded");
    let reply = reader.await.unwrap().unwrap_or_default();
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    decoder.push(&reply);
    let first = decoder
        .next_frame()
        .unwrap()
        .map(|f| protocol::decode(&f).unwrap());
    assert!(
        matches!(&first, Some(Message::Error(e)) if e.code == ErrorCode::ShuttingDown),
        "{first:?}"
    );
}
