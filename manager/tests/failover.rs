//! A client given several manager addresses moves to the next when one fails. Runs real
//! `agora-manager` processes (in-memory stores, the same authkey) and the Rust client: the
//! call in flight when a manager is killed fails, the next call reaches the next manager,
//! and when none answers the error names every address.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use agora_client::{Address, Addresses, Client, Error, ErrorName};

const BIN: &str = env!("CARGO_BIN_EXE_agora-manager");
const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn key() -> Vec<u8> {
    hex::decode(KEY_HEX).unwrap()
}

/// A running `agora-manager`, killed and reaped when dropped.
struct Manager {
    child: Child,
    address: Address,
}

impl Manager {
    /// Starts a manager on the Unix socket `address` and waits for its ready line.
    fn start(address: &Address) -> Manager {
        let mut child = Command::new(BIN)
            .arg("--listen")
            .arg(address.to_string())
            .env("AGORA_AUTHKEY", KEY_HEX)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run agora-manager");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("agora-manager ready "), "{line:?}");
        Manager {
            child,
            address: address.clone(),
        }
    }

    /// A client of this manager alone.
    fn client(&self) -> Client {
        Client::connect(&self.address, &key()).unwrap()
    }

    /// Kills the manager with SIGKILL (no orderly shutdown) and reaps it.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two socket addresses in a new temporary directory, removed when it drops.
fn two_addresses() -> (tempfile::TempDir, Address, Address) {
    let dir = tempfile::tempdir().unwrap();
    let a = Address::Unix(dir.path().join("a.sock"));
    let b = Address::Unix(dir.path().join("b.sock"));
    (dir, a, b)
}

/// What the client logs on the thread that installed it, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Captures the INFO (and more severe) events of this thread while the guard lives.
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn both(a: &Address, b: &Address) -> Addresses {
    format!("{a}, {b}").parse().unwrap()
}

#[test]
fn killing_a_manager_fails_the_call_in_flight_and_the_next_call_reaches_the_next() {
    let started = Instant::now();
    let (_dir, a, b) = two_addresses();
    let (ma, mb) = (Manager::start(&a), Manager::start(&b));
    mb.client()
        .dict_named::<String, i64>("scores")
        .unwrap()
        .set("alice", &7)
        .unwrap();

    let c = Client::connect_any(&both(&a, &b), &key()).unwrap();
    assert_eq!(c.address(), &a);
    let on_a = c.dict_named::<String, i64>("scores").unwrap();
    on_a.set("alice", &1).unwrap();
    let queue = c.queue::<i64>(0).unwrap();
    let parked = thread::spawn(move || queue.get_timeout(Duration::from_secs(30)));
    thread::sleep(Duration::from_millis(150));
    ma.kill();

    let err = parked.join().unwrap().unwrap_err();
    assert!(err.is_disconnected() && err.is_manager_gone(), "{err}");
    assert!(err.to_string().contains("a.sock"), "{err}");

    // A and B are separate stores, hence separate runs: A's proxies are stale on B.
    let logs = Captured::default();
    let guard = logs.install();
    let stale = on_a.get("alice").unwrap_err();
    drop(guard);
    let text = logs.text();
    assert!(
        text.contains("INFO") && text.contains("moved to the next agora manager"),
        "{text}"
    );
    assert!(text.contains(&format!("to={b}")), "{text}");
    assert!(stale.is(ErrorName::UnknownObjectError), "{stale}");
    assert!(matches!(stale, Error::OtherRun { .. }), "{stale}");
    assert_eq!(c.address(), &b);
    let on_b = c.dict_named::<String, i64>("scores").unwrap();
    assert_eq!(on_b.get("alice").unwrap(), Some(7));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn the_client_goes_round_the_list_and_names_every_address_when_none_answers() {
    let started = Instant::now();
    let (_dir, a, b) = two_addresses();
    let (ma, mb) = (Manager::start(&a), Manager::start(&b));
    let c = Client::connect_any(&both(&a, &b), &key()).unwrap();
    ma.kill();
    // The first call may or may not find out first that the connection broke.
    let _ = c.ping();
    c.ping().unwrap();
    assert_eq!(c.address(), &b);

    // A again, at the same address: after B fails the client goes round to it.
    let ma = Manager::start(&a);
    mb.kill();
    let _ = c.ping();
    c.ping().unwrap();
    assert_eq!(c.address(), &a);

    ma.kill();
    let _ = c.ping();
    let err = c.ping().unwrap_err();
    assert!(matches!(err, Error::NoManager { .. }), "{err}");
    assert!(err.is_manager_gone(), "{err}");
    let text = err.to_string();
    // Tried from the one after A, the address that failed: B, then A.
    let (at_a, at_b) = (text.find("a.sock"), text.find("b.sock"));
    assert!(at_a.is_some() && at_b.is_some() && at_b < at_a, "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// The async client moves with its blocking client: after A is killed, its next call opens
/// a connection to B, where the blocking client went too.
#[test]
fn the_async_client_moves_to_the_next_manager() {
    use agora_client::aio::AsyncClient;

    let started = Instant::now();
    let (_dir, a, b) = two_addresses();
    let (ma, _mb) = (Manager::start(&a), Manager::start(&b));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let c = rt
        .block_on(AsyncClient::connect_any(&both(&a, &b), &key()))
        .unwrap();
    let on_a = rt.block_on(c.object(|c| c.queue::<i64>(0))).unwrap();
    rt.block_on(on_a.put(&1)).unwrap();
    ma.kill();

    // The first call may find the connection broken; the next opens a new one, where the
    // blocking client went first: B, another run, where A's proxy is stale.
    let first = rt.block_on(on_a.qsize()).unwrap_err();
    assert!(
        first.is_manager_gone() || matches!(first, Error::OtherRun { .. }),
        "{first}"
    );
    let stale = rt.block_on(on_a.qsize()).unwrap_err();
    assert!(matches!(stale, Error::OtherRun { .. }), "{stale}");
    let on_b = rt.block_on(c.object(|c| c.queue::<i64>(0))).unwrap();
    rt.block_on(on_b.put(&5)).unwrap();
    assert_eq!(rt.block_on(on_b.get()).unwrap(), 5);
    assert_eq!(c.blocking().address(), &b);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
