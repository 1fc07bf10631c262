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
fn new_order_json_inputs_never_panic() {
    assert!(replay("new_order_json", waybill_core::fuzz::new_order_json) > 0);
}

#[test]
fn protocol_stream_inputs_never_panic() {
    assert!(replay("protocol_stream", waybill_core::fuzz::protocol_stream) > 0);
}
