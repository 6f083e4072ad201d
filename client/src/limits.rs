//! The manager's limits that an operator may read and change while it runs (the admin method
//! `limits`, `PROTOCOL.md`, section 4.2).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Client, Error, Result};

/// The limits of a running manager that may change while it runs, as [`Client::limits`] reads
/// them.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagerLimits {
    /// Most connections served at once; past it a new one is told `LimitError`.
    pub max_connections: u64,
    /// Most calls one connection may have parked.
    pub max_in_flight: u64,
    /// Most bytes of replies one connection may leave unread before the manager stops reading
    /// its requests.
    pub max_output_bytes: u64,
    /// How long a new connection has to authenticate.
    pub auth_timeout: Duration,
}

/// Changes for [`Client::set_limits`]: the limits given are changed, the others kept.
///
/// ```
/// use agora_client::LimitChanges;
/// let changes = LimitChanges {
///     max_connections: Some(500),
///     ..LimitChanges::default()
/// };
/// assert_eq!(changes.max_in_flight, None);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitChanges {
    /// A new [`ManagerLimits::max_connections`] (at least 1). Lowering it below the
    /// connections open closes none of them: new ones are refused until fewer are open.
    pub max_connections: Option<u64>,
    /// A new [`ManagerLimits::max_in_flight`] (at least 1), for calls parked from then on.
    pub max_in_flight: Option<u64>,
    /// A new [`ManagerLimits::max_output_bytes`] (at least 1).
    pub max_output_bytes: Option<u64>,
    /// A new [`ManagerLimits::auth_timeout`] (more than 0), for connections accepted from
    /// then on.
    pub auth_timeout: Option<Duration>,
}

/// `limits`'s answer on the wire: seconds as a float.
#[derive(Deserialize)]
struct Wire {
    max_connections: Option<u64>,
    max_in_flight: Option<u64>,
    max_output_bytes: Option<u64>,
    auth_timeout: Option<f64>,
}

/// A new value in `limits`'s map: a count, or seconds.
#[derive(Serialize)]
#[serde(untagged)]
enum Number {
    Count(u64),
    Seconds(f64),
}

impl Wire {
    /// The answer as [`ManagerLimits`]; a limit missing from it is a manager this client does
    /// not understand.
    fn into_limits(self) -> Result<ManagerLimits> {
        let missing =
            |name: &str| Error::Protocol(format!("the manager's limits answer lacks {name}"));
        let auth_timeout = self.auth_timeout.ok_or_else(|| missing("auth_timeout"))?;
        Ok(ManagerLimits {
            max_connections: self
                .max_connections
                .ok_or_else(|| missing("max_connections"))?,
            max_in_flight: self.max_in_flight.ok_or_else(|| missing("max_in_flight"))?,
            max_output_bytes: self
                .max_output_bytes
                .ok_or_else(|| missing("max_output_bytes"))?,
            auth_timeout: Duration::try_from_secs_f64(auth_timeout)
                .map_err(|e| Error::Protocol(format!("the manager's auth_timeout: {e}")))?,
        })
    }
}

impl Client {
    /// The manager's limits that may change while it runs.
    ///
    /// Reserved to admin connections: a client connected with the worker authkey of a manager
    /// that has an admin authkey gets `PermissionError`
    /// ([`Error::is`]`(ErrorName::PermissionError)`).
    ///
    /// ```no_run
    /// # let client = agora_client::Client::from_env()?;
    /// let limits = client.limits()?;
    /// println!("{} connections at most", limits.max_connections);
    /// # Ok::<(), agora_client::Error>(())
    /// ```
    pub fn limits(&self) -> Result<ManagerLimits> {
        let none: [u8; 0] = [];
        self.call::<_, Wire>("limits", &none)?.into_limits()
    }

    /// Changes the limits `changes` gives, all or none (a value the manager refuses, as below
    /// its minimum, fails with `ValueError` and changes nothing), and gives the limits now in
    /// force. Reserved to admin connections, as [`Client::limits`] is.
    ///
    /// ```no_run
    /// # let client = agora_client::Client::from_env()?;
    /// use agora_client::LimitChanges;
    /// let now = client.set_limits(&LimitChanges {
    ///     max_in_flight: Some(1024),
    ///     ..LimitChanges::default()
    /// })?;
    /// assert_eq!(now.max_in_flight, 1024);
    /// # Ok::<(), agora_client::Error>(())
    /// ```
    pub fn set_limits(&self, changes: &LimitChanges) -> Result<ManagerLimits> {
        // A map, which the manager reads by name (a serialized struct would be an array).
        let counts = [
            ("max_connections", changes.max_connections),
            ("max_in_flight", changes.max_in_flight),
            ("max_output_bytes", changes.max_output_bytes),
        ];
        let mut map: BTreeMap<&str, Number> = counts
            .into_iter()
            .filter_map(|(name, n)| Some((name, Number::Count(n?))))
            .collect();
        if let Some(d) = changes.auth_timeout {
            map.insert("auth_timeout", Number::Seconds(d.as_secs_f64()));
        }
        self.call::<_, Wire>("limits", &(map,))?.into_limits()
    }
}
