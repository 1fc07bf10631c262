//! The relay's key material, kept in its data directory.
//!
//! | file                       | what                                              |
//! |----------------------------|---------------------------------------------------|
//! | `relay-id`                 | the relay's id (`rly_…`), named in credentials    |
//! | `credential-signing.key`   | ed25519 key signing device credentials (base64)   |
//! | `relay-cert.pem`           | the QUIC certificate devices pin (self-signed)    |
//! | `relay-key.pem`            | its private key                                   |
//!
//! Everything is created on the first start and loaded afterwards: devices pin the
//! certificate and carry credentials signed by the key, so replacing either means
//! enrolling every device again. That is why a certificate whose private key went
//! missing is an error rather than a reason to make a new one. Secret files are
//! written readable by their owner only (on Unix).
//!
//! An operator may bring their own certificate and key (PEM) instead; then the
//! relay uses them in place and creates no certificate.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use waybill_core::credential::{CredentialError, CredentialIssuer};
use waybill_core::net::tls::{self, TlsError};

/// The file in the data directory holding the relay id.
pub const RELAY_ID_FILE: &str = "relay-id";
const SIGNING_KEY_FILE: &str = "credential-signing.key";
const CERT_FILE: &str = "relay-cert.pem";
const KEY_FILE: &str = "relay-key.pem";
/// Names every generated certificate carries, so a relay on the same machine
/// is reachable with no configuration.
const DEFAULT_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// Why the relay's key material could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A PEM file could not be read or holds no item of the expected kind.
    #[error("{}: cannot read the {what} from this PEM file: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// "certificate" or "private key".
        what: &'static str,
        /// What went wrong.
        source: pem::Error,
    },
    /// The relay id file does not hold a relay id.
    #[error("{}: not a relay id (expected `rly_` and hex digits)", path.display())]
    BadRelayId {
        /// The file.
        path: PathBuf,
    },
    /// The credential signing key file does not hold a key.
    #[error("{}: not a credential signing key: {reason}", path.display())]
    BadSigningKey {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The certificate exists but its private key does not.
    #[error(
        "{} exists but its private key {} does not; restore the key, or remove the \
         certificate to create a new one (every device must then be enrolled again)",
        cert.display(),
        key.display()
    )]
    KeyMissing {
        /// The certificate file.
        cert: PathBuf,
        /// The missing key file.
        key: PathBuf,
    },
    /// The certificate or key cannot serve QUIC (for example, they do not match).
    #[error("the relay certificate and key cannot be used: {0}")]
    Tls(#[from] TlsError),
    /// Generating the self-signed certificate failed.
    #[error("cannot generate the relay certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The relay's identity and secrets, as loaded from its data directory.
#[derive(Clone)]
pub struct RelayKeys {
    /// The relay's id, written into every credential it issues.
    pub relay_id: String,
    /// The QUIC certificate (DER) devices pin.
    pub cert_der: Vec<u8>,
    /// Its private key (DER; PKCS#8 for generated keys).
    pub key_der: Vec<u8>,
    /// Where the certificate is (to tell the operator).
    pub cert_path: PathBuf,
    /// Signs device credentials.
    pub issuer: CredentialIssuer,
}

impl std::fmt::Debug for RelayKeys {
    // Never print the private keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayKeys")
            .field("relay_id", &self.relay_id)
            .field("cert_path", &self.cert_path)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl RelayKeys {
    /// The relay's QUIC server configuration.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, TlsError> {
        tls::server_config(vec![self.cert_der.clone()], self.key_der.clone())
    }
}

/// Loads the relay's key material from `data`, creating what is missing (and
/// `data` itself). `user_cert` is the operator's own certificate and key (PEM
/// paths), used instead of a generated certificate. `names` are extra host names
/// or IP addresses for a generated certificate (they only matter when it is
/// created; devices pin the certificate and ignore names).
///
/// Returns the material and whether anything was created.
pub fn load_or_create(
    data: &Path,
    user_cert: Option<(&Path, &Path)>,
    names: &[String],
) -> Result<(RelayKeys, bool), KeysError> {
    fs::create_dir_all(data).map_err(|source| io_error(data, source))?;
    let (relay_id, created_id) = load_or_create_relay_id(&data.join(RELAY_ID_FILE))?;
    let (issuer, created_issuer) =
        load_or_create_signing_key(&data.join(SIGNING_KEY_FILE), created_id)?;
    let (cert_path, cert_der, key_der, created_cert) = match user_cert {
        Some((cert, key)) => {
            let (cert_der, key_der) = read_pem_pair(cert, key)?;
            (cert.to_path_buf(), cert_der, key_der, false)
        }
        None => {
            let cert = data.join(CERT_FILE);
            let (cert_der, key_der, created) =
                load_or_create_cert(&cert, &data.join(KEY_FILE), names)?;
            (cert, cert_der, key_der, created)
        }
    };
    let keys = RelayKeys {
        relay_id,
        cert_der,
        key_der,
        cert_path,
        issuer,
    };
    // Refuse a certificate and key that do not belong together now, not at the
    // first device connection.
    keys.server_config()?;
    Ok((keys, created_id || created_issuer || created_cert))
}

/// A self-signed certificate for `names` (DNS names or IP addresses): its DER
/// and its private key's PKCS#8 DER.
pub fn self_signed(names: &[String]) -> Result<(Vec<u8>, Vec<u8>), KeysError> {
    let generated = generate(names)?;
    Ok((
        generated.cert.der().to_vec(),
        generated.key_pair.serialize_der(),
    ))
}

/// `len` random bytes as lowercase hex, for ids.
pub(crate) fn random_hex(len: usize) -> String {
    (0..len)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

fn load_or_create_relay_id(path: &Path) -> Result<(String, bool), KeysError> {
    if let Some(text) = read_if_exists(path)? {
        let id = String::from_utf8(text)
            .ok()
            .map(|id| id.trim().to_owned())
            .filter(|id| is_relay_id(id))
            .ok_or_else(|| KeysError::BadRelayId {
                path: path.to_path_buf(),
            })?;
        return Ok((id, false));
    }
    let id = format!("rly_{}", random_hex(8));
    write_new(path, format!("{id}\n").as_bytes(), false)?;
    tracing::info!(relay_id = %id, "created relay id");
    Ok((id, true))
}

fn is_relay_id(id: &str) -> bool {
    id.strip_prefix("rly_")
        .is_some_and(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn load_or_create_signing_key(
    path: &Path,
    first_start: bool,
) -> Result<(CredentialIssuer, bool), KeysError> {
    if let Some(text) = read_if_exists(path)? {
        let bad = |reason: String| KeysError::BadSigningKey {
            path: path.to_path_buf(),
            reason,
        };
        let secret = BASE64
            .decode(text.trim_ascii())
            .map_err(|err| bad(format!("not base64: {err}")))?;
        let issuer = CredentialIssuer::from_secret_bytes(&secret)
            .map_err(|err: CredentialError| bad(err.to_string()))?;
        return Ok((issuer, false));
    }
    if !first_start {
        tracing::warn!(
            path = %path.display(),
            "credential signing key was missing; created a new one, so every device must be enrolled again"
        );
    }
    let issuer = CredentialIssuer::generate();
    let text = format!("{}\n", BASE64.encode(issuer.secret_bytes()));
    write_new(path, text.as_bytes(), true)?;
    tracing::info!(path = %path.display(), "created credential signing key");
    Ok((issuer, true))
}

/// Loads the generated certificate, or creates it when there is none. The key is
/// put in place before the certificate, so an interrupted creation leaves no
/// certificate and is simply redone (no device can have pinned it).
fn load_or_create_cert(
    cert: &Path,
    key: &Path,
    names: &[String],
) -> Result<(Vec<u8>, Vec<u8>, bool), KeysError> {
    if cert.exists() {
        if !key.exists() {
            return Err(KeysError::KeyMissing {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            });
        }
        let (cert_der, key_der) = read_pem_pair(cert, key)?;
        return Ok((cert_der, key_der, false));
    }
    let names = certificate_names(names);
    let generated = generate(&names)?;
    write_new(key, generated.key_pair.serialize_pem().as_bytes(), true)?;
    write_new(cert, generated.cert.pem().as_bytes(), false)?;
    tracing::info!(
        cert = %cert.display(),
        names = ?names,
        "created a self-signed relay certificate; devices pin it through their credentials"
    );
    Ok((
        generated.cert.der().to_vec(),
        generated.key_pair.serialize_der(),
        true,
    ))
}

/// The default names followed by the caller's, without duplicates.
fn certificate_names(extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = DEFAULT_NAMES.iter().map(|&name| name.to_owned()).collect();
    for name in extra {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

fn generate(names: &[String]) -> Result<rcgen::CertifiedKey, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Waybill relay");
    let key_pair = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key_pair)?;
    Ok(rcgen::CertifiedKey { cert, key_pair })
}

/// The first certificate of `cert` (the end-entity one devices pin) and the key.
fn read_pem_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), KeysError> {
    let pem_error = |path: &Path, what, source| KeysError::Pem {
        path: path.to_path_buf(),
        what,
        source,
    };
    let cert_der = CertificateDer::from_pem_file(cert)
        .map_err(|source| pem_error(cert, "certificate", source))?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|source| pem_error(key, "private key", source))?;
    Ok((cert_der.to_vec(), key_der.secret_der().to_vec()))
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, KeysError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io_error(path, source)),
    }
}

