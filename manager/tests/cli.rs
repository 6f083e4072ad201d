//! The `agora-manager` binary: its ready line, key and socket files, authkey sources, signals,
//! the `shutdown` method, bad arguments, and socket paths already in use.
//!
//! Each test runs the real binary with `TMPDIR` pointing into a temporary directory of its own,
//! so the private directory a default run creates is inside it, and a guard kills and reaps
//! the child whatever happens.

use std::fs;
use std::io::{self, BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use agora_proto::testing::{hmac_sha256, RawClient};
use rmpv::Value;

const BIN: &str = env!("CARGO_BIN_EXE_agora-manager");

/// Generous: the tests check what happens, never how fast.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A 32-byte key, as `AGORA_AUTHKEY` or a key file would hold it.
const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const OTHER_KEY_HEX: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

fn key() -> Vec<u8> {
    hex::decode(KEY_HEX).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------------

/// How to start a manager.
struct Launch {
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Standard input is a pipe the test holds (`--lifeline-stdin`), not /dev/null.
    lifeline: bool,
}

impl Launch {
    fn new() -> Launch {
        Launch {
            args: Vec::new(),
            env: Vec::new(),
            lifeline: false,
        }
    }

    /// With `--lifeline-stdin`, its stdin a pipe the test closes with [`Manager::cut_lifeline`].
    fn lifeline(mut self) -> Launch {
        self.lifeline = true;
        self.arg("--lifeline-stdin")
    }

    /// A manager listening at `address` with the test key.
    fn at(address: impl Into<String>) -> Launch {
        Launch::new()
            .arg("--listen")
            .arg(address)
            .env("AGORA_AUTHKEY", KEY_HEX)
    }

    fn arg(mut self, a: impl Into<String>) -> Launch {
        self.args.push(a.into());
        self
    }

    fn env(mut self, k: &str, v: &str) -> Launch {
        self.env.push((k.into(), v.into()));
        self
    }
}

/// A running (or exited) `agora-manager`, killed and reaped when dropped.
struct Manager {
    child: Child,
    /// The directory `TMPDIR` points at for this manager.
    tmp: tempfile::TempDir,
    stderr_path: PathBuf,
    ready: mpsc::Receiver<String>,
}

impl Manager {
    /// Starts a manager with its own `TMPDIR` (and no `AGORA_AUTHKEY` unless given).
    fn spawn(launch: Launch) -> Manager {
        Manager::spawn_in(launch, tempfile::tempdir().unwrap())
    }

    fn spawn_in(launch: Launch, tmp: tempfile::TempDir) -> Manager {
        let stderr_path = tmp.path().join("stderr.log");
        let stderr = fs::File::create(&stderr_path).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(&launch.args)
            .env("TMPDIR", tmp.path())
            .env_remove("AGORA_AUTHKEY")
            .env("RUST_LOG", "info")
            .stdin(if launch.lifeline {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, v) in &launch.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("run agora-manager");
        let stdout = child.stdout.take().unwrap();
        let (tx, ready) = mpsc::channel();
        // Reads the ready line, then drains stdout so the child never blocks on it.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Manager {
            child,
            tmp,
            stderr_path,
            ready,
        }
    }

    fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// The ready line; fails the test if the manager exits or stays silent.
    fn ready_line(&mut self) -> String {
        match self.ready.recv_timeout(TIMEOUT) {
            Ok(line) => line,
            Err(_) => panic!(
                "no ready line; exit status {:?}; stderr:\n{}",
                self.child.try_wait(),
                self.stderr()
            ),
        }
    }

    /// The addresses and the key file named on the ready line.
    fn ready(&mut self) -> Ready {
        let line = self.ready_line();
        let rest = line
            .strip_prefix("agora-manager ready ")
            .unwrap_or_else(|| panic!("not a ready line: {line:?}"));
        let mut ready = Ready::default();
        for word in rest.split(' ') {
            if let Some(url) = word.strip_prefix("metrics=") {
                assert!(
                    ready.run.is_some(),
                    "the metrics come after the run: {line:?}"
                );
                ready.metrics = Some(url.to_owned());
            } else if let Some(run) = word.strip_prefix("run=") {
                assert!(ready.run.is_none(), "one run: {line:?}");
                ready.run = Some(run.to_owned());
            } else if let Some(path) = word.strip_prefix("authkey-file=") {
                assert!(ready.key_file.is_none(), "one key file: {line:?}");
                assert!(ready.run.is_none(), "the run comes last: {line:?}");
                ready.key_file = Some(PathBuf::from(path));
            } else if word.starts_with("unix:") || word.starts_with("tcp:") {
                assert!(
                    ready.key_file.is_none() && ready.run.is_none(),
                    "addresses come first: {line:?}"
                );
                ready.addresses.push(word.to_owned());
            } else {
                panic!("unexpected word {word:?} on the ready line {line:?}");
            }
        }
        assert!(!ready.addresses.is_empty(), "{line:?}");
        assert!(
            ready.run.is_some(),
            "the ready line names the run: {line:?}"
        );
        ready
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Closes the write end of the `--lifeline-stdin` pipe, as the death of a parent would.
    fn cut_lifeline(&mut self) {
        drop(self.child.stdin.take().expect("launched with a lifeline"));
    }

    /// The log lines written so far, each parsed as JSON (`--log-format json`).
    fn json_logs(&self) -> Vec<serde_json::Value> {
        self.stderr()
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line:?}"))
            })
            .collect()
    }

    /// Waits for a JSON log line with this message and for which `also` holds; gives it.
    fn json_log(
        &self,
        message: &str,
        also: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.wait_for_log(&format!("a {message:?} line"), || {
            self.json_logs()
                .into_iter()
                .find(|l| l["fields"]["message"] == message && also(l))
        })
    }

    /// Waits for a text log line containing every one of `parts`; gives it.
    fn text_log(&self, parts: &[&str]) -> String {
        self.wait_for_log(&format!("a line with {parts:?}"), || {
            let stderr = self.stderr();
            let line = stderr.lines().find(|l| parts.iter().all(|p| l.contains(p)));
            line.map(str::to_owned)
        })
    }

    /// Waits until `find` finds what it looks for (`what`) in the log; gives it.
    fn wait_for_log<T>(&self, what: &str, find: impl Fn() -> Option<T>) -> T {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(found) = find() {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {what}; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill: {}", io::Error::last_os_error());
    }

    /// Waits for the manager to exit on its own.
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the manager did not exit; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for an exit that must be a failure at startup, and gives its stderr.
    fn startup_failure(&mut self) -> String {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if let Ok(line) = self.ready.try_recv() {
                panic!("expected a startup failure, but the manager started: {line}");
            }
            assert!(
                Instant::now() < deadline,
                "the manager neither failed nor started"
            );
            thread::sleep(Duration::from_millis(20));
        };
        assert!(!status.success(), "expected a failure, got {status:?}");
        assert_eq!(status.signal(), None, "exited, not killed: {status:?}");
        // Give the stdout reader the time to see end-of-file, then check it saw no line.
        thread::sleep(Duration::from_millis(50));
        assert!(
            self.ready.try_recv().is_err(),
            "a manager that fails to start prints no ready line"
        );
        self.stderr()
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Default)]
struct Ready {
    addresses: Vec<String>,
    key_file: Option<PathBuf>,
    run: Option<String>,
    /// The URL of the metrics, with `--metrics`.
    metrics: Option<String>,
}

