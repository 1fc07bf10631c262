//! The Waybill relay: storage, keys, QUIC service and the operators' command line.

pub mod admin_store;
pub mod bus;
pub mod cli;
pub mod enroll;
pub mod http;
pub mod keys;
pub mod loadgen;
pub mod log_store;
pub mod pg_log_store;
pub mod service;
pub mod testing;
