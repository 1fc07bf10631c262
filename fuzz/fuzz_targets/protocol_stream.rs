#![no_main]
//! Fuzz target: see `waybill_core::fuzz::protocol_stream`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| waybill_core::fuzz::protocol_stream(data));
