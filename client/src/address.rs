//! Where a manager listens: `unix:/path/to/manager.sock`, `tcp:host:port`, or
//! `tls:host:port` (TCP with TLS).
//!
//! The same spelling is used on the manager's command line, in `AGORA_ADDRESS` and inside
//! tokens, so one parser serves them all. [`Addresses`] is a list of them separated by commas
//! (`unix:/a.sock,tcp:host:5555`): managers serving the same objects, which a client moves
//! between when one fails.

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

/// The schemes an address starts with: what tells a new entry of a list from a comma inside
/// a Unix socket path.
const SCHEMES: [&str; 3] = ["unix:", "tcp:", "tls:"];

/// The addresses of one or more managers that serve the same objects (one store, one run id),
/// in the order a client tries them: never empty, no address twice.
///
/// Written as the addresses separated by commas, with optional spaces around each:
/// `unix:/run/agora/a.sock, tcp:10.0.0.2:5555`. This is the spelling of
/// [`AGORA_ADDRESS`](crate::ENV_ADDRESS) too. A single address is a list of one, so every
/// string that parses as an [`Address`] parses as `Addresses`; that includes a Unix socket
/// path with a comma in it, as long as no part after a comma starts with `unix:`, `tcp:` or
/// `tls:`.
///
/// See [Reconnection](crate::Client#reconnection) for how a client moves from one to the next.
///
/// ```
/// use agora_client::{Address, Addresses};
/// let list: Addresses = "unix:/run/a.sock, tcp:10.0.0.2:5555".parse().unwrap();
/// assert_eq!(list.as_slice()[1], Address::Tcp("10.0.0.2:5555".into()));
/// assert_eq!(list.to_string(), "unix:/run/a.sock,tcp:10.0.0.2:5555");
/// assert!("unix:/a.sock,,tcp:h:1".parse::<Addresses>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Addresses(Vec<Address>);

impl Addresses {
    /// The list of `addresses`, in this order. Fails when it is empty or names an address
    /// twice.
    pub fn new(addresses: impl IntoIterator<Item = Address>) -> Result<Addresses, Error> {
        let list: Vec<Address> = addresses.into_iter().collect();
        let written = || {
            list.iter()
                .map(Address::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        if list.is_empty() {
            return Err(bad("", "no address: give at least one manager address"));
        }
        for (i, address) in list.iter().enumerate() {
            if list[..i].contains(address) {
                return Err(bad(&written(), format!("{address} is listed twice")));
            }
        }
        Ok(Addresses(list))
    }

    /// The addresses, in the order they are tried.
    pub fn as_slice(&self) -> &[Address] {
        &self.0
    }

    /// The first address.
    pub fn first(&self) -> &Address {
        // Never empty: `new` and `from_str` refuse an empty list.
        &self.0[0]
    }
}

impl From<Address> for Addresses {
    fn from(address: Address) -> Addresses {
        Addresses(vec![address])
    }
}

/// Splits a list at its commas into the entries as written (spaces around them trimmed); a
/// part that does not start with a scheme continues the Unix socket path before it.
fn split_entries(input: &str) -> Result<Vec<String>, Error> {
    let mut entries: Vec<String> = Vec::new();
    for (n, part) in input.split(',').enumerate() {
        let trimmed = part.trim();
        let continues_path = entries.last().is_some_and(|e| e.starts_with("unix:"))
            && !trimmed.is_empty()
            && !SCHEMES.iter().any(|s| trimmed.starts_with(s));
        match entries.last_mut() {
            Some(last) if continues_path => {
                last.push(',');
                last.push_str(part.trim_end());
            }
            _ if trimmed.is_empty() => {
                return Err(bad(
                    input,
                    format!(
                        "entry {} of the list is empty: separate addresses with single \
                         commas, as unix:/PATH,tcp:HOST:PORT",
                        n + 1
                    ),
                ))
            }
            _ => entries.push(trimmed.to_owned()),
        }
    }
    Ok(entries)
}

impl FromStr for Addresses {
    type Err = Error;

    fn from_str(input: &str) -> Result<Addresses, Error> {
        let entries = split_entries(input)?;
        let mut list = Vec::with_capacity(entries.len());
        for entry in &entries {
            match entry.parse::<Address>() {
                Ok(address) => list.push(address),
                Err(Error::Address { reason, .. }) if entries.len() > 1 => {
                    return Err(bad(input, format!("in {entry:?}: {reason}")))
                }
                Err(e) => return Err(e),
            }
        }
        Addresses::new(list).map_err(|e| match e {
            Error::Address { reason, .. } => bad(input, reason),
            other => other,
        })
    }
}

impl fmt::Display for Addresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, address) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{address}")?;
        }
        Ok(())
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
    #[test]
    fn lists_parse_in_order_with_spaces() {
        let list: Addresses = " unix:/tmp/a.sock , tcp:127.0.0.1:1,tls:[::1]:443 "
            .parse()
            .unwrap();
        let want = [
            Address::Unix("/tmp/a.sock".into()),
            Address::Tcp("127.0.0.1:1".into()),
            Address::Tls("[::1]:443".into()),
        ];
        assert_eq!(list.as_slice(), &want);
        assert_eq!(list.first(), &want[0]);
        assert_eq!(
            list.to_string(),
            "unix:/tmp/a.sock,tcp:127.0.0.1:1,tls:[::1]:443"
        );
        assert_eq!(list.to_string().parse::<Addresses>().unwrap(), list);
        let one: Addresses = "tcp:h:5".parse().unwrap();
        assert_eq!(one, Addresses::from(Address::Tcp("h:5".into())));
    }

    #[test]
    fn a_comma_in_a_socket_path_stays_in_the_path() {
        let list: Addresses = "unix:/tmp/a,b.sock".parse().unwrap();
        assert_eq!(list.as_slice(), &[Address::Unix("/tmp/a,b.sock".into())]);
        let two: Addresses = "unix:/tmp/a,b.sock,tcp:h:1".parse().unwrap();
        assert_eq!(
            two.as_slice(),
            &[
                Address::Unix("/tmp/a,b.sock".into()),
                Address::Tcp("h:1".into())
            ]
        );
        assert_eq!(two.to_string().parse::<Addresses>().unwrap(), two);
    }

    #[test]
    fn bad_lists_say_what_is_wrong() {
        let cases = [
            ("", "entry 1 of the list is empty"),
            (" ", "entry 1 of the list is empty"),
            ("unix:/a,,tcp:h:1", "entry 2 of the list is empty"),
            ("unix:/a, ,tcp:h:1", "entry 2 of the list is empty"),
            ("tcp:h:1,", "entry 2 of the list is empty"),
            (",tcp:h:1", "entry 1 of the list is empty"),
            ("tcp:h:1,h:2", "in \"h:2\": expected unix:"),
            ("unix:/a,tcp:h", "in \"tcp:h\": a TCP address needs a port"),
            ("tcp:h:1, tcp:h:1", "tcp:h:1 is listed twice"),
            ("tcp:h", "needs a port"),
        ];
        for (input, expected) in cases {
            let err = input.parse::<Addresses>().unwrap_err().to_string();
            assert!(err.contains(expected), "{input:?}: {err}");
            assert!(err.contains(&format!("{input:?}")), "{input:?}: {err}");
        }
        assert!(Addresses::new([]).is_err());
    }
}
