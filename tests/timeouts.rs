//! Connect and handshake timeouts, a peer that is not a manager, deadlines on calls.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use agora::{Address, Client, ConnectOptions, Error, Manager};

fn short() -> ConnectOptions {
    ConnectOptions::default()
        .connect_timeout(Some(Duration::from_millis(300)))
        .handshake_timeout(Some(Duration::from_millis(300)))
}

fn tcp(listener: &TcpListener) -> Address {
    format!("tcp:{}", listener.local_addr().unwrap())
        .parse()
        .unwrap()
}

#[test]
fn a_listener_that_never_answers_times_out_in_the_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = tcp(&listener);
    let silent = std::thread::spawn(move || {
        let (socket, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(2));
        drop(socket);
    });
    let started = Instant::now();
    let err = Client::connect_with(&address, b"key", &short()).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("not an agora manager"), "{text}");
    assert!(text.contains("did not answer hello"), "{text}");
    silent.join().unwrap();
}

#[test]
fn a_web_server_is_not_a_manager() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = tcp(&listener);
    let web = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut request = [0u8; 64];
        let _ = socket.read(&mut request);
        let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    });
    let err = Client::connect_with(&address, b"key", &short()).unwrap_err();
    assert!(matches!(err, Error::NotAManager { .. }), "{err:?}");
    assert!(!err.to_string().contains("shut down or stopped"), "{err}");
    web.join().unwrap();
}

/// A manager stopped with SIGSTOP: a call with a deadline fails after it, with a timeout
/// that says so, as does a client with a call deadline; neither hangs.
#[test]
fn a_stopped_manager_is_a_timeout_after_the_deadline() {
    let manager = Manager::spawn().expect("spawn the manager");
    let options = ConnectOptions::default().call_timeout(Some(Duration::from_millis(300)));
    let client = Client::connect_with(manager.address(), manager.authkey(), &options).unwrap();
    let other = Client::connect(manager.address(), manager.authkey()).unwrap();
    let list = client.list::<i64>().unwrap();
    let theirs = other.list::<i64>().unwrap();
    // SAFETY: plain kill.
    unsafe { libc::kill(manager.pid() as libc::pid_t, libc::SIGSTOP) };
    // A manager polling the connection could still answer until the signal takes effect.
    while !stopped(manager.pid()) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let started = Instant::now();
    let err = list.append(&1).unwrap_err();
    let waited = started.elapsed();
    let started = Instant::now();
    let err2 = other
        .run_within(theirs.len_cmd(), Duration::from_millis(300))
        .unwrap_err();
    let waited2 = started.elapsed();
    // SAFETY: plain kill.
    unsafe { libc::kill(manager.pid() as libc::pid_t, libc::SIGCONT) };
    for (err, waited) in [(err, waited), (err2, waited2)] {
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
        assert!(err.is_disconnected());
        assert!(err.to_string().contains("stopped or hung"), "{err}");
        assert!(
            waited >= Duration::from_millis(290) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
    }
    // The manager itself is fine: a new client works.
    let fresh = Client::connect(manager.address(), manager.authkey()).unwrap();
    fresh.ping().unwrap();
}

/// True once `pid` is stopped by a signal.
fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().next().map(|s| s == "T" || s == "t")
        })
        .unwrap_or(false)
}

#[test]
fn the_connect_timeout_bounds_a_tcp_connect() {
    // A non-routable address: the connect times out or fails at once (or, behind a proxy
    // that accepts every connection, the handshake finds no manager).
    let address: Address = "tcp:10.255.255.1:9".parse().unwrap();
    let started = Instant::now();
    let err = Client::connect_with(&address, b"key", &short()).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            err,
            Error::Connect { .. } | Error::NotAManager { .. } | Error::Timeout { .. }
        ),
        "{err:?}"
    );
}

/// After the manager stops, a call that was parked in it and a call made later both say so
/// through the one predicate.
#[test]
fn parked_and_later_calls_agree_that_the_manager_is_gone() {
    let manager = Manager::spawn().expect("spawn the manager");
    let client = Client::connect(manager.address(), manager.authkey()).unwrap();
    let jobs = client.queue::<u64>(0).unwrap();
    let list = client.list::<u64>().unwrap();
    let parked = {
        let jobs = jobs.clone();
        std::thread::spawn(move || jobs.get())
    };
    std::thread::sleep(Duration::from_millis(200));
    manager.admin().unwrap().shutdown().unwrap();
    let parked = parked.join().unwrap().unwrap_err();
    assert!(parked.is_disconnected(), "{parked:?}");
    // A later call tries to reconnect, and finds no manager.
    let later = list.len().unwrap_err();
    assert!(matches!(later, Error::Connect { .. }), "{later:?}");
    for err in [parked, later] {
        assert!(err.is_manager_gone(), "{err:?}");
    }
}

/// A Unix listener that does not accept and whose listen queue is full (a manager stopped
/// with SIGSTOP, say): connecting fails after the connect timeout instead of hanging.
#[test]
fn the_connect_timeout_bounds_a_unix_connect_to_a_full_queue() {
    use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
    use std::os::fd::AsRawFd;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.sock");
    let listener = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    socket::bind(listener.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
    socket::listen(&listener, Backlog::new(0).unwrap()).unwrap();
    // Fill the queue: connections nobody accepts, until one would wait.
    let mut queued = Vec::new();
    loop {
        let s = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .unwrap();
        if socket::connect(s.as_raw_fd(), &UnixAddr::new(&path).unwrap()).is_err() {
            break;
        }
        queued.push(s);
        assert!(queued.len() < 1000, "the queue never filled");
    }
    let address: Address = format!("unix:{}", path.display()).parse().unwrap();
    let started = Instant::now();
    let err = Client::connect_with(&address, b"key", &short()).unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("listen queue"), "{err}");
}
