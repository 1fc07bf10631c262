#![no_main]
//! Fuzz target: see `waybill_core::fuzz::load_document`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| waybill_core::fuzz::load_document(data));