/// Writes `bytes` to `path` through a temporary file renamed into place, so a
/// crash never leaves a half-written file; `secret` files are owner-only on Unix.
fn write_new(path: &Path, bytes: &[u8], secret: bool) -> Result<(), KeysError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    write_synced(&tmp, bytes, secret).map_err(|source| io_error(&tmp, source))?;
    fs::rename(&tmp, path).map_err(|source| io_error(path, source))
}

fn write_synced(path: &Path, bytes: &[u8], secret: bool) -> std::io::Result<()> {
    // A leftover from an interrupted write might have looser permissions.
    match fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn io_error(path: &Path, source: std::io::Error) -> KeysError {
    KeysError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    const LOOPBACK: &str = "127.0.0.1:0";

    #[test]
    fn second_call_loads_the_same_material() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (first, created) = load_or_create(&data, None, &["relay.example".to_owned()]).unwrap();
        assert!(created);
        assert!(is_relay_id(&first.relay_id), "{}", first.relay_id);
        assert_eq!(first.cert_path, data.join(CERT_FILE));

        let (second, created) = load_or_create(&data, None, &[]).unwrap();
        assert!(!created);
        assert_eq!(second.relay_id, first.relay_id);
        assert_eq!(second.cert_der, first.cert_der);
        assert_eq!(second.key_der, first.key_der);
        assert_eq!(second.issuer.secret_bytes(), first.issuer.secret_bytes());
        assert!(!format!("{second:?}").contains("key_der"));
    }

    #[cfg(unix)]
    #[test]
    fn secrets_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path(), None, &[]).unwrap();
        for file in [SIGNING_KEY_FILE, KEY_FILE] {
            let mode = fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }

    #[test]
    fn user_certificate_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let own = generate(&["relay.example".to_owned()]).unwrap();
        let cert = dir.path().join("own-cert.pem");
        let key = dir.path().join("own-key.pem");
        fs::write(&cert, own.cert.pem()).unwrap();
        fs::write(&key, own.key_pair.serialize_pem()).unwrap();

        let data = dir.path().join("data");
        let (keys, _) = load_or_create(&data, Some((&cert, &key)), &[]).unwrap();
        assert_eq!(keys.cert_der, own.cert.der().to_vec());
        assert_eq!(keys.key_der, own.key_pair.serialize_der());
        assert_eq!(keys.cert_path, cert);
        assert!(!data.join(CERT_FILE).exists());
    }

    #[test]
    fn mismatched_user_certificate_and_key_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        fs::write(&cert, generate(&[]).unwrap().cert.pem()).unwrap();
        fs::write(&key, generate(&[]).unwrap().key_pair.serialize_pem()).unwrap();
        let err = load_or_create(&dir.path().join("data"), Some((&cert, &key)), &[]).unwrap_err();
        assert!(matches!(err, KeysError::Tls(_)), "{err}");
    }

    #[test]
    fn certificate_without_its_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path(), None, &[]).unwrap();
        fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        let err = load_or_create(dir.path(), None, &[]).unwrap_err();
        assert!(matches!(err, KeysError::KeyMissing { .. }), "{err}");
        assert!(err.to_string().contains("enrolled again"), "{err}");
    }

    #[test]
    fn corrupt_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path(), None, &[]).unwrap();
        fs::write(dir.path().join(SIGNING_KEY_FILE), "c2hvcnQ=\n").unwrap();
        let err = load_or_create(dir.path(), None, &[]).unwrap_err();
        assert!(matches!(err, KeysError::BadSigningKey { .. }), "{err}");
        fs::write(dir.path().join(RELAY_ID_FILE), "who knows\n").unwrap();
        let err = load_or_create(dir.path(), None, &[]).unwrap_err();
        assert!(matches!(err, KeysError::BadRelayId { .. }), "{err}");
    }

    #[test]
    fn certificate_names_start_with_the_defaults() {
        let names = certificate_names(&["localhost".to_owned(), "relay.example".to_owned()]);
        assert_eq!(names, ["localhost", "127.0.0.1", "relay.example"]);
    }

    /// A relay endpoint on loopback that echoes one bidirectional stream of the
    /// first connection and then waits for the client to close it.
    fn spawn_echo_relay(
        keys: &RelayKeys,
    ) -> (SocketAddr, tokio::task::JoinHandle<Result<(), String>>) {
        let endpoint =
            quinn::Endpoint::server(keys.server_config().unwrap(), LOOPBACK.parse().unwrap())
                .unwrap();
        let addr = endpoint.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let incoming = endpoint.accept().await.ok_or("endpoint closed")?;
            let connection = incoming.await.map_err(|err| err.to_string())?;
            let (mut send, mut recv) = connection.accept_bi().await.map_err(|e| e.to_string())?;
            let request = recv.read_to_end(1024).await.map_err(|e| e.to_string())?;
            send.write_all(&request).await.map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            connection.closed().await;
            Ok(())
        });
        (addr, task)
    }

    fn client_endpoint(pinned_cert_der: &[u8]) -> quinn::Endpoint {
        let mut endpoint = quinn::Endpoint::client(LOOPBACK.parse().unwrap()).unwrap();
        endpoint.set_default_client_config(tls::client_config(pinned_cert_der).unwrap());
        endpoint
    }

    #[tokio::test]
    async fn quic_round_trip_with_the_pinned_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, _) = load_or_create(dir.path(), None, &[]).unwrap();
        let (addr, relay) = spawn_echo_relay(&keys);
        let client = client_endpoint(&keys.cert_der);

        let exchange = async {
            // The name matches none of the certificate's: only the pin counts.
            let connection = client
                .connect(addr, "relay.invalid")
                .unwrap()
                .await
                .unwrap();
            let (mut send, mut recv) = connection.open_bi().await.unwrap();
            send.write_all(b"hello relay").await.unwrap();
            send.finish().unwrap();
            let reply = recv.read_to_end(1024).await.unwrap();
            connection.close(0u32.into(), b"done");
            reply
        };
        let reply = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .unwrap();
        assert_eq!(reply, b"hello relay");
        relay.await.unwrap().unwrap();
        client.wait_idle().await;
    }

    #[tokio::test]
    async fn quic_refuses_a_relay_with_another_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, _) = load_or_create(dir.path(), None, &[]).unwrap();
        let (addr, relay) = spawn_echo_relay(&keys);
        let (other_cert, _) = self_signed(&["localhost".to_owned()]).unwrap();
        let client = client_endpoint(&other_cert);

        let connecting = client.connect(addr, "localhost").unwrap();
        let err = tokio::time::timeout(Duration::from_secs(10), connecting)
            .await
            .unwrap()
            .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("pinned"), "{message}");
        let relay_err = relay.await.unwrap().unwrap_err();
        assert!(!relay_err.is_empty());
    }

    /// A server config presenting `cert_der` but signing with an unrelated key,
    /// built around rustls' check that the two match: an impostor who copied the
    /// relay's (public) certificate.
    fn impostor_config(cert_der: &[u8]) -> quinn::ServerConfig {
        use std::sync::Arc;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (_, other_key) = self_signed(&[]).unwrap();
        let signer = provider
            .key_provider
            .load_private_key(PrivateKeyDer::try_from(other_key).unwrap())
            .unwrap();
        let certified =
            rustls::sign::CertifiedKey::new(vec![CertificateDer::from(cert_der.to_vec())], signer);
        let mut crypto = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
        crypto.alpn_protocols = vec![tls::ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(crypto).unwrap();
        quinn::ServerConfig::with_crypto(Arc::new(crypto))
    }

    #[tokio::test]
    async fn quic_refuses_an_impostor_with_the_certificate_but_not_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, _) = load_or_create(dir.path(), None, &[]).unwrap();
        let endpoint =
            quinn::Endpoint::server(impostor_config(&keys.cert_der), LOOPBACK.parse().unwrap())
                .unwrap();
        let addr = endpoint.local_addr().unwrap();
        let impostor = tokio::spawn(async move {
            let incoming = endpoint.accept().await.unwrap();
            incoming.await.map(|_| ())
        });
        let client = client_endpoint(&keys.cert_der);

        let connecting = client.connect(addr, "localhost").unwrap();
        let err = tokio::time::timeout(Duration::from_secs(10), connecting)
            .await
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("handshake"), "{err}");
        assert!(impostor.await.unwrap().is_err());
    }
}
