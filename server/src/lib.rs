//! The Waybill relay: storage, keys, QUIC service and the operators' command line.

pub mod enroll;
pub mod keys;
pub mod log_store;
