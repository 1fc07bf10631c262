#![no_main]
//! Fuzz target: see `waybill_core::fuzz::apply_remote`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| waybill_core::fuzz::apply_remote(data));
