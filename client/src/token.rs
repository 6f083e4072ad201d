//! Tokens: a shared object written as a string, to pass to another process (on its command
//! line, in a file, through another shared object).
//!
//! The format is `agora:2:<kind>:<id>@<address>#<run>`, for example
//! `agora:2:list:7@unix:/tmp/agora-Ab12/manager.sock#0b5c3c3e-6f1e-4c8a-9d2b-3f4e5a6b7c8d`.
//! `2` is the token format version, `kind` and `id` are those of the object, `address` is where
//! its manager listens and `run` the id of the manager's run that made the object
//! (`PROTOCOL.md`, section 3.1). A manager restarted at the same address gives out the same
//! ids again: the run is what tells a token of the old run from an object of the new one. A
//! token holds no secret: the process that redeems it needs the authkey to connect, as any
//! client does.

use std::fmt;
use std::str::FromStr;

use crate::address::Address;
use crate::error::Error;
use crate::run::ManagerRun;

/// The start of every token of this format.
const PREFIX: &str = "agora:2:";

/// The start of a token of the first format, which named no run.
const PREFIX_V1: &str = "agora:1:";

/// A shared object named by its manager's address and run, its kind and its id.
///
/// ```
/// use agora_client::Token;
/// let text = "agora:2:list:7@unix:/tmp/x/manager.sock#0b5c3c3e-6f1e-4c8a-9d2b-3f4e5a6b7c8d";
/// let t: Token = text.parse().unwrap();
/// assert_eq!((t.kind.as_str(), t.id), ("list", 7));
/// assert_eq!(t.run, "0b5c3c3e-6f1e-4c8a-9d2b-3f4e5a6b7c8d");
/// assert_eq!(t.to_string(), text);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Token {
    /// The object's kind (`"dict"`, `"list"`, ...).
    pub kind: String,
    /// The object's id.
    pub id: u64,
    /// Where the manager listens.
    pub address: Address,
    /// The id of the manager's run the object belongs to (a hyphenated lowercase uuid).
    pub run: String,
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

    /// Checks that the token belongs to `run`, the run of the manager at `address`.
    pub(crate) fn expect_run(&self, run: &ManagerRun, address: &Address) -> Result<(), Error> {
        if self.run == run.id {
            // Same run, same manager, whichever of its addresses each side uses.
            return Ok(());
        }
        Err(run.mismatch(&self.run, &self.address.to_string(), &address.to_string()))
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}:{}@{}#{}",
            self.kind, self.id, self.address, self.run
        )
    }
}

impl FromStr for Token {
    type Err = Error;

    fn from_str(token: &str) -> Result<Token, Error> {
        let bad = |reason: &str| Error::Token {
            token: token.to_owned(),
            reason: reason.to_owned(),
        };
        if token.starts_with(PREFIX_V1) {
            return Err(bad(
                "it is a token of an older version of agora (format 1), which does not name \
                 the manager's run, so it cannot be told from an object of a restarted \
                 manager: take a new token from the proxy with this version (proxy.token())",
            ));
        }
        let rest = token
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("expected agora:2:KIND:ID@ADDRESS#RUN"))?;
        // The address may contain ':', '@' and '#' (a socket path can); the kind, the id and
        // the run cannot.
        let (object, rest) = rest
            .split_once('@')
            .ok_or_else(|| bad("missing '@' before the manager's address"))?;
        let (address, run) = rest
            .rsplit_once('#')
            .ok_or_else(|| bad("missing '#' before the manager's run"))?;
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
        if !ManagerRun::is_valid_id(run) {
            return Err(bad(
                "the run after '#' must be a lowercase hyphenated uuid, as hello reports it",
            ));
        }
        Ok(Token {
            kind: kind.to_owned(),
            id,
            address,
            run: run.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "0b5c3c3e-6f1e-4c8a-9d2b-3f4e5a6b7c8d";

    #[test]
    fn round_trip_with_awkward_paths() {
        for s in [
            "agora:2:dict:0@unix:/tmp/x/manager.sock",
            "agora:2:namespace:18446744073709551615@tcp:127.0.0.1:4000",
            "agora:2:list:7@unix:/tmp/a@b:c/m.sock",
            "agora:2:list:7@unix:/tmp/a#b/m.sock",
        ] {
            let s = format!("{s}#{RUN}");
            let t: Token = s.parse().unwrap();
            assert_eq!(t.run, RUN);
            assert_eq!(t.to_string(), s);
        }
        let t: Token = format!("agora:2:list:7@unix:/tmp/a#b/m.sock#{RUN}")
            .parse()
            .unwrap();
        assert_eq!(t.address.to_string(), "unix:/tmp/a#b/m.sock");
    }

    #[test]
    fn rejects_with_a_reason() {
        let cases = [
            ("agora:3:list:7@unix:/x#R", "expected agora:2"),
            ("agora:2:list:7", "missing '@'"),
            ("agora:2:list:7@unix:/x", "missing '#'"),
            ("agora:2:list@unix:/x#R", "KIND:ID"),
            ("agora:2:List:7@unix:/x#R", "lowercase"),
            ("agora:2:list:-1@unix:/x#R", "non-negative"),
            ("agora:2:list:7@ftp:/x#R", "expected unix:"),
            ("agora:2:list:7@unix:/x#not-a-run", "hyphenated uuid"),
            ("agora:1:list:7@unix:/x", "older version of agora"),
        ];
        for (token, expected) in cases {
            let token = token.replace("#R", &format!("#{RUN}"));
            let err = token.parse::<Token>().unwrap_err().to_string();
            assert!(err.contains(expected), "{token}: {err}");
        }
        let err = "agora:1:list:7@unix:/x"
            .parse::<Token>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("take a new token"), "{err}");
        let t: Token = format!("agora:2:list:7@unix:/x#{RUN}").parse().unwrap();
        assert!(t.expect_kind("list").is_ok());
        let err = t.expect_kind("dict").unwrap_err().to_string();
        assert!(err.contains("names a list, not a dict"), "{err}");
    }

    #[test]
    fn another_run_is_an_unknown_object_naming_both() {
        let t: Token = format!("agora:2:list:7@unix:/x#{RUN}").parse().unwrap();
        let here: Address = "unix:/x".parse().unwrap();
        let same = ManagerRun {
            id: RUN.to_owned(),
            started: 0,
        };
        assert!(t.expect_run(&same, &here).is_ok());
        let other = ManagerRun {
            id: "11111111-2222-4333-8444-555555555555".to_owned(),
            started: 0,
        };
        let err = t.expect_run(&other, &here).unwrap_err();
        assert!(err.is(agora_proto::ErrorName::UnknownObjectError), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "UnknownObjectError: this proxy belongs to run {RUN}; the manager at unix:/x is \
                 run {}, started at 1970-01-01 00:00:00 UTC; the object no longer exists",
                other.id
            )
        );
        let there: Address = "tcp:127.0.0.1:9".parse().unwrap();
        let err = t.expect_run(&other, &there).unwrap_err().to_string();
        for part in [RUN, other.id.as_str(), "unix:/x", "tcp:127.0.0.1:9"] {
            assert!(err.contains(part), "{part} in {err}");
        }
    }
}
