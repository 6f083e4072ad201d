//! Where a manager listens: `unix:/path/to/manager.sock`, `tcp:host:port`, or
//! `tls:host:port` (TCP with TLS).
//!
//! The same spelling is used on the manager's command line, in `AGORA_ADDRESS` and inside
//! tokens, so one parser serves them all.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::Error;

/// The address of a manager.
///
/// Parse one with [`str::parse`]; [`Display`](fmt::Display) writes it back in the same form, so
/// an address survives a trip through an environment variable or a token unchanged.
///
/// ```
/// use agora_client::Address;
/// let a: Address = "tcp:127.0.0.1:5555".parse().unwrap();
/// assert_eq!(a, Address::Tcp("127.0.0.1:5555".into()));
/// assert_eq!(a.to_string(), "tcp:127.0.0.1:5555");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A Unix domain socket, by path. The fastest transport between processes of one machine.
    Unix(PathBuf),
    /// A TCP endpoint as `host:port` (`[::1]:5555` for IPv6), resolved when connecting.
    Tcp(String),
    /// A TCP endpoint whose manager speaks TLS (`agora-manager --tls-cert --tls-key`), as
    /// `host:port`. The manager's certificate must be valid for the host, as a DNS name or an
    /// IP address, and signed by a trusted CA: the system's, or the one of
    /// [`ConnectOptions::tls_ca_file`](crate::ConnectOptions::tls_ca_file) (`AGORA_TLS_CA`).
    Tls(String),
}

fn bad(input: &str, reason: impl Into<String>) -> Error {
    Error::Address {
        input: input.to_owned(),
        reason: reason.into(),
    }
}

/// Checks `host:port` after `scheme:`: a non-empty host and a port that fits 16 bits.
fn check_host_port(input: &str, scheme: &str, rest: &str) -> Result<(), Error> {
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(bad(
            input,
            format!("a TCP address needs a port: {scheme}:HOST:PORT"),
        ));
    };
    if host.is_empty() || host == "[]" {
        return Err(bad(input, format!("the host is empty: {scheme}:HOST:PORT")));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad(
            input,
            format!("an IPv6 host must be written in brackets: {scheme}:[::1]:PORT"),
        ));
    }
    port.parse::<u16>().map(drop).map_err(|_| {
        bad(
            input,
            format!("the port {port:?} is not a number from 0 to 65535"),
        )
    })
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(input: &str) -> Result<Address, Error> {
        if let Some(path) = input.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad(input, "the socket path is empty: unix:/PATH"));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = input.strip_prefix("tcp:") {
            check_host_port(input, "tcp", rest)?;
            return Ok(Address::Tcp(rest.to_owned()));
        }
        if let Some(rest) = input.strip_prefix("tls:") {
            check_host_port(input, "tls", rest)?;
            return Ok(Address::Tls(rest.to_owned()));
        }
        Err(bad(
            input,
            "expected unix:/path/to/manager.sock, tcp:HOST:PORT or tls:HOST:PORT",
        ))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Tcp(host_port) => write!(f, "tcp:{host_port}"),
            Address::Tls(host_port) => write!(f, "tls:{host_port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in [
            "unix:/tmp/agora-x/manager.sock",
            "unix:relative.sock",
            "tcp:127.0.0.1:5555",
            "tcp:localhost:0",
            "tcp:[::1]:80",
            "tls:manager.example:5555",
            "tls:[::1]:443",
        ] {
            let a: Address = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
        }
        assert_eq!(
            "unix:/a b/s".parse::<Address>().unwrap(),
            Address::Unix("/a b/s".into())
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let cases = [
            ("", "expected unix:"),
            ("/tmp/x.sock", "expected unix:"),
            ("unix:", "path is empty"),
            ("tcp:127.0.0.1", "needs a port"),
            ("tcp::80", "host is empty"),
            ("tcp:host:http", "not a number"),
            ("tcp:host:70000", "not a number"),
            ("tcp:::1:80", "brackets"),
            ("tls:localhost", "needs a port: tls:HOST:PORT"),
            ("tls::80", "host is empty"),
            ("tls:host:99999", "not a number"),
        ];
        for (input, expected) in cases {
            let err = input.parse::<Address>().unwrap_err().to_string();
            assert!(err.contains(expected), "{input:?}: {err}");
            assert!(err.contains(&format!("{input:?}")), "{input:?}: {err}");
        }
    }
}
