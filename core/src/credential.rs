//! Signed, expiring device credentials.
//!
//! The relay issues each device a credential when an operator enrols it
//! (`waybill enroll`). It says who the device is (its [`DeviceIdentity`]), which
//! relay it talks to and which certificate that relay presents (so the device can
//! pin it instead of trusting a certificate authority), and until when it is valid.
//! The relay signs it with its ed25519 credential key; whenever the device
//! connects, the relay checks the signature and the expiry, so a device cannot
//! promote itself (say, from courier to dispatcher) by editing the file.
//!
//! The file is JSON, pretty-printed so an operator can read it:
//!
//! ```json
//! { "credential": { "format": 1, "device_id": "dev_…", … }, "signature": "<base64>" }
//! ```
//!
//! The signature covers `serde_json::to_vec(&body)`: the compact JSON of the body's
//! fields in declaration order. The verifier re-serializes the body it parsed, so
//! whitespace and key order in the file do not matter but any change of a value
//! does. Adding or reordering fields changes those bytes: bump [`FORMAT`] then.
//!
//! A credential is a bearer token (whoever holds the file can present it), so
//! [`Credential::save`] writes it readable by its owner only.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::hlc::utc_timestamp;
use crate::identity::{DeviceIdentity, Role};

/// The credential format this code writes and accepts.
pub const FORMAT: u32 = 1;

/// Why a credential could not be read, written or accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// There is no credential (empty input, or no file).
    #[error("no device credential; enrol this device with `waybill enroll` on the relay")]
    Missing,
    /// The bytes are not a credential of a format this code understands.
    #[error("device credential is malformed: {0}")]
    Malformed(String),
    /// The signature does not match: the credential was altered, or was not issued
    /// by this relay's key.
    #[error(
        "device credential signature is invalid: it was altered or was not issued by this relay"
    )]
    BadSignature,
    /// The credential was genuine but is past its expiry.
    #[error(
        "device credential expired at {} (unix ms {expires_ms}); ask for a new one with `waybill enroll`",
        utc_timestamp(*.expires_ms)
    )]
    Expired {
        /// When it expired, in Unix milliseconds.
        expires_ms: i64,
    },
    /// Reading or writing the credential file failed.
    #[error("cannot read or write the device credential: {0}")]
    Io(String),
}

/// What a credential asserts. Every field is covered by the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialBody {
    /// Always [`FORMAT`]; lets a later format be told apart.
    pub format: u32,
    /// The device's unique id.
    pub device_id: String,
    /// What the device may do.
    pub role: Role,
    /// The store, for store devices.
    pub store_id: Option<String>,
    /// The courier, for courier devices.
    pub courier_id: Option<String>,
    /// The relay that issued the credential and accepts it.
    pub relay_id: String,
    /// Where the device reaches the relay (`host:port`).
    pub relay_addr: String,
    /// Base64 DER of the relay's TLS certificate, which the device pins.
    pub relay_cert: String,
    /// When it was issued, in Unix milliseconds.
    pub issued_ms: i64,
    /// When it stops being accepted, in Unix milliseconds.
    pub expires_ms: i64,
}

impl CredentialBody {
    /// The identity a replica on this device is opened with.
    pub fn identity(&self) -> DeviceIdentity {
        DeviceIdentity {
            device_id: self.device_id.clone(),
            role: self.role,
            store_id: self.store_id.clone(),
            courier_id: self.courier_id.clone(),
        }
    }

    /// The relay's certificate (DER) to pin when connecting.
    pub fn relay_cert_der(&self) -> Result<Vec<u8>, CredentialError> {
        BASE64
            .decode(&self.relay_cert)
            .map_err(|err| CredentialError::Malformed(format!("relay_cert is not base64: {err}")))
    }

    /// Whether the credential is still valid at `now_ms`; a device can check this
    /// before connecting, to ask for a new credential instead of being refused.
    pub fn check_not_expired(&self, now_ms: i64) -> Result<(), CredentialError> {
        if now_ms >= self.expires_ms {
            return Err(CredentialError::Expired {
                expires_ms: self.expires_ms,
            });
        }
        Ok(())
    }

    /// The bytes the signature covers.
    fn signed_bytes(&self) -> Vec<u8> {
        // Strings, integers, options and a unit enum cannot fail to serialize.
        match serde_json::to_vec(self) {
            Ok(bytes) => bytes,
            Err(err) => unreachable!("a credential body always serializes: {err}"),
        }
    }
}

