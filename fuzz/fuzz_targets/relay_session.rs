#![no_main]
//! Fuzz target: see `waybill_core::fuzz::relay_session`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| waybill_core::fuzz::relay_session(data));
