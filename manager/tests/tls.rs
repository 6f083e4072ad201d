//! TLS on TCP, end to end: the `agora-manager` binary started with `--tls-cert` and
//! `--tls-key`, reached by the Rust client and by the Python client at `tls:HOST:PORT`.
//!
//! Every certificate is made by the test itself (rcgen): a CA, and a server certificate it
//! signs for `localhost` only, so that a client given the CA connects to `tls:localhost:PORT`
//! and is refused at `tls:127.0.0.1:PORT` (the same manager, a name the certificate is not for).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agora_client::{Address, Client, ConnectOptions, Error};

#[path = "../../tests/common/python.rs"]
mod python;

const BIN: &str = env!("CARGO_BIN_EXE_agora-manager");
const KEY_HEX: &str = "746c7320746573747320617574686b657920666f7220616761726121212121";

fn key() -> Vec<u8> {
    hex::decode(KEY_HEX).expect("hex")
}

/// A CA, and a certificate and key for `localhost` that it signed, as PEM files in `dir`.
struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_certs(dir: &Path) -> Certs {
    let ca_key = rcgen::KeyPair::generate().expect("a CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "agora test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("the CA certificate");

    let server_key = rcgen::KeyPair::generate().expect("a server key");
    let server_params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
    let server = server_params
        .signed_by(&server_key, &ca)
        .expect("the server certificate");

    let certs = Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    fs::write(&certs.ca, ca.pem()).expect("write ca.pem");
    fs::write(&certs.cert, server.pem()).expect("write cert.pem");
    fs::write(&certs.key, server_key.serialize_pem()).expect("write key.pem");
    certs
}

/// A manager process, killed and reaped when dropped.
struct Running {
    child: Child,
    /// The addresses of its ready line.
    addresses: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// The port of its first `tls:` address.
    fn tls_port(&self) -> u16 {
        self.addresses
            .iter()
            .find_map(|a| a.strip_prefix("tls:127.0.0.1:"))
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no tls: address in {:?}", self.addresses))
    }
}

/// Starts the binary with `args` and reads its ready line.
fn start(args: &[&str]) -> Running {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let stderr = fs::File::create(dir.path().join("stderr.log")).expect("a log file");
    let mut child = Command::new(BIN)
        .args(args)
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
        .expect("read the ready line");
    let log = fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert!(
        line.starts_with("agora-manager ready "),
        "no ready line: {line:?}\n{log}"
    );
    let addresses = line
        .split_whitespace()
        .filter(|w| w.starts_with("tls:") || w.starts_with("tcp:") || w.starts_with("unix:"))
        .map(str::to_owned)
        .collect();
    Running {
        child,
        addresses,
        _dir: dir,
    }
}

/// A manager serving TLS on a loopback port with `certs`, and these extra arguments.
fn start_tls(certs: &Certs, extra: &[&str]) -> Running {
    let (cert, key) = (certs.cert.to_str().unwrap(), certs.key.to_str().unwrap());
    let mut args = vec![
        "--listen",
        "tcp:127.0.0.1:0",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ];
    args.extend_from_slice(extra);
    start(&args)
}

fn with_ca(ca: &Path) -> ConnectOptions {
    ConnectOptions::default().tls_ca_file(Some(ca.to_owned()))
}

/// A TLS manager (with its certificates' directory) and a client of it that trusts its CA.
fn tls_client() -> (tempfile::TempDir, Running, Client) {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let manager = start_tls(&certs, &[]);
    let address: Address = format!("tls:localhost:{}", manager.tls_port())
        .parse()
        .unwrap();
    let client = Client::connect_with(&address, &key(), &with_ca(&certs.ca)).expect("connect");
    (dir, manager, client)
}

#[test]
fn the_rust_client_works_over_tls() {
    let (_dir, _manager, client) = tls_client();
    client.ping().expect("ping");

    let dict = client.dict::<String, Vec<u8>>().unwrap();
    dict.set("small", &vec![1, 2, 3]).unwrap();
    assert_eq!(dict.get("small").unwrap(), Some(vec![1, 2, 3]));
    // Larger than a TLS record (16 KiB) and than one encrypted write (64 KiB), both ways.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    dict.set("big", &big).unwrap();
    assert_eq!(dict.get("big").unwrap().as_deref(), Some(&big[..]));

    // Threads share the connection: replies are read by whichever thread leads.
    let queue = client.queue::<u64>(0).unwrap();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (dict, queue) = (dict.clone(), queue.clone());
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    let key = format!("t{t}-{i}");
                    dict.set(&key, &vec![t as u8; (i % 40) as usize]).unwrap();
                    assert_eq!(
                        dict.get(&key).unwrap().map(|v| v.len()),
                        Some((i % 40) as usize)
                    );
                }
                queue.put(&t).unwrap();
            })
        })
        .collect();
    let mut got: Vec<u64> = (0..4)
        .map(|_| {
            queue
                .get_timeout(Duration::from_secs(60))
                .unwrap()
                .expect("an item")
        })
        .collect();
    for t in threads {
        t.join().expect("a thread failed");
    }
    got.sort_unstable();
    assert_eq!(got, [0, 1, 2, 3]);

    // A call the manager parks, answered later on the same TLS stream.
    let started = Instant::now();
    assert_eq!(queue.get_timeout(Duration::from_millis(300)).unwrap(), None);
    assert!(started.elapsed() >= Duration::from_millis(250));

    // A pipeline: many requests in one write, many replies in one read.
    let mut pipeline = client.pipeline();
    let handles: Vec<_> = (0..100)
        .map(|i| pipeline.add(dict.get_cmd(&format!("t0-{i}"))))
        .collect();
    let replies = pipeline.execute().unwrap();
    for (i, handle) in handles.into_iter().enumerate() {
        assert_eq!(replies.get(handle).unwrap().map(|v| v.len()), Some(i % 40));
    }

    // Calls with a deadline wait for the socket to be readable, then decrypt what came.
    let small = client.run_within(dict.get_cmd("small"), Duration::from_secs(30));
    assert_eq!(small.unwrap(), Some(vec![1, 2, 3]));
    let big_again = client.run_within(dict.get_cmd("big"), Duration::from_secs(30));
    assert_eq!(big_again.unwrap().as_deref(), Some(&big[..]));
    let started = Instant::now();
    let err = client
        .run_within(queue.get_cmd(), Duration::from_millis(300))
        .expect_err("an empty queue's get past its deadline");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
}

