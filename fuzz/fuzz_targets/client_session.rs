#![no_main]
//! Fuzz target: see `waybill_core::fuzz::client_session`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| waybill_core::fuzz::client_session(data));