impl Ready {
    /// The path of the (first) Unix socket.
    fn socket(&self) -> PathBuf {
        let a = self
            .addresses
            .iter()
            .find_map(|a| a.strip_prefix("unix:"))
            .expect("a unix address");
        PathBuf::from(a)
    }

    /// The authkey read from the key file.
    fn key(&self) -> Vec<u8> {
        let text = fs::read_to_string(self.key_file.as_ref().expect("a key file")).unwrap();
        hex::decode(text.trim()).expect("the key file holds hex")
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The socket a manager started with its default listener names on its ready line, checked
/// to be a socket.
fn ready_socket(child: &mut std::process::Child) -> PathBuf {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("a ready line");
    let socket = PathBuf::from(
        line.split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .trim_start_matches("unix:"),
    );
    assert!(is_socket(&socket), "ready line {line:?}");
    socket
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

// ---------------------------------------------------------------------------------------------
// Talking to it
// ---------------------------------------------------------------------------------------------

/// A connection to `address` (as the ready line spells it) that has passed `hello` and `auth`
/// with `key`.
fn authenticated(address: &str, key: &[u8]) -> RawClient {
    let mut c = RawClient::connect(address).expect("connect to the manager");
    c.authenticate(key);
    c
}

/// Authenticates at `address` with `key`, creates a dict and reads it back.
fn use_manager(address: &str, key: &[u8]) {
    let mut c = authenticated(address, key);
    let id = c.ok("create", vec!["dict".into(), Value::Nil]);
    c.ok("dict.setitem", vec![id.clone(), "k".into(), 42.into()]);
    assert_eq!(c.ok("dict.get", vec![id, "k".into()]), Value::from(42));
}

/// Authentication with the wrong key fails, and the manager closes that connection.
fn refused(address: &str, key: &[u8]) {
    let mut c = RawClient::connect(address).expect("connect to the manager");
    let digest = hmac_sha256(key, &c.hello());
    assert_eq!(
        c.fail("auth", vec![Value::Binary(digest)]),
        "AuthenticationError",
        "a wrong key must be refused"
    );
    c.expect_closed();
}

/// A manager is fully up once it has served a request. (Its signal handlers are installed
/// just after it starts serving; see `sigterm_right_after_the_ready_line_is_a_clean_stop`.)
fn wait_until_serving(address: &str, key: &[u8]) {
    let mut c = authenticated(address, key);
    assert_eq!(c.ok("ping", vec![]), Value::from("pong"));
    thread::sleep(Duration::from_millis(200));
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn a_default_run_makes_a_private_socket_and_key_file() {
    let mut m = Manager::spawn(Launch::new());
    let ready = m.ready();
    assert_eq!(ready.addresses.len(), 1, "{ready:?}");
    let socket = ready.socket();
    let key_file = ready.key_file.clone().expect("a generated key is named");
    // Both in one fresh directory under TMPDIR.
    let dir = socket.parent().unwrap().to_owned();
    assert_eq!(key_file.parent(), Some(dir.as_path()));
    assert_eq!(dir.parent(), Some(m.tmp.path()));
    assert_eq!(mode(&dir), 0o700, "the directory is private");
    assert!(is_socket(&socket));
    assert_eq!(mode(&socket), 0o600, "the socket is private");
    assert_eq!(mode(&key_file), 0o600, "the key file is private");
    let text = fs::read_to_string(&key_file).unwrap();
    let key = hex::decode(text.trim()).expect("hex");
    assert_eq!(key.len(), 32);
    assert_eq!(text.trim(), text.trim().to_lowercase(), "lowercase hex");
    let address = format!("unix:{}", socket.display());
    use_manager(&address, &key);
    refused(&address, &hex::decode(OTHER_KEY_HEX).unwrap());

    wait_until_serving(&address, &key);
    m.signal(libc::SIGTERM);
    let status = m.wait();
    assert_eq!(
        status.code(),
        Some(0),
        "{status:?}; stderr:\n{}",
        m.stderr()
    );
    assert!(!socket.exists(), "the socket file is removed");
    assert!(!key_file.exists(), "the generated key file is removed");
    assert!(!dir.exists(), "the private directory is removed");
}

#[test]
fn each_default_run_gets_its_own_directory_and_key() {
    let mut a = Manager::spawn(Launch::new());
    let mut b = Manager::spawn(Launch::new());
    let (ra, rb) = (a.ready(), b.ready());
    assert_ne!(ra.socket(), rb.socket());
    assert_ne!(ra.key(), rb.key());
    use_manager(&ra.addresses[0], &ra.key());
    refused(&rb.addresses[0], &ra.key());
}

/// `--metrics HOST:0` serves on the port it got, which the ready line names.
#[test]
fn the_ready_line_names_the_metrics_url_and_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("unix:{}", dir.path().join("m.sock").display());
    let mut m = Manager::spawn(Launch::at(&address).arg("--metrics").arg("127.0.0.1:0"));
    let url = m.ready().metrics.expect("the ready line names the metrics");
    let host_port = url
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("not a metrics URL: {url}"));
    assert!(!host_port.ends_with(":0"), "the port it got: {url}");
    let mut s = TcpStream::connect(host_port).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("\nagora_connections 0\n"), "{answer}");
    m.signal(libc::SIGTERM);
    assert!(m.wait().success(), "{}", m.stderr());
}

/// The ready line and `hello` name the same run, a uuid; another run of the same command at
/// the same address has another.
#[test]
fn the_ready_line_and_hello_name_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("unix:{}", dir.path().join("m.sock").display());
    let mut runs = Vec::new();
    for _ in 0..2 {
        let mut m = Manager::spawn(Launch::at(&address));
        let ready = m.ready();
        let run = ready.run.clone().unwrap();
        assert_eq!(run.len(), 36, "a hyphenated uuid: {run}");
        let mut c = RawClient::connect(&address).unwrap();
        let hello = c.ok("hello", vec![]);
        let field = |name: &str| {
            hello
                .as_map()
                .unwrap()
                .iter()
                .find(|(k, _)| k.as_str() == Some(name))
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {name} in {hello}"))
        };
        assert_eq!(field("run"), Value::from(run.as_str()));
        let started = field("started").as_u64().expect("started is an int");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(started <= now && now - started < 600, "{started} vs {now}");
        m.signal(libc::SIGTERM);
        m.wait();
        runs.push(run);
    }
    assert_ne!(runs[0], runs[1], "each run has its own id");
}

