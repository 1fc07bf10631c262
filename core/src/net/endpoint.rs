//! QUIC endpoints (UDP sockets) as both sides open them.

use std::net::SocketAddr;

use quinn::{Endpoint, EndpointConfig, ServerConfig};

/// The largest UDP payload a Waybill endpoint accepts: what a 1,500-byte Ethernet
/// frame carries over IPv4 (QUIC's path MTU discovery in quinn stops at 1,452).
/// quinn's default, 65,527, sizes every endpoint's receive buffer for jumbo
/// datagrams that never come: megabytes zeroed each time a device connects.
pub const MAX_UDP_PAYLOAD: u16 = 1472;

/// Open an endpoint on `addr`: a relay's when `server` is given, else a device's
/// (connections out only).
pub fn bind(addr: SocketAddr, server: Option<ServerConfig>) -> std::io::Result<Endpoint> {
    let mut config = EndpointConfig::default();
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .map_err(|e| std::io::Error::other(format!("endpoint configuration: {e}")))?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime to run QUIC on"))?;
    let socket = std::net::UdpSocket::bind(addr)?;
    Endpoint::new(config, server, socket, runtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_device_endpoint_binds_an_ephemeral_port() {
        let endpoint = bind((std::net::Ipv4Addr::LOCALHOST, 0).into(), None).unwrap();
        assert_ne!(endpoint.local_addr().unwrap().port(), 0);
    }
}
