//! Issuing device credentials (`waybill enroll`).
//!
//! An operator enrols a device by asking the relay for a credential naming the
//! device's role and the courier or store it acts for; the credential file is then
//! copied onto the device. Everything is checked here, before signing, because a
//! signed credential cannot be corrected afterwards, only replaced.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use waybill_core::credential::{Credential, CredentialBody, FORMAT};
use waybill_core::identity::Role;

use crate::keys::{RelayKeys, random_hex};

/// Longest id accepted, so ids stay reasonable in logs, indexes and file names.
const MAX_ID_LEN: usize = 128;

/// What the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollRequest {
    /// The device's role.
    pub role: Role,
    /// The courier a courier device belongs to (`--courier`).
    pub courier: Option<String>,
    /// The store of a store device (`--store`); a courier may be based at one.
    pub store: Option<String>,
    /// The device id; `None` generates `dev_` and 12 hex digits.
    pub device_id: Option<String>,
    /// Where devices reach this relay (`host:port`), written into the credential.
    pub relay_addr: String,
    /// How long the credential is valid, in milliseconds (the CLI defaults to 90 days).
    pub valid_for_ms: i64,
    /// The issue time, in Unix milliseconds.
    pub now_ms: i64,
}

/// Why a credential was not issued. The messages speak in command-line flags,
/// since an operator typing `waybill enroll` reads them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollError {
    /// A courier device without `--courier`.
    #[error("a courier device needs the courier it belongs to: pass --courier <id>")]
    CourierMissing,
    /// A store device without `--store`.
    #[error("a store device needs its store: pass --store <id>")]
    StoreMissing,
    /// An id given for a role that does not take it.
    #[error("a {role} device does not take --{flag}")]
    NotForRole {
        /// The requested role.
        role: Role,
        /// The flag given (`courier` or `store`).
        flag: &'static str,
    },
    /// An id that is empty, too long, or contains whitespace or control characters.
    #[error("--{flag} must be 1 to {MAX_ID_LEN} characters without spaces or control characters")]
    BadId {
        /// The flag (`courier`, `store` or `device-id`).
        flag: &'static str,
    },
    /// The relay address is not `host:port`.
    #[error("the relay address {0:?} is not host:port (for example relay.example.com:4433)")]
    BadRelayAddr(String),
    /// A validity that is not positive, or ends past the representable time.
    #[error("the validity must be a positive duration, got {0} ms")]
    BadValidity(i64),
}

/// Signs a credential for the device `req` describes, after checking that the
/// role and the ids given fit together.
pub fn enroll(keys: &RelayKeys, req: &EnrollRequest) -> Result<Credential, EnrollError> {
    let (store_id, courier_id) = role_ids(req)?;
    let device_id = match &req.device_id {
        Some(id) => checked_id(id, "device-id")?.to_owned(),
        None => format!("dev_{}", random_hex(6)),
    };
    check_relay_addr(&req.relay_addr)?;
    let expires_ms = expiry(req.now_ms, req.valid_for_ms)?;
    let credential = keys.issuer.issue(CredentialBody {
        format: FORMAT,
        device_id,
        role: req.role,
        store_id,
        courier_id,
        relay_id: keys.relay_id.clone(),
        relay_addr: req.relay_addr.clone(),
        relay_cert: BASE64.encode(&keys.cert_der),
        issued_ms: req.now_ms,
        expires_ms,
    });
    // Device id and role only: courier and store ids stay out of the logs.
    tracing::info!(
        device_id = %credential.body.device_id,
        role = %req.role,
        expires_ms,
        "issued device credential"
    );
    Ok(credential)
}