#[test]
fn tcp_port_zero_reports_the_real_port() {
    let mut m = Manager::spawn(Launch::new().arg("--listen").arg("tcp:127.0.0.1:0"));
    let ready = m.ready();
    assert_eq!(ready.addresses.len(), 1, "{ready:?}");
    let address = &ready.addresses[0];
    let port: u16 = address
        .strip_prefix("tcp:127.0.0.1:")
        .unwrap_or_else(|| panic!("{address}"))
        .parse()
        .unwrap();
    assert_ne!(port, 0);
    // No socket was asked for, but a key was generated.
    let key_file = ready.key_file.clone().expect("a generated key");
    assert_eq!(mode(&key_file), 0o600);
    use_manager(address, &ready.key());
    refused(address, &key());
}

#[test]
fn several_listen_addresses_are_reported_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("m.sock");
    let mut m = Manager::spawn(
        Launch::new()
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("--listen")
            .arg("tcp:127.0.0.1:0")
            .env("AGORA_AUTHKEY", KEY_HEX),
    );
    let ready = m.ready();
    assert_eq!(ready.addresses.len(), 2, "{ready:?}");
    assert_eq!(ready.addresses[0], format!("unix:{}", socket.display()));
    assert!(ready.addresses[1].starts_with("tcp:127.0.0.1:"));
    assert!(!ready.addresses[1].ends_with(":0"));
    assert_eq!(mode(&socket), 0o600);
    for address in &ready.addresses {
        use_manager(address, &key());
    }
    wait_until_serving(&ready.addresses[0], &key());
    m.signal(libc::SIGTERM);
    assert_eq!(m.wait().code(), Some(0));
    assert!(!socket.exists());
    assert!(TcpStream::connect(ready.addresses[1].strip_prefix("tcp:").unwrap()).is_err());
}

#[test]
fn agora_authkey_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("m.sock");
    let address = format!("unix:{}", socket.display());
    let mut m = Manager::spawn(Launch::at(&address));
    let ready = m.ready();
    assert_eq!(ready.addresses, std::slice::from_ref(&address));
    assert_eq!(ready.key_file, None, "no key file when the key was given");
    use_manager(&address, &key());
    refused(&address, &hex::decode(OTHER_KEY_HEX).unwrap());
    // Nothing was written to TMPDIR.
    let leftovers: Vec<_> = fs::read_dir(m.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "stderr.log")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn an_authkey_file_is_honoured_before_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    fs::write(&key_file, format!("{KEY_HEX}\n")).unwrap();
    let socket = dir.path().join("m.sock");
    let address = format!("unix:{}", socket.display());
    let mut m = Manager::spawn(
        Launch::new()
            .arg("--listen")
            .arg(&address)
            .arg("--authkey-file")
            .arg(key_file.to_str().unwrap())
            .env("AGORA_AUTHKEY", OTHER_KEY_HEX),
    );
    let ready = m.ready();
    assert_eq!(ready.key_file, None);
    use_manager(&address, &key());
    refused(&address, &hex::decode(OTHER_KEY_HEX).unwrap());
    // The manager does not remove a key file it did not create.
    wait_until_serving(&address, &key());
    m.signal(libc::SIGTERM);
    assert_eq!(m.wait().code(), Some(0));
    assert!(key_file.exists());
}