#[test]
fn the_certificate_is_verified() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let manager = start_tls(&certs, &[]);
    let port = manager.tls_port();
    let localhost: Address = format!("tls:localhost:{port}").parse().unwrap();

    // Without the CA, only the system's roots are trusted: none signed this certificate.
    let err = Client::connect_with(&localhost, &key(), &ConnectOptions::default())
        .expect_err("a certificate no trusted CA signed");
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");

    // With the CA, but at an address the certificate is not for.
    let by_ip: Address = format!("tls:127.0.0.1:{port}").parse().unwrap();
    let err = Client::connect_with(&by_ip, &key(), &with_ca(&certs.ca))
        .expect_err("a certificate for another name");
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("not valid"), "{err}");

    // A CA file that is not one.
    let err =
        Client::connect_with(&localhost, &key(), &with_ca(&certs.key)).expect_err("a key is no CA");
    assert!(err.to_string().contains("key.pem"), "{err}");

    // The manager is unharmed by all that.
    let client = Client::connect_with(&localhost, &key(), &with_ca(&certs.ca)).expect("connect");
    client.ping().unwrap();
}

#[test]
fn a_plain_client_on_a_tls_port_gets_no_session() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let manager = start_tls(&certs, &[]);
    let port = manager.tls_port();

    // The Rust client at tcp: is refused at once (the handshake timeout is 10 s).
    let started = Instant::now();
    let plain: Address = format!("tcp:127.0.0.1:{port}").parse().unwrap();
    let err = Client::connect_with(&plain, &key(), &ConnectOptions::default())
        .expect_err("a plain client on a TLS port");
    assert!(
        matches!(err, Error::NotAManager { .. } | Error::Disconnected { .. }),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Raw bytes: a hello request gets no MessagePack-RPC answer, only TLS's alert and the end
    // of the stream.
    let mut socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut hello = Vec::new();
    agora_proto::encode::request(&mut hello, 0, "hello", &[]);
    socket.write_all(&hello).unwrap();
    let mut answer = Vec::new();
    match socket.read_to_end(&mut answer) {
        Ok(_) => {}
        // Closed with our request unread: a reset, which is an end too.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the connection was not closed: {e}"),
    }
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "not a TLS alert: {answer:02x?}"
    );
}

