//! [`ConnectOptions`]: how long connecting, the handshake and calls may take, and which CA
//! a TLS manager's certificate must be signed by.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// The environment variable overriding [`ConnectOptions::connect_timeout`], in seconds.
pub const ENV_CONNECT_TIMEOUT: &str = "AGORA_CONNECT_TIMEOUT";
/// The environment variable overriding [`ConnectOptions::handshake_timeout`], in seconds.
pub const ENV_HANDSHAKE_TIMEOUT: &str = "AGORA_HANDSHAKE_TIMEOUT";
/// The environment variable setting [`ConnectOptions::call_timeout`], in seconds.
pub const ENV_CALL_TIMEOUT: &str = "AGORA_CALL_TIMEOUT";
/// The environment variable setting [`ConnectOptions::tls_ca_file`], a path.
pub const ENV_TLS_CA: &str = "AGORA_TLS_CA";

/// Time limits of a client, and its TLS trust. [`Client::connect`](crate::Client::connect)
/// takes them from the environment ([`ConnectOptions::from_env`]);
/// [`Client::connect_with`](crate::Client::connect_with) takes them as given.
///
/// In the environment each time limit is a number of seconds (`2`, `0.5`); `0` or `none`
/// means no limit.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// How long opening a TCP connection may take (10 s by default; a Unix socket connects at
    /// once or fails). [`ENV_CONNECT_TIMEOUT`].
    pub connect_timeout: Option<Duration>,
    /// How long the peer may take to answer `hello` and `auth` (10 s by default): a listener
    /// that accepts and never answers is not a manager. [`ENV_HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Option<Duration>,
    /// The deadline of every call that the manager does not park (none by default): a manager
    /// that does not answer within it (stopped, hung) fails the call with
    /// [`Error::Timeout`] and closes the connection. Calls that may wait (a blocking `get`,
    /// `acquire`, `wait`) are bounded by their own timeouts, or by
    /// [`Client::run_within`](crate::Client::run_within). [`ENV_CALL_TIMEOUT`].
    pub call_timeout: Option<Duration>,
    /// For a `tls:` address: a PEM file of the CA certificates the manager's certificate must
    /// be signed by (none by default: the system's trusted roots). The certificate is always
    /// verified, for the host named in the address. [`ENV_TLS_CA`].
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: Some(Duration::from_secs(10)),
            handshake_timeout: Some(Duration::from_secs(10)),
            call_timeout: None,
            tls_ca_file: None,
        }
    }
}

impl ConnectOptions {
    /// The defaults, each replaced by its environment variable when that is set.
    pub fn from_env() -> Result<ConnectOptions> {
        ConnectOptions::from_values(|var| std::env::var(var).ok())
    }

    /// [`ConnectOptions::from_env`] with the variables read by `get` (tests set no real
    /// variables: the environment is shared by every test thread).
    pub(crate) fn from_values(get: impl Fn(&str) -> Option<String>) -> Result<ConnectOptions> {
        let mut options = ConnectOptions::default();
        for (var, field) in [
            (ENV_CONNECT_TIMEOUT, &mut options.connect_timeout),
            (ENV_HANDSHAKE_TIMEOUT, &mut options.handshake_timeout),
            (ENV_CALL_TIMEOUT, &mut options.call_timeout),
        ] {
            if let Some(value) = get(var) {
                *field = parse_seconds(&value).map_err(|reason| Error::Env { var, reason })?;
            }
        }
        match get(ENV_TLS_CA) {
            Some(path) if path.trim().is_empty() => {
                return Err(Error::Env {
                    var: ENV_TLS_CA,
                    reason: "is empty: set it to the path of a PEM file of CA certificates, \
                             or unset it to trust the system's roots"
                        .to_owned(),
                })
            }
            Some(path) => options.tls_ca_file = Some(PathBuf::from(path)),
            None => {}
        }
        Ok(options)
    }

    /// The options with this connect timeout.
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The options with this handshake timeout.
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The options with this call deadline.
    pub fn call_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The options trusting the CA certificates of this PEM file (and only them) for `tls:`
    /// addresses; `None`: the system's roots.
    pub fn tls_ca_file(mut self, path: Option<PathBuf>) -> Self {
        self.tls_ca_file = path;
        self
    }
}

/// A number of seconds, `0` or `none` for no limit.
fn parse_seconds(value: &str) -> Result<Option<Duration>, String> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let seconds: f64 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number of seconds (or none)"))?;
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("{value:?} is not a number of seconds >= 0"));
    }
    Ok((seconds > 0.0).then(|| Duration::from_secs_f64(seconds.min(1e9))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_overrides_the_defaults() {
        let none = ConnectOptions::from_values(|_| None).unwrap();
        assert_eq!(none, ConnectOptions::default());
        let set = ConnectOptions::from_values(|var| match var {
            ENV_CONNECT_TIMEOUT => Some("0.5".into()),
            ENV_HANDSHAKE_TIMEOUT => Some("none".into()),
            ENV_CALL_TIMEOUT => Some(" 3 ".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(set.connect_timeout, Some(Duration::from_millis(500)));
        assert_eq!(set.handshake_timeout, None);
        assert_eq!(set.call_timeout, Some(Duration::from_secs(3)));
        assert_eq!(set.tls_ca_file, None);
        let ca = ConnectOptions::from_values(|var| (var == ENV_TLS_CA).then(|| "/ca.pem".into()));
        assert_eq!(ca.unwrap().tls_ca_file, Some(PathBuf::from("/ca.pem")));
        let empty = ConnectOptions::from_values(|var| (var == ENV_TLS_CA).then(|| " ".into()));
        assert!(empty.unwrap_err().to_string().contains(ENV_TLS_CA));
        let zero = ConnectOptions::from_values(|_| Some("0".into())).unwrap();
        assert_eq!(zero.connect_timeout, None);
        for bad in ["-1", "soon", "nan", ""] {
            let err = ConnectOptions::from_values(|var| {
                (var == ENV_CALL_TIMEOUT).then(|| bad.to_owned())
            })
            .unwrap_err();
            assert!(err.to_string().contains(ENV_CALL_TIMEOUT), "{err}");
        }
    }
}
