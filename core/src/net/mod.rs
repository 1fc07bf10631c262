//! QUIC transport.
pub mod tls;