/// The store and courier ids the role requires, refusing those it does not take.
fn role_ids(req: &EnrollRequest) -> Result<(Option<String>, Option<String>), EnrollError> {
    let store = req
        .store
        .as_deref()
        .map(|id| checked_id(id, "store"))
        .transpose()?;
    let courier = req
        .courier
        .as_deref()
        .map(|id| checked_id(id, "courier"))
        .transpose()?;
    let not_for_role = |flag| EnrollError::NotForRole {
        role: req.role,
        flag,
    };
    match req.role {
        Role::Courier => {
            let courier = courier.ok_or(EnrollError::CourierMissing)?;
            Ok((store.map(str::to_owned), Some(courier.to_owned())))
        }
        Role::Store => {
            if courier.is_some() {
                return Err(not_for_role("courier"));
            }
            let store = store.ok_or(EnrollError::StoreMissing)?;
            Ok((Some(store.to_owned()), None))
        }
        Role::Dispatcher => match (store, courier) {
            (Some(_), _) => Err(not_for_role("store")),
            (_, Some(_)) => Err(not_for_role("courier")),
            (None, None) => Ok((None, None)),
        },
    }
}

fn checked_id<'a>(id: &'a str, flag: &'static str) -> Result<&'a str, EnrollError> {
    let fits = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.chars().any(|c| c.is_whitespace() || c.is_control());
    if fits {
        Ok(id)
    } else {
        Err(EnrollError::BadId { flag })
    }
}

/// `host:port` with a non-empty host and a non-zero port (`[::1]:4433` for IPv6).
fn check_relay_addr(addr: &str) -> Result<(), EnrollError> {
    let bad = || EnrollError::BadRelayAddr(addr.to_owned());
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port_ok = port.parse::<u16>().is_ok_and(|port| port != 0);
    if host.is_empty() || host.chars().any(char::is_whitespace) || !port_ok {
        return Err(bad());
    }
    Ok(())
}