#[test]
fn a_connection_past_the_limit_is_closed_before_its_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let manager = start_tls(&certs, &["--max-connections", "1"]);
    let address: Address = format!("tls:localhost:{}", manager.tls_port())
        .parse()
        .unwrap();
    let first = Client::connect_with(&address, &key(), &with_ca(&certs.ca)).expect("connect");
    let started = Instant::now();
    let err = Client::connect_with(&address, &key(), &with_ca(&certs.ca))
        .expect_err("one connection at most");
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("--max-connections"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The place frees when the first connection ends.
    first.ping().unwrap();
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Client::connect_with(&address, &key(), &with_ca(&certs.ca)) {
            Ok(client) => break client.ping().unwrap(),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("the place was not freed: {e}"),
        }
    }
}

/// A TLS client that pipelines requests and never reads leaves encrypted replies waiting in
/// the manager, which must still close it (here when it fails to authenticate in time) and
/// give its place back: closing a TLS connection never waits for the client to read.
#[test]
fn a_client_that_never_reads_does_not_keep_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let manager = start_tls(&certs, &["--max-connections", "1", "--auth-timeout", "1"]);
    let port = manager.tls_port();

    let mut roots = rustls::RootCertStore::empty();
    let ca = fs::read(&certs.ca).unwrap();
    let ca = rustls::pki_types::pem::PemObject::from_pem_slice(&ca).expect("the CA");
    roots.add(ca).unwrap();
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut stream = rustls::StreamOwned::new(tls, socket);
    // Far more hello replies than the socket buffers hold; the manager stops reading once
    // 64 KiB of them wait unwritten, and then these writes stall (and time out).
    let mut hellos = Vec::new();
    for msgid in 0..10_000 {
        agora_proto::encode::request(&mut hellos, msgid, "hello", &[]);
    }
    for _ in 0..20 {
        if stream.write_all(&hellos).is_err() {
            break;
        }
    }

    // The auth timeout closes it; then the one place is free again.
    let address: Address = format!("tls:localhost:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match Client::connect_with(&address, &key(), &with_ca(&certs.ca)) {
            Ok(client) => break client.ping().unwrap(),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("the place of a closed client was never given back: {e}"),
        }
    }
    drop(stream);
}

#[test]
fn a_handshake_never_finished_ends_with_the_auth_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let manager = start_tls(&certs, &["--auth-timeout", "1"]);
    // Half a TLS record header, then nothing.
    let mut socket = TcpStream::connect(("127.0.0.1", manager.tls_port())).unwrap();
    socket.write_all(&[0x16, 0x03]).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = socket.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        read.is_ok()
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "not closed: {read:?}"
    );
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(10),
        "closed after {waited:?}, not after the 1 s auth timeout"
    );
}

