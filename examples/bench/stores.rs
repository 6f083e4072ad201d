//! The two stores side by side: the same calls on a manager keeping its objects in memory and
//! on one keeping them in etcd (`--store etcd://...`), interleaved round by round.
//!
//! The etcd figures are those of a one-member etcd on this machine with its data under
//! `/dev/shm` (no disk flush): the floor of what etcd costs, before a network between members
//! and a disk that syncs are added. A call on an etcd object is at least one etcd round trip
//! (a write: one Raft commit), so the ratio, not the absolute rate, is what carries over.
//!
//! Needs the crate's feature `etcd` and an `etcd` program on PATH; skipped with a note
//! otherwise.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agora::{Client, Manager, StoreSpec};

// The manager's etcd tests start their members the same way.
#[path = "../../manager/tests/etcd/cluster.rs"]
#[allow(dead_code)]
mod cluster;

use crate::harness::{per_second, rate, Samples, Servers};
use crate::progress::Progress;
use crate::report::{Group, Report};

type BoxError = Box<dyn std::error::Error>;

const GROUP: Group = Group {
    title: "stores: the same calls on the memory store and the etcd store (ratio vs memory)",
    unit: "ops/s",
};

/// How long each contender runs per round.
const SLICE: Duration = Duration::from_millis(500);

/// Pipeline depth of the pipelined row.
const DEPTH: usize = 16;

/// A one-member etcd and a manager serving it, started before the benchmark's threads.
pub struct EtcdManager {
    etcd: Child,
    _dir: tempfile::TempDir,
    manager: Manager,
}

impl Drop for EtcdManager {
    fn drop(&mut self) {
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts etcd and a manager on it; `Ok(None)` (with the reason on stderr) when this build or
/// machine cannot. Forks: call it while the program has no other thread.
pub fn start() -> Result<Option<EtcdManager>, BoxError> {
    if !cfg!(feature = "etcd") {
        eprintln!("stores: skipped: built without the feature `etcd` (--features etcd)");
        return Ok(None);
    }
    let found = Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("stores: skipped: no etcd program on PATH (Debian: etcd-server)");
        return Ok(None);
    }
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("agora-bench-etcd-")
            .tempdir_in(shm)?
    } else {
        tempfile::Builder::new()
            .prefix("agora-bench-etcd-")
            .tempdir()?
    };
    let (client_port, peer_port) = (free_port()?, free_port()?);
    let etcd = cluster::member_command(
        "bench",
        &dir.path().join("data"),
        client_port,
        peer_port,
        &format!("bench=http://127.0.0.1:{peer_port}"),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()?;
    let spec: StoreSpec = format!("etcd://127.0.0.1:{client_port}/bench").parse()?;
    // etcd takes a moment to serve: wait for its port before starting the manager.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", client_port)).is_err() {
        if Instant::now() > deadline {
            return Err("stores: etcd did not start within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let manager = loop {
        match Manager::builder().store(spec.clone()).spawn() {
            Ok(manager) => break manager,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return Err(format!("stores: no manager on etcd: {e}").into()),
        }
    };
    Ok(Some(EtcdManager {
        etcd,
        _dir: dir,
        manager,
    }))
}

/// The measurements [`run`] makes, for the progress bar.
pub fn steps(rounds: usize) -> u64 {
    (rounds * WORKLOADS.len() * 2) as u64
}

/// The workloads, each run on both stores.
const WORKLOADS: [&str; 5] = [
    "dict.get",
    "dict.set",
    "dict.get, pipelined 16 deep",
    "lock acquire + release",
    "queue put + get",
];

/// Calls per second of workload `w` on `client`'s manager.
fn measure(client: &Client, w: usize) -> Result<f64, BoxError> {
    let dict = client.dict_named::<String, i64>("bench-stores")?;
    dict.set("k", &1)?;
    match w {
        0 => per_second(SLICE, || Ok(dict.get("k").map(drop)?)),
        1 => per_second(SLICE, || Ok(dict.set("k", &2)?)),
        2 => Ok(per_second(SLICE, || {
            let mut p = client.pipeline();
            for _ in 0..DEPTH {
                p.add(dict.get_cmd("k"));
            }
            Ok(p.execute()?.check()?)
        })? * DEPTH as f64),
        3 => {
            let lock = client.lock_named("bench-stores-lock")?;
            per_second(SLICE, || Ok(lock.acquire()?.unlock()?))
        }
        _ => {
            let queue = client.queue_named::<u64>("bench-stores-queue", 0)?;
            per_second(SLICE, || {
                queue.put(&7)?;
                Ok(queue.get().map(drop)?)
            })
        }
    }
}

/// Runs the section and adds its rows to `report`; returns the lines for the summary.
pub fn run(
    servers: &Servers,
    etcd: Option<&EtcdManager>,
    rounds: usize,
    report: &mut Report,
    progress: &Progress,
) -> Result<Vec<String>, BoxError> {
    let Some(etcd) = etcd else {
        return Ok(Vec::new());
    };
    let memory = servers.client(&servers.agora_unix)?;
    let on_etcd = etcd.manager.client();
    let mut samples = vec![(Samples::default(), Samples::default()); WORKLOADS.len()];
    for round in 0..rounds {
        for (w, (m, e)) in samples.iter_mut().enumerate() {
            let section = format!("stores/{}", WORKLOADS[w]);
            m.0.push(progress.measure(&section, "memory", round, || measure(&memory, w))?);
            e.0.push(progress.measure(&section, "etcd", round, || measure(on_etcd, w))?);
        }
    }
    let mut lines = Vec::new();
    for (w, (m, e)) in samples.iter().enumerate() {
        let base = m.median();
        report.row(
            &GROUP,
            "unix",
            1,
            &format!("memory: {}", WORKLOADS[w]),
            m,
            None,
        );
        report.row(
            &GROUP,
            "unix",
            1,
            &format!("etcd: {}", WORKLOADS[w]),
            e,
            Some(base),
        );
        lines.push(format!(
            "stores, {}: memory {}/s, etcd {}/s ({:.4}x)",
            WORKLOADS[w],
            rate(base),
            rate(e.median()),
            e.median() / base
        ));
    }
    Ok(lines)
}
