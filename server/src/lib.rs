//! The Waybill relay: storage, keys, QUIC service and the operators' command line.

pub mod log_store;
