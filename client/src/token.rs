//! Tokens: a shared object written as a string, to pass to another process (on its command
//! line, in a file, through another shared object).
//!
//! The format is `agora:1:<kind>:<id>@<address>`, for example
//! `agora:1:list:7@unix:/tmp/agora-Ab12/manager.sock`. `1` is the token format version, `kind`
//! and `id` are those of the object, and `address` is where its manager listens. A token holds
//! no secret: the process that redeems it needs the authkey to connect, as any client does.

use std::fmt;
use std::str::FromStr;

use crate::address::Address;
use crate::error::Error;

const PREFIX: &str = "agora:1:";

/// A shared object named by its manager's address, its kind and its id.
///
/// ```
/// use agora_client::Token;
/// let t: Token = "agora:1:list:7@unix:/tmp/x/manager.sock".parse().unwrap();
/// assert_eq!((t.kind.as_str(), t.id), ("list", 7));
/// assert_eq!(t.to_string(), "agora:1:list:7@unix:/tmp/x/manager.sock");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Token {
    /// The object's kind (`"dict"`, `"list"`, ...).
    pub kind: String,
    /// The object's id.
    pub id: u64,
    /// Where the manager listens.
    pub address: Address,
}

impl Token {
    /// Checks that the token names an object of `kind`.
    pub(crate) fn expect_kind(&self, kind: &str) -> Result<(), Error> {
        if self.kind == kind {
            return Ok(());
        }
        Err(Error::Token {
            token: self.to_string(),
            reason: format!("it names a {}, not a {kind}", self.kind),
        })
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}:{}@{}", self.kind, self.id, self.address)
    }
}

impl FromStr for Token {
    type Err = Error;

    fn from_str(token: &str) -> Result<Token, Error> {
        let bad = |reason: &str| Error::Token {
            token: token.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = token
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("expected agora:1:KIND:ID@ADDRESS"))?;
        // The address may contain ':' and '@' (a socket path can), the kind and id cannot.
        let (object, address) = rest
            .split_once('@')
            .ok_or_else(|| bad("missing '@' before the manager's address"))?;
        let (kind, id) = object
            .split_once(':')
            .ok_or_else(|| bad("expected KIND:ID before '@'"))?;
        if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(bad(
                "the kind must be a lowercase word such as list or dict",
            ));
        }
        let id = id
            .parse()
            .map_err(|_| bad("the object id must be a non-negative integer"))?;
        let address = address.parse().map_err(|e: Error| bad(&e.to_string()))?;
        Ok(Token {
            kind: kind.to_owned(),
            id,
            address,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_awkward_paths() {
        for s in [
            "agora:1:dict:0@unix:/tmp/x/manager.sock",
            "agora:1:namespace:18446744073709551615@tcp:127.0.0.1:4000",
            "agora:1:list:7@unix:/tmp/a@b:c/m.sock",
        ] {
            let t: Token = s.parse().unwrap();
            assert_eq!(t.to_string(), s);
        }
    }

    #[test]
    fn rejects_with_a_reason() {
        let cases = [
            ("agora:2:list:7@unix:/x", "expected agora:1"),
            ("agora:1:list:7", "missing '@'"),
            ("agora:1:list@unix:/x", "KIND:ID"),
            ("agora:1:List:7@unix:/x", "lowercase"),
            ("agora:1:list:-1@unix:/x", "non-negative"),
            ("agora:1:list:7@ftp:/x", "expected unix:"),
        ];
        for (token, expected) in cases {
            let err = token.parse::<Token>().unwrap_err().to_string();
            assert!(err.contains(expected), "{token}: {err}");
        }
        let t: Token = "agora:1:list:7@unix:/x".parse().unwrap();
        assert!(t.expect_kind("list").is_ok());
        let err = t.expect_kind("dict").unwrap_err().to_string();
        assert!(err.contains("names a list, not a dict"), "{err}");
    }
}
