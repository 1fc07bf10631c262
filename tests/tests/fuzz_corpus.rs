//! Replays the fuzz seeds and every committed crash input through the same entry
//! points the fuzz targets use: each must be handled with an error, never a panic.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut count = 0;
    for dir in ["seeds", "crashers"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == ".keep") {
                continue;
            }
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            run(&data);
            // Every prefix too: truncated input is the commonest corruption.
            for cut in (0..data.len()).step_by(7) {
                run(&data[..cut]);
            }
            count += 1;
        }
    }
    count
}

#[test]
fn apply_remote_inputs_never_panic() {
    assert!(replay("apply_remote", waybill_core::fuzz::apply_remote) > 0);
}

#[test]
fn load_document_inputs_never_panic() {
    assert!(replay("load_document", waybill_core::fuzz::load_document) > 0);
}

#[test]
fn import_snapshot_inputs_never_panic() {
    assert!(replay("import_snapshot", waybill_core::fuzz::import_snapshot) > 0);
}

#[test]
fn new_order_json_inputs_never_panic() {
    assert!(replay("new_order_json", waybill_core::fuzz::new_order_json) > 0);
}

#[test]
fn protocol_stream_inputs_never_panic() {
    assert!(replay("protocol_stream", waybill_core::fuzz::protocol_stream) > 0);
}

#[test]
fn relay_session_inputs_never_panic() {
    assert!(replay("relay_session", waybill_core::fuzz::relay_session) > 0);
}

#[test]
fn client_session_inputs_never_panic() {
    assert!(replay("client_session", waybill_core::fuzz::client_session) > 0);
}

/// Regenerates the session seeds from a real exchange:
/// `cargo test -p waybill-tests --test fuzz_corpus -- --ignored write_session_seeds`.
#[test]
#[ignore = "writes fuzz/seeds; run by hand when the protocol changes"]
#[allow(clippy::unwrap_used)]
fn write_session_seeds() {
    use waybill_core::Role;
    use waybill_core::credential::CredentialIssuer;
    use waybill_core::model::{EventDetails, NewDelivery};
    use waybill_core::protocol::{DEFAULT_MAX_FRAME, encode};
    use waybill_core::sync::{ClientSession, MemoryLogStore, Relay, RelayConfig};

    let issuer = CredentialIssuer::from_secret_bytes(&[7; 32]).unwrap();
    let mut relay = Relay::new(
        MemoryLogStore::new("fuzz"),
        issuer.verifier(),
        RelayConfig::default(),
    );
    let tablet = waybill_tests::Device::with_role(&issuer, "tablet", Role::Store, "S1");
    let order = tablet
        .replica
        .create_order(&waybill_tests::order("S1", 1))
        .unwrap();
    tablet
        .replica
        .record_event(&order, "confirmed", &EventDetails::default())
        .unwrap();
    tablet
        .replica
        .assign_courier(&order, "c1", &NewDelivery::default())
        .unwrap();
    let mut session = ClientSession::new(tablet.credential.clone(), Default::default());
    session.start(&tablet.replica).unwrap();
    relay.connect(1);
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let mut first = true;
    loop {
        let mut moved = false;
        while let Some(m) = session.poll_transmit() {
            // The relay seed starts after the hello (the entry point sends its own).
            if !first {
                up.extend(encode(&m, DEFAULT_MAX_FRAME).unwrap());
            }
            first = false;
            relay.handle(1, m, 0);
            moved = true;
        }
        while let Some(m) = relay.poll_transmit(1) {
            down.extend(encode(&m, DEFAULT_MAX_FRAME).unwrap());
            session.handle(&tablet.replica, m).unwrap();
            moved = true;
        }
        if !moved {
            break;
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    std::fs::write(root.join("relay_session/upload"), up).unwrap();
    std::fs::write(root.join("client_session/welcome_changes_ack"), down).unwrap();
}
