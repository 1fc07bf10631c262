//! QUIC TLS configurations in which the device pins the relay's certificate.
//!
//! A relay usually runs with a self-signed certificate created on its first start,
//! so devices cannot check it against a certificate authority. Instead, the
//! device's credential carries the exact certificate the relay presents, and the
//! client accepts a server only if it presents exactly those bytes and proves, with
//! the TLS 1.3 handshake signature, that it holds the certificate's private key.
//! Server name and validity dates are deliberately not checked: the pin already
//! names the one certificate trusted, and a relay reached by IP address, or whose
//! self-signed certificate has lapsed, must keep working.
//!
//! Both configurations use the `ring` provider explicitly, so no process-wide
//! rustls provider has to be installed.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, OtherError, SignatureScheme};

/// The application protocol both sides negotiate; a peer speaking anything else
/// fails the handshake instead of exchanging bytes it cannot read.
pub const ALPN: &[u8] = b"waybill/1";

/// How often an idle connection sends a keep-alive, well inside the idle timeout
/// and short enough to keep mobile NAT bindings open.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// How long a connection may go without hearing from the peer before it is closed.
const IDLE_TIMEOUT_MS: u32 = 30_000;
/// Bidirectional streams a device may have open at once on the relay. A sync
/// session needs one; a few more leave room without letting one device hog it.
const MAX_DEVICE_STREAMS: u32 = 4;

/// Why a TLS configuration could not be built, or a relay was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate to pin is not DER (perhaps PEM or base64 text).
    #[error("the pinned relay certificate is not a DER certificate: {0}")]
    InvalidPinnedCert(&'static str),
    /// A certificate of the relay's own chain is not DER.
    #[error("the relay certificate is not a DER certificate: {0}")]
    InvalidCert(&'static str),
    /// The relay was given no certificate.
    #[error("the relay's certificate chain is empty")]
    EmptyCertChain,
    /// The relay's private key is not one of the DER encodings rustls reads.
    #[error("the relay's private key is not a DER key (PKCS#8, PKCS#1 or SEC1): {0}")]
    InvalidKey(&'static str),
    /// The relay presented a certificate other than the pinned one. Reported to
    /// the client inside the handshake error.
    #[error(
        "the relay presented a certificate other than the one pinned in this device's \
         credential; if the relay's certificate was replaced, enrol the device again"
    )]
    PinMismatch,
    /// rustls refused the configuration (for example, a key that does not match
    /// the certificate).
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The configuration lacks the cipher suite QUIC's initial packets need.
    #[error("TLS configuration cannot carry QUIC: {0}")]
    Quic(#[from] NoInitialCipherSuite),
}

/// The QUIC client configuration for a device that trusts exactly the relay
/// certificate `pinned_cert_der` (DER, from the device's credential).
pub fn client_config(pinned_cert_der: &[u8]) -> Result<quinn::ClientConfig, TlsError> {
    check_der_certificate(pinned_cert_der).map_err(TlsError::InvalidPinnedCert)?;
    let provider = provider();
    let verifier = PinnedCertVerifier {
        pinned: CertificateDer::from(pinned_cert_der.to_vec()),
        algorithms: provider.signature_verification_algorithms,
    };
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(crypto)?));
    config.transport_config(Arc::new(transport()));
    Ok(config)
}

/// The relay's QUIC server configuration: its certificate chain (DER, end-entity
/// first) and private key (DER: PKCS#8, or PKCS#1 / SEC1).
pub fn server_config(
    cert_chain_der: Vec<Vec<u8>>,
    key_der: Vec<u8>,
) -> Result<quinn::ServerConfig, TlsError> {
    if cert_chain_der.is_empty() {
        return Err(TlsError::EmptyCertChain);
    }
    for cert in &cert_chain_der {
        check_der_certificate(cert).map_err(TlsError::InvalidCert)?;
    }
    let key = PrivateKeyDer::try_from(key_der).map_err(TlsError::InvalidKey)?;
    let chain = cert_chain_der
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let mut crypto = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    crypto.alpn_protocols = vec![ALPN.to_vec()];

    let mut transport = transport();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_DEVICE_STREAMS))
        .max_concurrent_uni_streams(VarInt::from_u32(0));
    let mut config =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(crypto)?));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Keep-alive and idle timeout, shared by both sides so neither closes a
/// connection the other still considers alive.
fn transport() -> TransportConfig {
    let mut transport = TransportConfig::default();
    transport
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(IDLE_TIMEOUT_MS))));
    transport
}

/// Accepts the server whose end-entity certificate is byte-for-byte the pinned
/// one, and checks its handshake signatures against that certificate's key.
#[derive(Debug)]
struct PinnedCertVerifier {
    pinned: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pinned.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            // `Error::Other` displays our message as is (a `CertificateError`
            // would print it in debug form); the relay sees a handshake failure.
            Err(rustls::Error::Other(OtherError(Arc::new(
                TlsError::PinMismatch,
            ))))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A cheap shape check, so that a certificate pasted as PEM or base64 text is
/// refused when the configuration is built, with a reason, rather than surfacing
/// later as a failed handshake: the bytes must be exactly one DER SEQUENCE.
fn check_der_certificate(der: &[u8]) -> Result<(), &'static str> {
    const TAG_SEQUENCE: u8 = 0x30;
    let (&tag, rest) = der.split_first().ok_or("it is empty")?;
    if tag != TAG_SEQUENCE {
        return Err("it does not start with a DER SEQUENCE (is it PEM or base64 text?)");
    }
    let (&first, rest) = rest.split_first().ok_or("it is truncated")?;
    let (len, content) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let len_bytes = usize::from(first & 0x7f);
        if len_bytes == 0 || len_bytes > 4 || rest.len() < len_bytes {
            return Err("its length field is invalid");
        }
        let (len, content) = rest.split_at(len_bytes);
        let len = len
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, content)
    };
    if len != content.len() {
        return Err("its length field does not match its size");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A syntactically plausible DER SEQUENCE (not a real certificate).
    const SEQUENCE: &[u8] = &[0x30, 0x03, 0x02, 0x01, 0x00];

    #[test]
    fn garbage_pinned_cert_is_refused() {
        for garbage in [
            &b""[..],
            b"-----BEGIN CERTIFICATE-----",
            b"MIIB",
            &[0x30],
            &[0x30, 0x05, 0x00],
            &[0x30, 0x80, 0x00, 0x00],
        ] {
            assert!(
                matches!(client_config(garbage), Err(TlsError::InvalidPinnedCert(_))),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn plausible_pinned_cert_builds_a_config() {
        assert!(client_config(SEQUENCE).is_ok());
        let mut long = vec![0x30, 0x82, 0x01, 0x00];
        long.extend(std::iter::repeat_n(0u8, 256));
        assert!(client_config(&long).is_ok());
    }

    #[test]
    fn garbage_server_material_is_refused() {
        assert!(matches!(
            server_config(Vec::new(), vec![0x30, 0x00]),
            Err(TlsError::EmptyCertChain)
        ));
        assert!(matches!(
            server_config(vec![b"not der".to_vec()], vec![0x30, 0x00]),
            Err(TlsError::InvalidCert(_))
        ));
        assert!(matches!(
            server_config(vec![SEQUENCE.to_vec()], b"not a key".to_vec()),
            Err(TlsError::InvalidKey(_))
        ));
        // Shaped like DER, but neither a real certificate nor a real key.
        let err = server_config(vec![SEQUENCE.to_vec()], vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(err.is_err());
    }
}
