//! Challenge-response authentication: `hello` hands out a random challenge, `auth` answers with
//! HMAC-SHA256(authkey, challenge). The authkey itself never travels.

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
}
