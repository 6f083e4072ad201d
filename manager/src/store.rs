//! Where the objects live: the seam between the registry and storage.
//!
//! The registry ([`crate::registry`]) hands out ids, counts holders and routes calls; what an
//! object *is* lives in a store:
//! - **memory** (the default, and the fastest): each object is a Rust value in this process
//!   ([`crate::objects`]); it lives and dies with the manager.
//! - **etcd** (`--store etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`, cargo feature `etcd`): every
//!   object is a set of keys in an etcd cluster (the module `etcd`), so that several managers, on
//!   several machines, serve the same objects, and the objects outlive any one manager.
//!
//! A manager is given a [`StoreSpec`] (parsed from `--store`), opens it once at start-up
//! ([`Store::open`]) and hands the open [`Store`] to its registry.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

#[cfg(feature = "etcd")]
pub mod etcd;

/// How long a manager's etcd lease lives without a keep-alive, unless configured otherwise
/// (`--store-lease-seconds`): when a manager dies, what its connections held (locks,
/// permits, places in a line) is released this long after its last keep-alive.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// The key prefix every object of an etcd store lives under, unless the store address gives
/// one (`etcd://HOST:PORT/PREFIX`): managers with the same endpoints and prefix serve the same
/// objects; another prefix is another, separate set of objects.
pub const DEFAULT_PREFIX: &str = "/agora/";

/// Which store to use, as `--store` names it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreSpec {
    /// Objects in this process's memory.
    #[default]
    Memory,
    /// Objects in etcd.
    Etcd(EtcdSpec),
}

/// Where an etcd store is, and how it keeps what connections hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSpec {
    /// The cluster's client endpoints, `http://HOST:PORT`: the etcd client balances over them
    /// and moves on when one fails.
    pub endpoints: Vec<String>,
    /// The key prefix of this set of objects, ending in `/`.
    pub prefix: String,
    /// The lease's time to live ([`DEFAULT_LEASE_TTL`]).
    pub lease_ttl: Duration,
}

/// A `--store` value that is not `memory` nor `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad store {given:?}: {why} (expected `memory` or `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`)"
)]
pub struct StoreSpecError {
    given: String,
    why: String,
}

impl FromStr for StoreSpec {
    type Err = StoreSpecError;

    fn from_str(s: &str) -> Result<StoreSpec, StoreSpecError> {
        let given = s.trim();
        let fail = |why: &str| StoreSpecError {
            given: given.to_owned(),
            why: why.to_owned(),
        };
        if given == "memory" {
            return Ok(StoreSpec::Memory);
        }
        let Some(rest) = given.strip_prefix("etcd://") else {
            return Err(fail("unknown store"));
        };
        let (hosts, prefix) = match rest.split_once('/') {
            Some((hosts, prefix)) => (hosts, prefix.trim_matches('/')),
            None => (rest, ""),
        };
        let mut endpoints = Vec::new();
        for host in hosts.split(',').map(str::trim) {
            if host.is_empty() {
                return Err(fail("an empty endpoint in the list"));
            }
            let port_ok = host
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !port_ok {
                return Err(fail(&format!("endpoint {host:?} is not HOST:PORT")));
            }
            endpoints.push(format!("http://{host}"));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || "._-/".contains(c);
        if !prefix.chars().all(allowed) {
            return Err(fail(
                "a prefix may hold letters, digits, '.', '_', '-' and '/' only",
            ));
        }
        let prefix = if prefix.is_empty() {
            DEFAULT_PREFIX.to_owned()
        } else {
            format!("/{prefix}/")
        };
        Ok(StoreSpec::Etcd(EtcdSpec {
            endpoints,
            prefix,
            lease_ttl: DEFAULT_LEASE_TTL,
        }))
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::Memory => f.write_str("memory"),
            StoreSpec::Etcd(spec) => {
                let hosts: Vec<&str> = spec
                    .endpoints
                    .iter()
                    .map(|e| e.trim_start_matches("http://"))
                    .collect();
                write!(
                    f,
                    "etcd://{}{}",
                    hosts.join(","),
                    spec.prefix.trim_end_matches('/')
                )
            }
        }
    }
}

