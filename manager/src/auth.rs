//! Challenge-response authentication: `hello` hands out a random challenge, `auth` answers with
//! HMAC-SHA256(authkey, challenge). The authkey itself never travels.
//!
//! A manager may have two keys: the authkey its workers use, and an admin authkey for the
//! operator. `auth` does not say which key it answers with: the manager checks the digest
//! against both, and the key that matches gives the connection its [`Role`].

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Bytes in a challenge.
pub const CHALLENGE_LEN: usize = 32;

/// A fresh random challenge.
pub fn challenge() -> std::io::Result<[u8; CHALLENGE_LEN]> {
    let mut c = [0u8; CHALLENGE_LEN];
    getrandom::fill(&mut c).map_err(|e| std::io::Error::other(format!("no randomness: {e}")))?;
    Ok(c)
}

/// True when `digest` is HMAC-SHA256(authkey, challenge). Constant time in the digest.
pub fn verify(authkey: &[u8], challenge: &[u8], digest: &[u8]) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(authkey) else {
        return false;
    };
    mac.update(challenge);
    mac.verify_slice(digest).is_ok()
}

/// Authkeys shorter than this many bytes are weak: `agora-manager` warns about them, or
/// refuses them with `--require-strong-authkey`.
pub const STRONG_AUTHKEY_BYTES: usize = 16;

/// The methods only an admin connection may call: stopping the manager, looking at every
/// connection's peer, process and holdings, and reading or changing the limits at run time
/// (`PROTOCOL.md`, section 2).
pub const ADMIN_METHODS: &[&str] = &["shutdown", "stats", "limits"];

/// What an authenticated connection may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    /// Everything but [`ADMIN_METHODS`], and a `delete` only of objects nobody else holds.
    /// A connection's role until it authenticates.
    #[default]
    Worker,
    /// Everything.
    Admin,
}

/// The role `digest` proves for `challenge`: [`Role::Admin`] when it was made with
/// `admin_key`, or with `authkey` when there is no admin key (every connection is then
/// admin); [`Role::Worker`] when made with `authkey` beside an admin key; `None` otherwise.
///
/// Both keys are always checked, each in constant time, so the time taken does not tell
/// which one matched.
///
/// ```
/// use agora_manager::auth::{digest, role, Role};
/// let challenge = [7u8; 32];
/// let worker = digest(b"worker key", &challenge);
/// assert_eq!(role(b"worker key", Some(b"admin key"), &challenge, &worker), Some(Role::Worker));
/// assert_eq!(role(b"worker key", None, &challenge, &worker), Some(Role::Admin));
/// ```
pub fn role(
    authkey: &[u8],
    admin_key: Option<&[u8]>,
    challenge: &[u8],
    digest: &[u8],
) -> Option<Role> {
    let worker = verify(authkey, challenge, digest);
    let admin = admin_key.map(|key| verify(key, challenge, digest));
    match admin {
        None if worker => Some(Role::Admin),
        Some(true) => Some(Role::Admin),
        Some(false) if worker => Some(Role::Worker),
        _ => None,
    }
}

/// HMAC-SHA256(authkey, challenge): what a client sends to `auth`.
pub fn digest(authkey: &[u8], challenge: &[u8]) -> Vec<u8> {
    match Hmac::<Sha256>::new_from_slice(authkey) {
        Ok(mut mac) => {
            mac.update(challenge);
            mac.finalize().into_bytes().to_vec()
        }
        // HMAC accepts keys of any length; this arm cannot be reached.
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_verifies_and_a_wrong_one_does_not() {
        let c = challenge().unwrap();
        let d = digest(b"key", &c);
        assert!(verify(b"key", &c, &d));
        assert!(!verify(b"other", &c, &d));
        assert!(!verify(b"key", &c, &d[..31]));
    }

    #[test]
    fn the_key_that_matches_gives_the_role() {
        let c = challenge().unwrap();
        let (worker, admin) = (digest(b"w", &c), digest(b"a", &c));
        assert_eq!(role(b"w", Some(b"a"), &c, &admin), Some(Role::Admin));
        assert_eq!(role(b"w", Some(b"a"), &c, &worker), Some(Role::Worker));
        assert_eq!(role(b"w", None, &c, &worker), Some(Role::Admin));
        assert_eq!(role(b"w", None, &c, &admin), None);
        assert_eq!(role(b"w", Some(b"a"), &c, &digest(b"x", &c)), None);
    }
}