#[test]
fn a_bad_authkey_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("unix:{}", dir.path().join("m.sock").display());
    let cases = [
        Launch::new().env("AGORA_AUTHKEY", "not hex"),
        Launch::new().env("AGORA_AUTHKEY", ""),
        Launch::new()
            .arg("--authkey-file")
            .arg(dir.path().join("missing").to_str().unwrap()),
    ];
    for launch in cases {
        let mut m = Manager::spawn(launch.arg("--listen").arg(&listen));
        let stderr = m.startup_failure();
        assert!(stderr.contains("agora-manager:"), "{stderr}");
        assert!(stderr.contains("authkey"), "{stderr}");
    }
    let bad_file = dir.path().join("bad");
    // Not hex, said so rather than in the decoder's words ("Odd number of digits").
    for (text, why) in [
        ("zz\n", "'z' at position 0 is not a hex digit"),
        ("abc\n", "an odd number of digits"),
    ] {
        fs::write(&bad_file, text).unwrap();
        let mut m = Manager::spawn(
            Launch::new()
                .arg("--authkey-file")
                .arg(bad_file.to_str().unwrap())
                .arg("--listen")
                .arg(&listen),
        );
        let stderr = m.startup_failure();
        assert!(stderr.contains(bad_file.to_str().unwrap()), "{stderr}");
        assert!(
            stderr.contains("does not hold the authkey as hex"),
            "{stderr}"
        );
        assert!(stderr.contains(why), "{text:?}: {stderr}");
    }
}

#[test]
fn sigterm_and_sigint_stop_the_manager_cleanly() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("m.sock");
        let address = format!("unix:{}", socket.display());
        let mut m = Manager::spawn(Launch::at(&address));
        m.ready();
        // An idle client connected at the time does not keep the manager alive.
        let mut idle = authenticated(&address, &key());
        wait_until_serving(&address, &key());
        m.signal(signal);
        let status = m.wait();
        assert_eq!(status.code(), Some(0), "signal {signal}: {status:?}");
        assert!(
            !socket.exists(),
            "signal {signal}: the socket file is removed"
        );
        idle.expect_closed();
    }
}

#[test]
fn the_shutdown_method_stops_the_process() {
    let mut m = Manager::spawn(Launch::new());
    let ready = m.ready();
    let socket = ready.socket();
    let key_file = ready.key_file.clone().unwrap();
    let mut c = authenticated(&ready.addresses[0], &ready.key());
    assert_eq!(c.ok("shutdown", vec![]), Value::Boolean(true));
    let status = m.wait();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(!socket.exists());
    assert!(!key_file.exists());
    assert!(!socket.parent().unwrap().exists());
}

/// A limit that would make every client fail is refused at start, naming the flag.
#[test]
fn limits_no_client_could_work_with_are_refused_at_start() {
    for (flag, value) in [
        ("--max-message-bytes", "0"),
        ("--max-message-bytes", "100"),
        ("--max-depth", "0"),
        ("--max-depth", "1"),
        ("--max-container-len", "3"),
        ("--max-in-flight", "0"),
    ] {
        let mut m = Manager::spawn(Launch::new().arg(flag).arg(value));
        let stderr = m.startup_failure();
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
        assert!(stderr.contains("at least"), "{flag} {value}: {stderr}");
    }
}

/// SIGHUP no longer kills the manager without its cleanup: it is logged and ignored, the
/// connections it found still served, and the manager goes on serving until SIGTERM, which
/// still stops it cleanly.
#[test]
fn sighup_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("m.sock");
    let address = format!("unix:{}", socket.display());
    let mut m = Manager::spawn(Launch::at(&address));
    m.ready();
    wait_until_serving(&address, &key());
    let mut before = authenticated(&address, &key());
    let id = before.create("dict", Some("d"), vec![]);
    before.ok("dict.setitem", vec![id.into(), "k".into(), 1.into()]);
    m.signal(libc::SIGHUP);
    m.text_log(&["SIGHUP ignored"]);
    let got = before.ok("dict.get", vec![id.into(), "k".into()]);
    assert_eq!(got, Value::from(1));
    let mut c = authenticated(&address, &key());
    assert_eq!(c.ok("ping", vec![]), Value::from("pong"));
    m.signal(libc::SIGTERM);
    assert_eq!(m.wait().code(), Some(0));
    assert!(!socket.exists(), "the socket file is removed");
}

#[test]
fn a_bad_listen_address_is_a_readable_startup_error() {
    for bad in [
        "nonsense",
        "udp:127.0.0.1:1",
        "tcp:127.0.0.1:notaport",
        "tcp:",
    ] {
        let mut m = Manager::spawn(Launch::at(bad));
        let stderr = m.startup_failure();
        assert!(stderr.contains("agora-manager:"), "{bad}: {stderr}");
        assert!(
            stderr.contains(bad),
            "{bad}: the message names the address: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{bad}: {stderr}");
    }
    // A directory that does not exist.
    let mut m = Manager::spawn(Launch::at("unix:/nonexistent-agora-dir/m.sock"));
    let stderr = m.startup_failure();
    assert!(stderr.contains("/nonexistent-agora-dir/m.sock"), "{stderr}");
}

