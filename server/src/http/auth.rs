//! Admin tokens for the HTTP API (`waybill admin-token --data DIR`).
//!
//! A token is `wbt_` and 64 random hex digits. Only its SHA-256 is kept, one per
//! line in `DATA/admin-tokens` (`<sha256 hex> <issued ms>`), so the data
//! directory never holds a usable token. The relay reads the file at every
//! request: a token issued while it runs works at once, and revocation
//! (`waybill admin-token --data DIR --revoke-all`, which removes every earlier
//! token before printing a new one) takes effect at the next request.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::keys::random_hex;

/// The file of token hashes in the data directory.
pub const TOKENS_FILE: &str = "admin-tokens";
/// Every admin token starts with this.
pub const TOKEN_PREFIX: &str = "wbt_";

/// Reading or writing the token file failed.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct TokenFileError {
    /// The token file.
    pub path: PathBuf,
    /// What went wrong.
    #[source]
    pub source: std::io::Error,
}

/// Issue a new admin token for the relay in `data`: store its hash and return
/// the token (shown once; it cannot be recovered from the file). With
/// `revoke_existing`, every token issued before stops working.
pub fn issue(data: &Path, now_ms: i64, revoke_existing: bool) -> Result<String, TokenFileError> {
    let path = data.join(TOKENS_FILE);
    let err = |source| TokenFileError {
        path: path.clone(),
        source,
    };
    let token = format!("{TOKEN_PREFIX}{}", random_hex(32));
    let mut kept = if revoke_existing {
        String::new()
    } else {
        match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(err(e)),
        }
    };
    if !kept.is_empty() && !kept.ends_with('\n') {
        kept.push('\n');
    }
    kept.push_str(&format!("{} {now_ms}\n", hash_hex(&token)));
    // Write beside and rename, so a reader never sees half a file.
    let tmp = data.join(format!("{TOKENS_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(kept.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(err)?;
    Ok(token)
}

/// Whether `token` is one of the relay's admin tokens.
pub fn verify(data: &Path, token: &str) -> Result<bool, TokenFileError> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Ok(false);
    }
    let path = data.join(TOKENS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(TokenFileError { path, source }),
    };
    let wanted = hash_hex(token);
    // Hashes are compared, not tokens: timing reveals nothing usable.
    Ok(text
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|hash| hash == wanted))
}

fn hash_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_hash_and_can_all_be_revoked() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!verify(dir.path(), "wbt_nothing").unwrap());
        let first = issue(dir.path(), 1, false).unwrap();
        let second = issue(dir.path(), 2, false).unwrap();
        assert!(verify(dir.path(), &first).unwrap());
        assert!(verify(dir.path(), &second).unwrap());
        let file = std::fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
        assert!(
            !file.contains(&first[TOKEN_PREFIX.len()..]),
            "only hashes are stored"
        );
        assert!(!verify(dir.path(), "wbt_0000").unwrap());

        let third = issue(dir.path(), 3, true).unwrap();
        assert!(!verify(dir.path(), &first).unwrap());
        assert!(!verify(dir.path(), &second).unwrap());
        assert!(verify(dir.path(), &third).unwrap());
    }
}
