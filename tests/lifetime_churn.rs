//! Short-lived worker processes do not leave their objects behind (`PROTOCOL.md`, section 3.2):
//! 2,000 workers each create an unnamed dict, lock and queue (and every tenth a named dict),
//! then half of them exit and the other half are SIGKILLed. Afterwards the manager holds the
//! named dicts and nothing else. Before object lifetimes, all 6,000 unnamed objects stayed.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use agora::{Client, Manager, Process};

const WORKERS: usize = 2_000;
/// Workers alive at once.
const IN_FLIGHT: usize = 16;

/// One worker: creates its objects, tells the parent, then exits or waits to be killed.
fn work(manager_address: &agora::Address, authkey: &[u8], i: usize, mut told: UnixStream) {
    let client = Client::connect(manager_address, authkey).expect("connect");
    let d = client.dict::<String, i64>().expect("dict");
    d.set("worker", &(i as i64)).expect("set");
    let lock = client.lock().expect("lock");
    // Killed holding it, for half of the killed ones: the lock goes all the same.
    let guard = (i % 4 == 1).then(|| lock.acquire().expect("acquire"));
    let q = client.queue::<i64>(0).expect("queue");
    q.put(&(i as i64)).expect("put");
    if i % 10 == 0 {
        let named = client
            .dict_named::<String, i64>(&format!("kept-{i}"))
            .expect("named dict");
        named.set("by", &(i as i64)).expect("set");
    }
    told.write_all(b"!").expect("tell the parent");
    if i % 2 == 1 {
        // Waits for the parent's SIGKILL.
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }
    drop(guard);
}

#[test]
fn two_thousand_workers_half_killed_leave_only_their_named_objects() {
    let manager = Manager::spawn().expect("spawn a manager");
    let address = manager.address().clone();
    let authkey = manager.authkey().to_vec();
    let mut running: Vec<(usize, Process, UnixStream)> = Vec::new();
    let started = Instant::now();
    for i in 0..WORKERS {
        if running.len() == IN_FLIGHT {
            finish(running.remove(0));
        }
        let (ours, theirs) = UnixStream::pair().expect("a socket pair");
        let (address, authkey) = (&address, &authkey);
        let process = Process::spawn(move || work(address, authkey, i, theirs)).expect("fork");
        ours.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        running.push((i, process, ours));
    }
    for worker in running.drain(..) {
        finish(worker);
    }
    eprintln!("{WORKERS} workers in {:?}", started.elapsed());

    let client = manager.client();
    // A closed connection is noticed by the manager's side of it a moment later.
    let deadline = Instant::now() + Duration::from_secs(20);
    let left = loop {
        let left = client.objects().expect("objects");
        if left.iter().all(|o| o.name.is_some()) || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let unnamed: Vec<_> = left.iter().filter(|o| o.name.is_none()).collect();
    assert!(
        unnamed.is_empty(),
        "{} unnamed objects outlived their workers, for instance {:?}",
        unnamed.len(),
        unnamed.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(left.len(), WORKERS / 10, "one named dict per tenth worker");
    for i in (0..WORKERS).step_by(10) {
        let named = client
            .dict_named::<String, i64>(&format!("kept-{i}"))
            .expect("the named dict");
        assert_eq!(named.get("by").expect("get"), Some(i as i64));
    }
}

/// Waits for worker `i` to say its objects exist; kills the odd ones; reaps it.
fn finish((i, mut process, mut told): (usize, Process, UnixStream)) {
    let mut byte = [0];
    told.read_exact(&mut byte)
        .unwrap_or_else(|e| panic!("worker {i} never reported: {e}"));
    if i % 2 == 1 {
        process.kill().expect("SIGKILL");
    }
    let status = process.join().expect("join");
    if i % 2 == 0 {
        assert!(status.success(), "worker {i}: {status:?}");
    }
}