/// A credential as stored in the device's credential file: the body and the
/// relay's signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// What the credential asserts.
    #[serde(rename = "credential")]
    pub body: CredentialBody,
    /// Base64 ed25519 signature over the body's signed bytes.
    pub signature: String,
}

impl Credential {
    /// Parses a credential file. This does not check the signature (only the relay
    /// holds the key for that; see [`CredentialVerifier::verify`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CredentialError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(CredentialError::Missing);
        }
        serde_json::from_slice(bytes).map_err(|err| CredentialError::Malformed(err.to_string()))
    }

    /// The credential file's bytes: pretty-printed JSON ending in a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Same reasoning as `signed_bytes`: this struct cannot fail to serialize.
        let mut bytes = match serde_json::to_vec_pretty(self) {
            Ok(bytes) => bytes,
            Err(err) => unreachable!("a credential always serializes: {err}"),
        };
        bytes.push(b'\n');
        bytes
    }

    /// Reads a credential file; a file that does not exist is [`CredentialError::Missing`].
    pub fn load(path: &Path) -> Result<Self, CredentialError> {
        match fs::read(path) {
            Ok(bytes) => Self::from_bytes(&bytes),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(CredentialError::Missing),
            Err(err) => Err(io_error(path, &err)),
        }
    }

    /// Writes the credential file atomically (a temporary file renamed over it),
    /// readable by its owner only on Unix.
    pub fn save(&self, path: &Path) -> Result<(), CredentialError> {
        let tmp = temporary_path(path);
        write_owner_only(&tmp, &self.to_bytes()).map_err(|err| io_error(&tmp, &err))?;
        fs::rename(&tmp, path).map_err(|err| io_error(path, &err))
    }
}

/// The relay's credential signing key.
#[derive(Clone)]
pub struct CredentialIssuer {
    key: SigningKey,
}

impl std::fmt::Debug for CredentialIssuer {
    // Never print the secret key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialIssuer")
            .field(
                "public_key",
                &BASE64.encode(self.key.verifying_key().as_bytes()),
            )
            .finish()
    }
}

impl CredentialIssuer {
    /// A new random signing key from the operating system's randomness.
    pub fn generate() -> Self {
        Self {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// The signing key from its 32 secret bytes (as stored by the relay).
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, CredentialError> {
        let secret: [u8; 32] = bytes.try_into().map_err(|_| {
            CredentialError::Malformed(format!(
                "a credential signing key is 32 bytes, this one is {}",
                bytes.len()
            ))
        })?;
        Ok(Self {
            key: SigningKey::from_bytes(&secret),
        })
    }

    /// The 32 secret bytes, for the relay to store. Keep them private.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The verifier for credentials this key issues.
    pub fn verifier(&self) -> CredentialVerifier {
        CredentialVerifier {
            key: self.key.verifying_key(),
        }
    }

    /// Signs `body`. The caller decides what the body says (see `waybill enroll`).
    pub fn issue(&self, body: CredentialBody) -> Credential {
        let signature = self.key.sign(&body.signed_bytes());
        Credential {
            body,
            signature: BASE64.encode(signature.to_bytes()),
        }
    }
}

/// Checks credentials against the relay's public credential key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialVerifier {
    key: VerifyingKey,
}

impl CredentialVerifier {
    /// The verifier from a 32-byte ed25519 public key.
    pub fn from_public_bytes(bytes: &[u8]) -> Result<Self, CredentialError> {
        let public: [u8; 32] = bytes.try_into().map_err(|_| {
            CredentialError::Malformed(format!(
                "a credential public key is 32 bytes, this one is {}",
                bytes.len()
            ))
        })?;
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|_| CredentialError::Malformed("not a valid ed25519 public key".to_owned()))?;
        Ok(Self { key })
    }

    /// The 32-byte public key.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Accepts a credential file's bytes if this relay's key signed them and they
    /// have not expired at `now_ms`, and returns what the credential asserts.
    ///
    /// The signature is checked before anything the body says, so a forged
    /// credential is reported as forged even if it also claims to be expired or of
    /// another format.
    pub fn verify(
        &self,
        file_bytes: &[u8],
        now_ms: i64,
    ) -> Result<CredentialBody, CredentialError> {
        let credential = Credential::from_bytes(file_bytes)?;
        self.check_signature(&credential)?;
        let body = credential.body;
        if body.format != FORMAT {
            return Err(CredentialError::Malformed(format!(
                "credential format {} is not supported (this relay understands {FORMAT})",
                body.format
            )));
        }
        body.check_not_expired(now_ms)?;
        Ok(body)
    }