/// An open store, as the registry uses it.
#[derive(Clone, Default)]
pub enum Store {
    /// Objects in memory.
    #[default]
    Memory,
    /// Objects in etcd, through this manager's connection to it.
    #[cfg(feature = "etcd")]
    Etcd(std::sync::Arc<etcd::EtcdStore>),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Store::Memory => f.write_str("Store::Memory"),
            #[cfg(feature = "etcd")]
            Store::Etcd(store) => write!(f, "Store::Etcd({})", store.describe()),
        }
    }
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The manager was built without the etcd store.
    #[error(
        "this agora-manager was built without the etcd store: rebuild it with the cargo \
         feature `etcd` (`cargo build -p agora-manager --features etcd`, which needs protoc)"
    )]
    NoEtcd,
    /// etcd did not answer, or refused.
    #[error("cannot open the etcd store at {at}: {why}")]
    Etcd {
        /// The endpoints.
        at: String,
        /// What went wrong.
        why: String,
    },
}

impl Store {
    /// Opens the store `spec` names: connects to etcd, takes this manager's lease and keeps it
    /// alive. Memory needs nothing. Must run inside the manager's (multi-thread) runtime.
    pub async fn open(spec: &StoreSpec) -> Result<Store, OpenError> {
        match spec {
            StoreSpec::Memory => Ok(Store::Memory),
            #[cfg(feature = "etcd")]
            StoreSpec::Etcd(spec) => Ok(Store::Etcd(etcd::EtcdStore::open(spec).await?)),
            #[cfg(not(feature = "etcd"))]
            StoreSpec::Etcd(_) => Err(OpenError::NoEtcd),
        }
    }

    /// The run every manager of this store reports in `hello`: for etcd the store's own,
    /// shared by every manager serving it, so that a client moving from one to another keeps
    /// its proxies; `None` for memory, where each manager is its own run.
    pub fn run(&self) -> Option<crate::Run> {
        match self {
            Store::Memory => None,
            #[cfg(feature = "etcd")]
            Store::Etcd(store) => Some(store.run().clone()),
        }
    }

    /// What `stats` and the start-up line say of the store.
    pub fn describe(&self) -> String {
        match self {
            Store::Memory => "memory".to_owned(),
            #[cfg(feature = "etcd")]
            Store::Etcd(store) => store.describe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_specs_parse() {
        assert_eq!("memory".parse::<StoreSpec>(), Ok(StoreSpec::Memory));
        let StoreSpec::Etcd(spec) = "etcd://127.0.0.1:2379, h2:2380/jobs/".parse().unwrap() else {
            panic!("not etcd");
        };
        assert_eq!(spec.endpoints, ["http://127.0.0.1:2379", "http://h2:2380"]);
        assert_eq!(spec.prefix, "/jobs/");
        let StoreSpec::Etcd(spec) = "etcd://[::1]:2379".parse().unwrap() else {
            panic!("not etcd");
        };
        assert_eq!(spec.prefix, DEFAULT_PREFIX);
        assert_eq!(spec.endpoints, ["http://[::1]:2379"]);
        for bad in [
            "etcd://",
            "etcd://h",
            "etcd://h:0",
            "etcd://h:1,,h:2",
            "redis://h:1",
            "mem",
        ] {
            let err = bad.parse::<StoreSpec>().unwrap_err().to_string();
            assert!(err.contains(bad.trim()), "{err}");
        }
    }

    #[test]
    fn a_spec_prints_as_it_parses() {
        for s in ["memory", "etcd://a:1,b:2/agora", "etcd://a:1/x/y"] {
            assert_eq!(s.parse::<StoreSpec>().unwrap().to_string(), s);
        }
    }
}
