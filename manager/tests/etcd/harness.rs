//! Real managers serving an etcd store for the etcd store's tests; the etcd members
//! themselves are [`crate::cluster`]'s. Each test starts its own managers with
//! `--store etcd://...` on a prefix of its own.

use agora_client::{Address, Client};

pub use crate::cluster::{available, Etcd};
pub use crate::real_binary::key;
use crate::real_binary::ManagerProcess;

/// A manager process serving an etcd store ([`ManagerProcess`] with `--store`), killed when
/// dropped.
pub struct Manager {
    process: Option<ManagerProcess>,
    /// Where it listens.
    pub address: Address,
    /// The run its ready line named.
    pub run: String,
}

impl Manager {
    /// Starts a manager on a Unix socket with `--store store` and `extra` flags.
    pub fn start(store: &str, extra: &[&str]) -> Manager {
        let args: Vec<&str> = ["--store", store]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        let mut process = ManagerProcess::start(&args);
        let line = process.ready_line();
        let run = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("run="))
            .unwrap_or_else(|| panic!("no run= on the ready line {line:?}"))
            .to_owned();
        Manager {
            address: format!("unix:{}", process.socket().display())
                .parse()
                .expect("an address"),
            process: Some(process),
            run,
        }
    }

    /// A client of this manager. A manager that cannot be reached is named with its log:
    /// one that stopped by itself (its lease lost, say) says why there.
    pub fn client(&self) -> Client {
        Client::connect(&self.address, &key()).unwrap_or_else(|e| {
            let log = self.process.as_ref().map(ManagerProcess::log);
            panic!(
                "connect to the manager: {e}\nits log:\n{}",
                log.unwrap_or_default()
            )
        })
    }

    /// Kills it with SIGKILL: no shutdown, no lease revoked.
    pub fn kill(&mut self) {
        drop(self.process.take());
    }
}

/// A prefix no other test uses, so that tests sharing nothing else never meet in etcd.
pub fn fresh_prefix(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

impl Manager {
    /// A raw, authenticated protocol connection to this manager, for what the client hides
    /// (a connection dropped while its call waits).
    pub fn raw(&self) -> agora_proto::testing::RawClient {
        let mut raw = agora_proto::testing::RawClient::connect(&self.address.to_string())
            .expect("connect to the manager");
        raw.authenticate(&key());
        raw
    }
}

/// Two managers on one fresh one-member etcd, with `extra` flags; `None` (the test skips,
/// with a note) when etcd cannot be run here.
pub fn two(test: &str, extra: &[&str]) -> Option<(Etcd, Manager, Manager)> {
    if !available() {
        return None;
    }
    let etcd = Etcd::start();
    let store = etcd.store(&fresh_prefix(test));
    let a = Manager::start(&store, extra);
    let b = Manager::start(&store, extra);
    Some((etcd, a, b))
}
