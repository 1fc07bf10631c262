#![no_main]
//! Fuzz target: see `waybill_core::fuzz::new_order_json`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| waybill_core::fuzz::new_order_json(data));