    fn check_signature(&self, credential: &Credential) -> Result<(), CredentialError> {
        let bytes = BASE64
            .decode(&credential.signature)
            .map_err(|_| CredentialError::BadSignature)?;
        let signature = Signature::from_slice(&bytes).map_err(|_| CredentialError::BadSignature)?;
        // `verify_strict` also refuses malleable signatures and weak keys.
        self.key
            .verify_strict(&credential.body.signed_bytes(), &signature)
            .map_err(|_| CredentialError::BadSignature)
    }
}

fn io_error(path: &Path, err: &std::io::Error) -> CredentialError {
    CredentialError::Io(format!("{}: {err}", path.display()))
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Writes `bytes` to a fresh file only its owner can read (on Unix), synced to disk.
fn write_owner_only(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // Remove a leftover first: the mode below only applies to a newly created file.
    match fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ISSUED: i64 = 1_700_000_000_000;
    const EXPIRES: i64 = ISSUED + 90 * 24 * 3600 * 1000;

    fn courier_body() -> CredentialBody {
        CredentialBody {
            format: FORMAT,
            device_id: "dev_0123456789ab".to_owned(),
            role: Role::Courier,
            store_id: None,
            courier_id: Some("cour_7".to_owned()),
            relay_id: "rly_00112233445566ff".to_owned(),
            relay_addr: "relay.example:4433".to_owned(),
            relay_cert: BASE64.encode(b"not really a certificate"),
            issued_ms: ISSUED,
            expires_ms: EXPIRES,
        }
    }

    fn tamper(file: &[u8], from: &str, to: &str) -> Vec<u8> {
        let text = String::from_utf8(file.to_vec()).unwrap();
        assert!(text.contains(from), "{from} not in {text}");
        text.replacen(from, to, 1).into_bytes()
    }

    #[test]
    fn round_trip_through_file_and_verifier() {
        let issuer = CredentialIssuer::generate();
        let credential = issuer.issue(courier_body());
        let bytes = credential.to_bytes();
        assert_eq!(Credential::from_bytes(&bytes).unwrap(), credential);

        let body = issuer.verifier().verify(&bytes, ISSUED + 1).unwrap();
        assert_eq!(body, courier_body());
        assert_eq!(
            body.identity(),
            DeviceIdentity::courier("dev_0123456789ab", "cour_7")
        );
        assert_eq!(body.relay_cert_der().unwrap(), b"not really a certificate");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.credential");
        credential.save(&path).unwrap();
        assert_eq!(Credential::load(&path).unwrap(), credential);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn file_is_readable_json() {
        let bytes = CredentialIssuer::generate()
            .issue(courier_body())
            .to_bytes();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"role\": \"courier\""), "{text}");
        assert!(text.starts_with("{\n  \"credential\": {"), "{text}");
    }

    #[test]
    fn secret_and_public_bytes_round_trip() {
        let issuer = CredentialIssuer::generate();
        let again = CredentialIssuer::from_secret_bytes(&issuer.secret_bytes()).unwrap();
        assert_eq!(again.verifier(), issuer.verifier());
        let verifier =
            CredentialVerifier::from_public_bytes(&issuer.verifier().public_bytes()).unwrap();
        let bytes = again.issue(courier_body()).to_bytes();
        assert!(verifier.verify(&bytes, ISSUED).is_ok());
        assert!(matches!(
            CredentialIssuer::from_secret_bytes(&[1; 31]),
            Err(CredentialError::Malformed(_))
        ));
        assert!(!format!("{issuer:?}").contains(&format!("{:?}", issuer.secret_bytes())));
    }

    #[test]
    fn tampered_role_is_bad_signature() {
        let issuer = CredentialIssuer::generate();
        let bytes = issuer.issue(courier_body()).to_bytes();
        let forged = tamper(&bytes, "\"courier\"", "\"dispatcher\"");
        assert_eq!(
            issuer.verifier().verify(&forged, ISSUED),
            Err(CredentialError::BadSignature)
        );
    }

    #[test]
    fn tampered_expiry_is_bad_signature() {
        let issuer = CredentialIssuer::generate();
        let bytes = issuer.issue(courier_body()).to_bytes();
        let forged = tamper(&bytes, &EXPIRES.to_string(), &(EXPIRES * 2).to_string());
        assert_eq!(
            issuer.verifier().verify(&forged, EXPIRES + 1),
            Err(CredentialError::BadSignature)
        );
    }

    #[test]
    fn other_key_is_bad_signature() {
        let bytes = CredentialIssuer::generate()
            .issue(courier_body())
            .to_bytes();
        let relay = CredentialIssuer::generate();
        assert_eq!(
            relay.verifier().verify(&bytes, ISSUED),
            Err(CredentialError::BadSignature)
        );
    }

    #[test]
    fn garbled_signature_is_bad_signature() {
        let issuer = CredentialIssuer::generate();
        let mut credential = issuer.issue(courier_body());
        credential.signature = "not base64!".to_owned();
        let verifier = issuer.verifier();
        assert_eq!(
            verifier.verify(&credential.to_bytes(), ISSUED),
            Err(CredentialError::BadSignature)
        );
        credential.signature = BASE64.encode([0u8; 12]);
        assert_eq!(
            verifier.verify(&credential.to_bytes(), ISSUED),
            Err(CredentialError::BadSignature)
        );
    }

    #[test]
    fn expired_is_expired() {
        let issuer = CredentialIssuer::generate();
        let bytes = issuer.issue(courier_body()).to_bytes();
        let verifier = issuer.verifier();
        assert!(verifier.verify(&bytes, EXPIRES - 1).is_ok());
        let err = verifier.verify(&bytes, EXPIRES).unwrap_err();
        assert_eq!(
            err,
            CredentialError::Expired {
                expires_ms: EXPIRES
            }
        );
        let message = err.to_string();
        assert!(message.contains("2024-02-12T22:13:20Z"), "{message}");
        assert!(message.contains("waybill enroll"), "{message}");
    }

    #[test]
    fn forged_and_expired_is_bad_signature() {
        let issuer = CredentialIssuer::generate();
        let bytes = issuer.issue(courier_body()).to_bytes();
        let forged = tamper(&bytes, "\"courier\"", "\"dispatcher\"");
        assert_eq!(
            issuer.verifier().verify(&forged, EXPIRES + 1),
            Err(CredentialError::BadSignature)
        );
    }

    #[test]
    fn unsupported_format_is_malformed() {
        let issuer = CredentialIssuer::generate();
        let mut body = courier_body();
        body.format = 2;
        let bytes = issuer.issue(body).to_bytes();
        assert!(matches!(
            issuer.verifier().verify(&bytes, ISSUED),
            Err(CredentialError::Malformed(_))
        ));
    }

    #[test]
    fn garbage_is_malformed() {
        let verifier = CredentialIssuer::generate().verifier();
        for garbage in [
            &b"\x00\xffnot json"[..],
            b"{}",
            b"{\"credential\": 1, \"signature\": \"\"}",
        ] {
            assert!(
                matches!(
                    verifier.verify(garbage, ISSUED),
                    Err(CredentialError::Malformed(_))
                ),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn unknown_field_is_malformed() {
        let issuer = CredentialIssuer::generate();
        let bytes = issuer.issue(courier_body()).to_bytes();
        let extended = tamper(&bytes, "\"format\": 1,", "\"format\": 1, \"admin\": true,");
        assert!(matches!(
            issuer.verifier().verify(&extended, ISSUED),
            Err(CredentialError::Malformed(_))
        ));
    }

    #[test]
    fn empty_is_missing() {
        let verifier = CredentialIssuer::generate().verifier();
        assert_eq!(verifier.verify(b"", ISSUED), Err(CredentialError::Missing));
        assert_eq!(
            verifier.verify(b" \n", ISSUED),
            Err(CredentialError::Missing)
        );
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Credential::load(&dir.path().join("absent")),
            Err(CredentialError::Missing)
        );
    }

    #[test]
    fn utc_timestamps() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(ISSUED), "2023-11-14T22:13:20Z");
        assert_eq!(utc_timestamp(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(-1), "1969-12-31T23:59:59Z");
    }
}
