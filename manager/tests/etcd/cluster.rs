//! Real etcd servers on loopback for the etcd store's tests: one member, or a cluster of
//! three.
//!
//! Each test starts its own etcd on free loopback ports, with its data in a fresh directory
//! (under `/dev/shm` when there is one, so that etcd's fsyncs cost nothing): tests run in
//! parallel and leave nothing behind. Without an `etcd` program the tests are skipped with a
//! note, unless `AGORA_REQUIRE_ETCD=1` (as `.ci/run` sets), when they fail instead. Shared by
//! the manager's etcd tests and the soak's (`tests/soak_etcd.rs`).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// The command that runs etcd member `name` with its data in `data`, serving clients on
/// loopback port `client_port` and its peers on `peer_port`, in the cluster `initial`
/// (`NAME=PEER-URL,...`). Also used by the benchmark, which starts an etcd of its own.
pub fn member_command(
    name: &str,
    data: &Path,
    client_port: u16,
    peer_port: u16,
    initial: &str,
) -> Command {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut command = Command::new("etcd");
    command
        .arg("--name")
        .arg(name)
        .arg("--data-dir")
        .arg(data)
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
        .args(["--initial-cluster", initial]);
    command
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
        // A member can fail to start for reasons of the machine, not of agora (a port taken
        // between `free_port` and etcd's bind, an election that cannot settle on a saturated
        // machine): a new cluster, on other ports, is started instead, at most twice.
        const TRIES: usize = 3;
        for attempt in 1..=TRIES {
            match Etcd::try_cluster(n) {
                Ok(etcd) => return etcd,
                Err(why) if attempt < TRIES => {
                    eprintln!("starting {n} etcd members failed ({why}); starting them again");
                }
                Err(why) => panic!("{why}"),
            }
        }
        unreachable!("the last try returns or panics")
    }

    fn try_cluster(n: usize) -> Result<Etcd, String> {
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
            etcd.wait_healthy(i)?;
        }
        Ok(etcd)
    }

    fn run_member(&mut self, i: usize) {
        let m = &self.members[i];
        let data = self.dir.path().join(&m.name);
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", m.name)))
            .expect("an etcd log file");
        let child = member_command(&m.name, &data, m.client_port, m.peer_port, &self.initial)
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

    /// Waits until member `i` answers a read through its own endpoint; says why not, with the
    /// end of its log, if it does not within 30 s.
    fn wait_healthy(&self, i: usize) -> Result<(), String> {
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
                return Ok(());
            }
            if Instant::now() >= deadline {
                let log = self
                    .dir
                    .path()
                    .join(format!("{}.log", self.members[i].name));
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                return Err(format!(
                    "etcd member {i} never became healthy; its log ends: {tail:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The `--store` value naming every member, with `prefix`.
    pub fn store(&self, prefix: &str) -> String {
        let hosts: Vec<String> = self.members.iter().map(Member::endpoint).collect();
        format!("etcd://{}/{prefix}", hosts.join(","))
    }

    /// The index of the member that leads now, as the members report it.
    pub fn leader(&self) -> Option<usize> {
        let endpoints: Vec<String> = self.members.iter().map(Member::endpoint).collect();
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &endpoints.join(","), "--dial-timeout=1s"])
            .args(["endpoint", "status", "-w", "simple"])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        // One line a member: "ENDPOINT, ID, VERSION, DB SIZE, IS LEADER, ...".
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.split(", ").nth(4) == Some("true"))?;
        let endpoint = line.split(", ").next()?;
        endpoints.iter().position(|e| e == endpoint)
    }

    /// The keys etcd holds under `under` (a store's keys are under `/PREFIX/`).
    pub fn keys(&self, under: &str) -> Vec<String> {
        let endpoints: Vec<String> = self.members.iter().map(Member::endpoint).collect();
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &endpoints.join(","), "--dial-timeout=2s"])
            .args(["get", "--prefix", "--keys-only", under])
            .output()
            .expect("run etcdctl");
        assert!(out.status.success(), "etcdctl get failed: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
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