#[test]
fn a_second_manager_on_a_live_socket_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("m.sock");
    let address = format!("unix:{}", socket.display());
    let launch = || Launch::at(&address);
    let mut first = Manager::spawn(launch());
    first.ready();
    let mut c = authenticated(&address, &key());
    let id = c.ok("create", vec!["list".into(), "l".into()]);

    let mut second = Manager::spawn(launch());
    let stderr = second.startup_failure();
    assert!(stderr.contains(socket.to_str().unwrap()), "{stderr}");
    // The first manager keeps its socket and its objects.
    assert!(is_socket(&socket));
    let mut c = authenticated(&address, &key());
    assert_eq!(
        c.ok("lookup", vec!["l".into()]),
        Value::Array(vec!["list".into(), id])
    );
}

#[test]
fn a_stale_socket_left_by_a_killed_manager_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("m.sock");
    let address = format!("unix:{}", socket.display());
    let launch = || Launch::at(&address);
    let mut first = Manager::spawn(launch());
    first.ready();
    first.signal(libc::SIGKILL);
    let status = first.wait();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(is_socket(&socket), "SIGKILL leaves the socket file behind");
    assert!(
        UnixStream::connect(&socket).is_err(),
        "and nobody listens on it"
    );

    let mut second = Manager::spawn(launch());
    assert_eq!(second.ready().addresses, std::slice::from_ref(&address));
    use_manager(&address, &key());
}

// ---------------------------------------------------------------------------------------------
// Bugs found while writing these tests (each fixed; these keep them fixed)
// ---------------------------------------------------------------------------------------------

#[test]
fn a_listen_path_holding_a_regular_file_is_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let precious = dir.path().join("notes.txt");
    fs::write(&precious, "do not delete").unwrap();
    let mut m = Manager::spawn(
        Launch::new()
            .arg("--listen")
            .arg(format!("unix:{}", precious.display()))
            .env("AGORA_AUTHKEY", KEY_HEX),
    );
    let stderr = m.startup_failure();
    assert!(stderr.contains(precious.to_str().unwrap()), "{stderr}");
    assert_eq!(fs::read_to_string(&precious).unwrap(), "do not delete");
}

#[test]
fn sigterm_right_after_the_ready_line_is_a_clean_stop() {
    for attempt in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("m.sock");
        let mut m = Manager::spawn(
            Launch::new()
                .arg("--listen")
                .arg(format!("unix:{}", socket.display()))
                .env("AGORA_AUTHKEY", KEY_HEX),
        );
        m.ready();
        m.signal(libc::SIGTERM);
        let status = m.wait();
        assert_eq!(status.code(), Some(0), "attempt {attempt}: {status:?}");
        assert!(
            !socket.exists(),
            "attempt {attempt}: socket file left behind"
        );
    }
}

#[test]
fn a_failed_start_leaves_nothing_behind() {
    let mut m = Manager::spawn(Launch::new().arg("--listen").arg("nonsense"));
    m.startup_failure();
    let leftovers: Vec<_> = fs::read_dir(m.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "stderr.log")
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[test]
fn an_empty_unix_path_is_a_readable_startup_error() {
    let mut m = Manager::spawn(Launch::at("unix:"));
    let stderr = m.startup_failure();
    assert!(
        stderr.contains("unix:"),
        "the message names the address: {stderr}"
    );
}

#[test]
fn lifeline_stdin_stops_the_manager_when_its_parent_closes_the_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("--lifeline-stdin")
        .env("TMPDIR", tmp.path())
        .env_remove("AGORA_AUTHKEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run agora-manager");
    let socket = ready_socket(&mut child);
    // Still serving while the pipe is open.
    thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "stopped with its lifeline open"
    );
    // What the kernel does when the parent dies: the write end closes.
    drop(child.stdin.take());
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the manager outlived its lifeline"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(!socket.exists(), "socket file left behind");
}

/// A manager whose stderr is a pipe nobody reads any more loses its log lines, not its
/// clean stop.
#[test]
fn a_closed_stderr_does_not_stop_a_clean_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .env("TMPDIR", tmp.path())
        .env("RUST_LOG", "debug")
        .env_remove("AGORA_AUTHKEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run agora-manager");
    drop(child.stderr.take());
    let socket = ready_socket(&mut child);
    // A connection is logged: writes to the closed pipe while serving.
    drop(UnixStream::connect(&socket).unwrap());
    thread::sleep(Duration::from_millis(100));
    // SAFETY: kill sends a signal to the child this test started, which is still running.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the manager did not stop");
        thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(!socket.exists(), "socket file left behind");
}

#[test]
fn the_polling_budget_comes_from_the_flag_or_the_environment() {
    let started = [
        Launch::new().arg("--spin-us").arg("0"),
        Launch::new().arg("--spin-us").arg("200"),
        Launch::new().env("AGORA_SPIN_US", "0"),
        // Blank means unset, as for the clients (agora_proto::spin).
        Launch::new().env("AGORA_SPIN_US", ""),
        // The flag wins over a variable it makes irrelevant.
        Launch::new()
            .arg("--spin-us")
            .arg("10")
            .env("AGORA_SPIN_US", "junk"),
    ];
    for launch in started {
        let mut m = Manager::spawn(launch.arg("--listen").arg("tcp:127.0.0.1:0"));
        let ready = m.ready();
        use_manager(&ready.addresses[0], &ready.key());
    }
    // What the clients warn about and ignore, the program refuses: "-1" is not "off".
    for bad in ["fifty", "-1"] {
        let mut m = Manager::spawn(
            Launch::new()
                .env("AGORA_SPIN_US", bad)
                .arg("--listen")
                .arg("tcp:127.0.0.1:0"),
        );
        let stderr = m.startup_failure();
        assert!(stderr.contains("AGORA_SPIN_US"), "{stderr}");
        assert!(stderr.contains(&format!("{bad:?}")), "{stderr}");
    }
}