fn expiry(now_ms: i64, valid_for_ms: i64) -> Result<i64, EnrollError> {
    if valid_for_ms <= 0 {
        return Err(EnrollError::BadValidity(valid_for_ms));
    }
    now_ms
        .checked_add(valid_for_ms)
        .ok_or(EnrollError::BadValidity(valid_for_ms))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::keys::load_or_create;
    use waybill_core::DeviceIdentity;
    use waybill_core::credential::CredentialError;

    const NOW: i64 = 1_700_000_000_000;
    const NINETY_DAYS: i64 = 90 * 24 * 3600 * 1000;

    fn relay() -> (tempfile::TempDir, RelayKeys) {
        let dir = tempfile::tempdir().unwrap();
        let (keys, _) = load_or_create(dir.path(), None, &[]).unwrap();
        (dir, keys)
    }

    fn request(role: Role, courier: Option<&str>, store: Option<&str>) -> EnrollRequest {
        EnrollRequest {
            role,
            courier: courier.map(str::to_owned),
            store: store.map(str::to_owned),
            device_id: None,
            relay_addr: "relay.example:4433".to_owned(),
            valid_for_ms: NINETY_DAYS,
            now_ms: NOW,
        }
    }

    /// Issues, then checks the credential file the way the relay will.
    fn issue_and_verify(keys: &RelayKeys, req: &EnrollRequest) -> CredentialBody {
        let credential = enroll(keys, req).unwrap();
        let body = keys
            .issuer
            .verifier()
            .verify(&credential.to_bytes(), NOW)
            .unwrap();
        assert_eq!(body.relay_id, keys.relay_id);
        assert_eq!(body.relay_cert_der().unwrap(), keys.cert_der);
        assert_eq!(body.relay_addr, "relay.example:4433");
        assert_eq!(body.expires_ms, NOW + NINETY_DAYS);
        body
    }

    #[test]
    fn courier_credential() {
        let (_dir, keys) = relay();
        let body = issue_and_verify(&keys, &request(Role::Courier, Some("cour_7"), None));
        assert!(body.device_id.starts_with("dev_") && body.device_id.len() == 16);
        assert_eq!(
            body.identity(),
            DeviceIdentity::courier(body.device_id.clone(), "cour_7")
        );
    }

    #[test]
    fn courier_may_be_based_at_a_store() {
        let (_dir, keys) = relay();
        let body = issue_and_verify(&keys, &request(Role::Courier, Some("c"), Some("st_1")));
        assert_eq!(body.store_id.as_deref(), Some("st_1"));
    }

    #[test]
    fn store_credential() {
        let (_dir, keys) = relay();
        let mut req = request(Role::Store, None, Some("st_1"));
        req.device_id = Some("tablet-front".to_owned());
        let body = issue_and_verify(&keys, &req);
        assert_eq!(
            body.identity(),
            DeviceIdentity::store("tablet-front", "st_1")
        );
    }

    #[test]
    fn dispatcher_credential() {
        let (_dir, keys) = relay();
        let body = issue_and_verify(&keys, &request(Role::Dispatcher, None, None));
        assert_eq!(
            body.identity(),
            DeviceIdentity::dispatcher(body.device_id.clone())
        );
    }

    #[test]
    fn missing_ids_are_refused() {
        let (_dir, keys) = relay();
        let refused = |req| enroll(&keys, &req).unwrap_err();
        assert_eq!(
            refused(request(Role::Courier, None, Some("st_1"))),
            EnrollError::CourierMissing
        );
        assert_eq!(
            refused(request(Role::Store, None, None)),
            EnrollError::StoreMissing
        );
        assert!(
            refused(request(Role::Courier, None, None))
                .to_string()
                .contains("--courier")
        );
    }

    #[test]
    fn ids_a_role_does_not_take_are_refused() {
        let (_dir, keys) = relay();
        let refused = |req| enroll(&keys, &req).unwrap_err();
        let err = refused(request(Role::Dispatcher, None, Some("st_1")));
        assert_eq!(err.to_string(), "a dispatcher device does not take --store");
        assert_eq!(
            refused(request(Role::Dispatcher, Some("c"), None)),
            EnrollError::NotForRole {
                role: Role::Dispatcher,
                flag: "courier"
            }
        );
        assert_eq!(
            refused(request(Role::Store, Some("c"), Some("st_1"))),
            EnrollError::NotForRole {
                role: Role::Store,
                flag: "courier"
            }
        );
    }

    #[test]
    fn bad_ids_are_refused() {
        let (_dir, keys) = relay();
        for bad in ["", "two words", "tab\there", "new\nline", &"x".repeat(129)] {
            assert_eq!(
                enroll(&keys, &request(Role::Courier, Some(bad), None)),
                Err(EnrollError::BadId { flag: "courier" }),
                "{bad:?}"
            );
            let mut req = request(Role::Dispatcher, None, None);
            req.device_id = Some(bad.to_owned());
            assert_eq!(
                enroll(&keys, &req),
                Err(EnrollError::BadId { flag: "device-id" })
            );
        }
    }

    #[test]
    fn bad_relay_address_and_validity_are_refused() {
        let (_dir, keys) = relay();
        for addr in [
            "relay.example",
            ":4433",
            "relay.example:0",
            "relay.example:http",
        ] {
            let mut req = request(Role::Dispatcher, None, None);
            req.relay_addr = addr.to_owned();
            assert!(
                matches!(enroll(&keys, &req), Err(EnrollError::BadRelayAddr(_))),
                "{addr}"
            );
        }
        let mut req = request(Role::Dispatcher, None, None);
        req.relay_addr = "[::1]:4433".to_owned();
        assert!(enroll(&keys, &req).is_ok());
        for valid_for_ms in [0, -1, i64::MAX] {
            req.valid_for_ms = valid_for_ms;
            assert_eq!(
                enroll(&keys, &req),
                Err(EnrollError::BadValidity(valid_for_ms))
            );
        }
    }

    #[test]
    fn credential_expires_after_its_validity() {
        let (_dir, keys) = relay();
        let credential = enroll(&keys, &request(Role::Dispatcher, None, None)).unwrap();
        assert_eq!(
            keys.issuer
                .verifier()
                .verify(&credential.to_bytes(), NOW + NINETY_DAYS),
            Err(CredentialError::Expired {
                expires_ms: NOW + NINETY_DAYS
            })
        );
    }
}
