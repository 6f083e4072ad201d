//! Real managers serving an etcd store for the etcd store's tests; the etcd members
//! themselves are [`crate::cluster`]'s. Each test starts its own managers with
//! `--store etcd://...` on a prefix of its own.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use agora_client::{Address, Client};

pub use crate::cluster::{available, Etcd};

/// The manager program, built with the etcd store.
pub const BIN: &str = env!("CARGO_BIN_EXE_agora-manager");

/// The authkey every manager of these tests shares.
pub const KEY_HEX: &str = "00112233445566778899aabbccddeeff";

/// The key as bytes.
pub fn key() -> Vec<u8> {
    hex::decode(KEY_HEX).expect("hex")
}

/// A manager process serving an etcd store, killed when dropped.
pub struct Manager {
    child: Child,
    /// Where it listens.
    pub address: Address,
    /// The run its ready line named.
    pub run: String,
    _dir: tempfile::TempDir,
}

impl Manager {
    /// Starts a manager on a Unix socket with `--store store` and `extra` flags.
    pub fn start(store: &str, extra: &[&str]) -> Manager {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let socket = dir.path().join("m.sock");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("a log file");
        let mut child = Command::new(BIN)
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .args(["--store", store])
            .args(extra)
            .env("AGORA_AUTHKEY", KEY_HEX)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start agora-manager");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("a ready line");
        assert!(
            line.starts_with("agora-manager ready"),
            "no ready line: {line:?}; log: {}",
            std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
        );
        let run = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("run="))
            .expect("run= on the ready line")
            .to_owned();
        Manager {
            child,
            address: format!("unix:{}", socket.display())
                .parse()
                .expect("an address"),
            run,
            _dir: dir,
        }
    }

    /// A client of this manager.
    pub fn client(&self) -> Client {
        Client::connect(&self.address, &key()).expect("connect to the manager")
    }

    /// Kills it with SIGKILL: no shutdown, no lease revoked.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.kill();
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
