//! Real etcd servers and real managers for the etcd store's tests.
//!
//! Each test starts its own etcd (one member, or a cluster of three) on free loopback ports,
//! with its data in a fresh directory (under `/dev/shm` when there is one, so that etcd's
//! fsyncs cost nothing), and its own managers with `--store etcd://...`: tests run in parallel
//! and leave nothing behind. Without an `etcd` program the tests are skipped with a note,
//! unless `AGORA_REQUIRE_ETCD=1` (as `.ci/run` sets), when they fail instead.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agora_client::{Address, Client};

/// The manager program, built with the etcd store.
pub const BIN: &str = env!("CARGO_BIN_EXE_agora-manager");

/// The authkey every manager of these tests shares.
pub const KEY_HEX: &str = "00112233445566778899aabbccddeeff";

/// The key as bytes.
pub fn key() -> Vec<u8> {
    hex::decode(KEY_HEX).expect("hex")
}

/// True when etcd can be run here; prints why a test is skipped otherwise.
pub fn available() -> bool {
    let found = Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("AGORA_REQUIRE_ETCD").is_none_or(|v| v != "1"),
            "AGORA_REQUIRE_ETCD=1 but no etcd program is on PATH (Debian: apt-get install etcd-server)"
        );
        eprintln!("skipped: no etcd program on PATH (Debian: apt-get install etcd-server)");
    }
    found
}

/// A free TCP port on loopback (free when asked; etcd binds it right after).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    l.local_addr().expect("local address").port()
}

fn data_root() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("agora-etcd-")
            .tempdir_in(shm)
        {
            return dir;
        }
    }
    tempfile::Builder::new()
        .prefix("agora-etcd-")
        .tempdir()
        .expect("a temporary directory")
}

/// One etcd member.
pub struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Member {
    /// `127.0.0.1:PORT` of its client endpoint.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }
}

/// An etcd cluster of one or more members on loopback, stopped when dropped.
pub struct Etcd {
    pub members: Vec<Member>,
    dir: tempfile::TempDir,
    initial: String,
}

impl Etcd {
    /// A one-member etcd.
    pub fn start() -> Etcd {
        Etcd::cluster(1)
    }

    /// A cluster of `n` members, each started and answering.
    pub fn cluster(n: usize) -> Etcd {
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd {
            members,
            dir: data_root(),
            initial,
        };
        for i in 0..n {
            etcd.run_member(i);
        }
        for i in 0..n {
            etcd.wait_healthy(i);
        }
        etcd
    }

    fn run_member(&mut self, i: usize) {
        let m = &self.members[i];
        let data = self.dir.path().join(&m.name);
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", m.name)))
            .expect("an etcd log file");
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new("etcd")
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-state", "new", "--initial-cluster-token"])
            .arg(self.dir.path().file_name().expect("a name"))
            // Quick elections: a stopped member's place is taken within a second or so.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.members[i].child = Some(child);
    }

    /// Waits until member `i` answers a read through its own endpoint.
    fn wait_healthy(&self, i: usize) {
        let endpoint = self.members[i].endpoint();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args([
                    "--endpoints",
                    &endpoint,
                    "--dial-timeout=1s",
                    "--command-timeout=2s",
                ])
                .args(["endpoint", "health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd member {i} never became healthy"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The `--store` value naming every member, with `prefix`.
    pub fn store(&self, prefix: &str) -> String {
        let hosts: Vec<String> = self.members.iter().map(Member::endpoint).collect();
        format!("etcd://{}/{prefix}", hosts.join(","))
    }

    /// Stops member `i` with SIGKILL.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }
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
