#![no_main]
//! Fuzz target: see `waybill_core::fuzz::import_snapshot`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| waybill_core::fuzz::import_snapshot(data));