#[test]
fn a_tls_client_on_a_plain_port_is_told_so() {
    let manager = start(&["--listen", "tcp:127.0.0.1:0"]);
    let port = manager.addresses[0]
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("a port");
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let address: Address = format!("tls:localhost:{port}").parse().unwrap();
    let err = Client::connect_with(&address, &key(), &with_ca(&certs.ca))
        .expect_err("a TLS client on a plain port");
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("--tls-cert"), "{err}");
}

#[test]
fn the_tls_flags_are_checked_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env("AGORA_AUTHKEY", KEY_HEX)
            .stdin(Stdio::null())
            .output()
            .expect("run agora-manager");
        assert!(!out.status.success(), "{args:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let (cert, key) = (certs.cert.to_str().unwrap(), certs.key.to_str().unwrap());
    let alone = run(&["--listen", "tcp:127.0.0.1:0", "--tls-cert", cert]);
    assert!(alone.contains("--tls-key"), "{alone}");
    let no_tcp = run(&["--tls-cert", cert, "--tls-key", key]);
    assert!(no_tcp.contains("tcp:HOST:PORT"), "{no_tcp}");
    let swapped = run(&[
        "--listen",
        "tcp:127.0.0.1:0",
        "--tls-cert",
        key,
        "--tls-key",
        cert,
    ]);
    assert!(
        swapped.contains("key.pem") || swapped.contains("cert.pem"),
        "{swapped}"
    );
    let listen_tls = run(&["--listen", "tls:127.0.0.1:0"]);
    assert!(listen_tls.contains("--tls-cert"), "{listen_tls}");
}

/// The Python client at `tls:localhost:PORT`, with the CA given as `AGORA_TLS_CA`: it works,
/// and without the CA (the system's roots only) it is refused with `agora.TLSError`.
#[test]
fn the_python_client_works_over_tls() {
    let deps = python::PythonDeps::ensure();
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let manager = start_tls(&certs, &[]);
    let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("../client/python");
    let script = r#"
import os, sys
import agora

address, key, ca = sys.argv[1], sys.argv[2], sys.argv[3]
m = agora.connect(address, key)
d = m.dict()
d["small"] = [1, 2, 3]
big = bytes(range(256)) * 8000
d["big"] = big
assert d["small"] == [1, 2, 3], d["small"]
assert d["big"] == big
q = m.Queue()
q.put("item")
assert q.get(timeout=5) == "item"
with agora.deadline(5):
    m.ping()

del os.environ["AGORA_TLS_CA"]
try:
    agora.connect(address.replace("localhost", "127.0.0.1"), key, tls_ca=ca)
except agora.TLSError as e:
    assert "not valid" in str(e), e
else:
    sys.exit("a certificate for another name was accepted")
import agora.connection
agora.connection._clients.clear()
try:
    agora.connect(address, key)
except agora.TLSError as e:
    print("refused without the CA:", e)
else:
    sys.exit("a certificate no trusted CA signed was accepted")
print("ok")
"#;
    let address = format!("tls:localhost:{}", manager.tls_port());
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&address)
        .arg(KEY_HEX)
        .arg(&certs.ca)
        .env("PYTHONPATH", deps.python_path(&[&package]))
        .env("AGORA_TLS_CA", &certs.ca)
        .output()
        .expect("run python3");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("ok"),
        "the Python client failed:\n{stdout}{stderr}"
    );
}

/// The async client speaks TLS too, with the blocking client's session set-up (its CA file).
#[test]
fn the_async_client_works_over_tls() {
    use agora_client::aio::AsyncClient;

    let (_dir, _manager, client) = tls_client();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = AsyncClient::from_client(client)
            .await
            .expect("an async TLS connection");
        let dict = c.object(|c| c.dict::<String, Vec<u8>>()).await.unwrap();
        // Larger than a TLS record, both ways.
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        dict.set("big", &big).await.unwrap();
        assert_eq!(dict.get("big").await.unwrap(), Some(big));
        let lock = c.object(|c| c.lock()).await.unwrap();
        lock.lock().await.unwrap().unlock().await.unwrap();
    });
}