#[test]
fn the_runtime_runs_on_as_many_threads_as_the_flag_says() {
    for threads in [1u64, 3] {
        let mut m = Manager::spawn(
            Launch::new()
                .arg("--threads")
                .arg(threads.to_string())
                .arg("--log-format")
                .arg("json")
                .arg("--listen")
                .arg("tcp:127.0.0.1:0"),
        );
        let ready = m.ready();
        let started = m.json_log("runtime started", |_| true);
        assert_eq!(started["fields"]["threads"], threads, "{started}");
        use_manager(&ready.addresses[0], &ready.key());
    }
    let mut m = Manager::spawn(
        Launch::new()
            .arg("--threads")
            .arg("0")
            .arg("--listen")
            .arg("tcp:127.0.0.1:0"),
    );
    let stderr = m.startup_failure();
    assert!(stderr.contains("at least 1"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// Running as a service: logs, the config file, every way of stopping
// ---------------------------------------------------------------------------------------------

/// This process's user id.
fn our_uid() -> u64 {
    // SAFETY: getuid has no preconditions.
    u64::from(unsafe { libc::getuid() })
}

#[test]
fn json_logs_give_each_connection_its_id_peer_and_totals() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("m.sock");
    let unix = format!("unix:{}", socket.display());
    let mut m = Manager::spawn(
        Launch::at(&unix)
            .arg("--listen")
            .arg("tcp:127.0.0.1:0")
            .arg("--log-format")
            .arg("json")
            .arg("--max-in-flight")
            .arg("77"),
    );
    let ready = m.ready();
    let started = m.json_log("manager started", |_| true);
    let fields = &started["fields"];
    assert_eq!(fields["pid"], u64::from(m.child.id()), "{started}");
    assert_eq!(fields["max_in_flight"], 77, "{started}");
    assert_eq!(fields["listeners"], ready.addresses.join(" "), "{started}");
    assert!(fields["version"].is_string(), "{started}");
    for limit in [
        "max_message_bytes",
        "max_depth",
        "max_container_len",
        "max_connections",
        "max_output_bytes",
        "auth_timeout_secs",
        "spin_us",
    ] {
        assert!(fields[limit].is_number(), "{limit}: {started}");
    }

    // A Unix peer: its pid and uid are the kernel's word for who connected (this process).
    let mut c = authenticated(&unix, &key());
    c.ok("ping", vec![]);
    drop(c);
    let ours = |l: &serde_json::Value| l["span"]["pid"] == u64::from(std::process::id());
    let connected = m.json_log("connected", ours);
    let span = &connected["span"];
    assert_eq!(span["peer"], "unix peer", "{connected}");
    assert_eq!(span["uid"], our_uid(), "{connected}");
    let id = span["conn"].as_str().expect("a connection id").to_owned();
    assert!(uuid_like(&id), "{connected}");
    let same = |l: &serde_json::Value| l["span"]["conn"] == id.as_str();
    let gone = m.json_log("disconnected", same);
    let fields = &gone["fields"];
    assert_eq!(fields["reason"], "client_closed", "{gone}");
    // hello, auth, ping.
    assert_eq!(fields["calls"], 3, "{gone}");
    assert_eq!(fields["errors"], 0, "{gone}");
    assert!(fields["bytes_in"].as_u64().unwrap() > 0, "{gone}");
    assert!(fields["bytes_out"].as_u64().unwrap() > 0, "{gone}");
    assert!(fields["duration_secs"].is_number(), "{gone}");

    // A TCP peer: its address, a connection id of its own, no credentials.
    let tcp = &ready.addresses[1];
    let mut c = RawClient::connect(tcp).unwrap();
    let digest = hmac_sha256(&[9u8; 32], &c.hello());
    assert_eq!(
        c.fail("auth", vec![Value::Binary(digest)]),
        "AuthenticationError"
    );
    c.expect_closed();
    let tcp_peer = |l: &serde_json::Value| {
        l["span"]["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:"))
    };
    let gone = m.json_log("disconnected", tcp_peer);
    assert_eq!(gone["fields"]["reason"], "auth_failed", "{gone}");
    assert_eq!(gone["fields"]["errors"], 1, "{gone}");
    assert!(gone["span"].get("pid").is_none(), "{gone}");
    assert_ne!(gone["span"]["conn"], id.as_str(), "{gone}");
    m.signal(libc::SIGTERM);
    assert_eq!(m.wait().code(), Some(0));
    // Every line the manager wrote is JSON, to the last.
    m.json_logs();
}

/// `8-4-4-4-12` hex digits.
fn uuid_like(text: &str) -> bool {
    let groups: Vec<usize> = text.split('-').map(str::len).collect();
    groups == [8, 4, 4, 4, 12] && text.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

/// In the text format a value with spaces is quoted, so a collector splitting `key=value`
/// pairs reads `peer="unix peer"` as one field, and the error as another.
#[test]
fn text_logs_quote_values_with_spaces() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("m.sock");
    let address = format!("unix:{}", socket.display());
    let mut m = Manager::spawn(Launch::at(&address).arg("--max-message-bytes").arg("2048"));
    m.ready();
    let mut c = authenticated(&address, &key());
    let big = vec![Value::from("x".repeat(4096))];
    let msgid = c.msgid();
    let _ = c.try_send(&agora_proto::testing::request(msgid, "ping", big));
    while c.next_frame().is_some() {}
    let line = m.text_log(&["closing connection", "error="]);
    assert!(line.contains(r#"peer="unix peer""#), "{line}");
    assert!(line.contains(r#"error="LimitError: "#), "{line}");
    let line = m.text_log(&["disconnected"]);
    assert!(line.contains(r#"reason="limit_exceeded""#), "{line}");
    assert!(
        line.contains(&format!("pid={}", std::process::id())),
        "{line}"
    );
    assert!(line.contains(&format!("uid={}", our_uid())), "{line}");
    assert!(line.contains("calls=2 errors=0"), "{line}");
}

/// A config file sets flags; a flag on the command line wins over the file's key, a list
/// (`listen`) replaced whole.
#[test]
fn a_config_file_sets_flags_and_the_command_line_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let (in_file, on_line) = (dir.path().join("file.sock"), dir.path().join("line.sock"));
    let key_file = dir.path().join("key");
    fs::write(&key_file, KEY_HEX).unwrap();
    let config = dir.path().join("agora.toml");
    fs::write(
        &config,
        format!(
            "listen = [\"unix:{}\"]\nauthkey-file = \"{}\"\nmax-in-flight = 7\n\
             max-depth = 9\nlog-format = \"json\"\nauth-timeout = 2.5\n",
            in_file.display(),
            key_file.display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();

    let mut m = Manager::spawn(Launch::new().arg("--config").arg(&config));
    let ready = m.ready();
    assert_eq!(ready.addresses, [format!("unix:{}", in_file.display())]);
    use_manager(&ready.addresses[0], &key());
    let fields = m.json_log("manager started", |_| true)["fields"].clone();
    assert_eq!(
        (
            &fields["max_in_flight"],
            &fields["max_depth"],
            &fields["auth_timeout_secs"]
        ),
        (&7.into(), &9.into(), &2.5.into())
    );
    m.signal(libc::SIGTERM);
    assert_eq!(m.wait().code(), Some(0));

    let on_line_address = format!("unix:{}", on_line.display());
    let mut m = Manager::spawn(
        Launch::new()
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg(&on_line_address)
            .arg("--max-in-flight")
            .arg("8"),
    );
    let ready = m.ready();
    assert_eq!(ready.addresses, [on_line_address]);
    assert!(!in_file.exists(), "the file's listen list is replaced");
    let fields = m.json_log("manager started", |_| true)["fields"].clone();
    assert_eq!(fields["max_in_flight"], 8);
    assert_eq!(
        fields["max_depth"], 9,
        "the keys not overridden still apply"
    );
}

/// A value that would make the manager unusable, a key that is no flag, a file that is not
/// TOML: each stops the start, and the message names the key (or the file).
#[test]
fn bad_config_files_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agora.toml");
    for (text, named, why) in [
        ("max-in-flight = 0", "max-in-flight", "at least 1"),
        (
            "max-message-bytes = 100",
            "max-message-bytes",
            "at least 1024",
        ),
        ("max-depth = 1", "max-depth", "at least 2"),
        ("max-depth = 100000", "max-depth", "at most"),
        ("max-container-len = 3", "max-container-len", "at least 4"),
        ("max-connections = 0", "max-connections", "at least 1"),
        ("max-output-bytes = 0", "max-output-bytes", "at least 1"),
        ("auth-timeout = 0", "auth-timeout", "more than 0"),
        ("auth-burst = 0", "auth-burst", "at least 1"),
        ("auth-interval = 0", "auth-interval", "more than 0"),
        ("handoff-seconds = -1", "handoff-seconds", "more than 0"),
        ("spin-us = -5", "spin-us", "not a whole number"),
        ("threads = 0", "threads", "at least 1"),
        ("log-format = \"xml\"", "log-format", "one of text, json"),
        (
            "store = \"redis://h:1\"",
            "store",
            "expected `memory` or `etcd://",
        ),
        ("store = \"etcd://h\"", "store", "is not HOST:PORT"),
        (
            "max-in-flight = \"lots\"",
            "max-in-flight",
            "not a whole number",
        ),
        ("max-depth = [3, 4]", "max-depth", "not a list"),
        ("lifeline-stdin = true", "lifeline-stdin", "command line"),
        ("max_in_flight = 3", "max_in_flight", "unknown key"),
        ("[limits]\nmax-depth = 3", "limits", "unknown key"),
        ("max-depth = ", "agora.toml", "not valid TOML"),
    ] {
        fs::write(&config, text).unwrap();
        let mut m = Manager::spawn(
            Launch::new()
                .arg("--config")
                .arg(config.to_str().unwrap())
                .arg("--listen")
                .arg("tcp:127.0.0.1:0"),
        );
        let stderr = m.startup_failure();
        assert!(stderr.contains(named), "{text:?}: {stderr}");
        assert!(stderr.contains(why), "{text:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{text:?}: {stderr}");
    }
    let mut m = Manager::spawn(
        Launch::new()
            .arg("--config")
            .arg(dir.path().join("missing.toml").to_str().unwrap()),
    );
    let stderr = m.startup_failure();
    assert!(stderr.contains("missing.toml"), "{stderr}");
}

/// A manager built without the etcd store says how to get one, rather than starting with
/// the memory store the operator did not ask for.
#[test]
#[cfg(not(feature = "etcd"))]
fn an_etcd_store_without_the_feature_is_refused_saying_how_to_build_it() {
    let mut m = Manager::spawn(
        Launch::new()
            .arg("--store")
            .arg("etcd://127.0.0.1:2379")
            .arg("--listen")
            .arg("tcp:127.0.0.1:0"),
    );
    let stderr = m.startup_failure();
    assert!(stderr.contains("built without the etcd store"), "{stderr}");
    assert!(stderr.contains("--features etcd"), "{stderr}");
}

/// The sample config file of the documentation is one this manager accepts: started with it
/// (its paths, which name a real deployment's places, overridden on the command line), it
/// serves.
#[test]
fn the_sample_config_file_is_accepted() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/agora.toml");
    let text = fs::read_to_string(&sample).unwrap();
    let table: toml::Table = text.parse().expect("the sample is TOML");
    assert!(table.contains_key("listen"), "the sample shows listen");
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    fs::write(&key_file, KEY_HEX).unwrap();
    let address = format!("unix:{}", dir.path().join("m.sock").display());
    let mut m = Manager::spawn(
        Launch::new()
            .arg("--config")
            .arg(sample.to_str().unwrap())
            .arg("--listen")
            .arg(&address)
            .arg("--authkey-file")
            .arg(key_file.to_str().unwrap())
            .arg("--metrics")
            .arg("127.0.0.1:0"),
    );
    let ready = m.ready();
    use_manager(&address, &key());
    assert!(ready.metrics.is_some());
}

/// How a test stops a manager.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Signal(libc::c_int),
    ShutdownMethod,
    Lifeline,
}

/// Every way of stopping a manager answers its parked calls `ShutdownError`, removes its
/// Unix socket file, and exits with status 0.
#[test]
fn every_way_of_stopping_answers_parked_calls_and_removes_the_socket() {
    for stop in [
        Stop::Signal(libc::SIGTERM),
        Stop::Signal(libc::SIGINT),
        Stop::ShutdownMethod,
        Stop::Lifeline,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("m.sock");
        let address = format!("unix:{}", socket.display());
        let launch = Launch::at(&address);
        let launch = match stop {
            Stop::Lifeline => launch.lifeline(),
            _ => launch,
        };
        let mut m = Manager::spawn(launch);
        m.ready();
        wait_until_serving(&address, &key());
        let mut holder = authenticated(&address, &key());
        let lock = holder.create("lock", Some("l"), vec![]);
        holder.ok("lock.acquire", vec![lock.into()]);
        let mut waiter = authenticated(&address, &key());
        let parked = waiter.park("lock.acquire", vec![lock.into()]);

        match stop {
            Stop::Signal(signal) => m.signal(signal),
            Stop::ShutdownMethod => {
                let mut c = authenticated(&address, &key());
                assert_eq!(c.ok("shutdown", vec![]), Value::Boolean(true));
            }
            Stop::Lifeline => m.cut_lifeline(),
        }
        let answer = waiter.response();
        assert_eq!(answer.msgid, parked, "{stop:?}");
        let err = answer.result.expect_err("the parked call is not granted");
        assert_eq!(err.name, "ShutdownError", "{stop:?}: {err:?}");
        let status = m.wait();
        assert_eq!(status.code(), Some(0), "{stop:?}: {status:?}");
        assert!(!socket.exists(), "{stop:?}: the socket file is removed");
        m.text_log(&["disconnected", "reason=\"shutdown"]);
    }
}

/// Each way a connection ends is its disconnect line's reason.
#[test]
fn each_disconnect_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("unix:{}", dir.path().join("m.sock").display());
    let mut m = Manager::spawn(
        Launch::at(&address)
            .arg("--log-format")
            .arg("json")
            // Short enough to wait for, long enough for the others to authenticate in.
            .arg("--auth-timeout")
            .arg("1"),
    );
    m.ready();
    let disconnects = |m: &Manager| -> Vec<String> {
        m.json_logs()
            .iter()
            .filter(|l| l["fields"]["message"] == "disconnected")
            .map(|l| l["fields"]["reason"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let wait_for = |m: &Manager, reason: &str| {
        m.json_log("disconnected", |l| l["fields"]["reason"] == reason);
    };

    // Silent past the authentication timeout.
    let mut silent = RawClient::connect(&address).unwrap();
    while silent.next_frame().is_some() {}
    wait_for(&m, "auth_timeout");

    // A call before authenticating.
    let mut eager = RawClient::connect(&address).unwrap();
    eager.send(&agora_proto::testing::request(1, "ping", vec![]));
    // Told why (an error), then closed.
    while eager.next_frame().is_some() {}
    wait_for(&m, "refused_before_auth");

    // Bytes that are no message, once authenticated.
    let mut garbled = authenticated(&address, &key());
    garbled.send(&[0xc1]);
    while garbled.next_frame().is_some() {}
    wait_for(&m, "protocol_error");

    // A client that leaves, and one that stops the manager.
    drop(authenticated(&address, &key()));
    wait_for(&m, "client_closed");
    let mut stopper = authenticated(&address, &key());
    stopper.ok("shutdown", vec![]);
    assert_eq!(m.wait().code(), Some(0));
    let reasons = disconnects(&m);
    assert!(
        reasons.iter().any(|r| r == "shutdown_requested"),
        "{reasons:?}"
    );
}
