//! agora beside Redis on the same work: pipelined `dict.get` against pipelined `GET`, from 1, 4
//! and 16 client processes at depths 1, 16 and 1000, both over a Unix socket, in one run with
//! the contenders interleaved round by round.
//!
//! Redis runs when `redis-server` is on the `PATH` (Debian's `redis-server` package), started
//! here on a private Unix socket with persistence off; without it the section says so and is
//! skipped. The Redis client is a few lines of RESP written here, so that neither side pays
//! for a general-purpose client library: the requests of a batch are encoded once and written
//! in one write, and the replies are only parsed far enough to count them.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agora::{Address, Dict};

use crate::harness::{run_workers, until, Samples, Servers};
use crate::progress::Progress;
use crate::report::{Group, Report};

type BoxError = Box<dyn std::error::Error>;

/// Client processes, and requests in flight per client (1: no pipelining).
const CLIENTS: [usize; 3] = [1, 4, 16];
const DEPTHS: [usize; 3] = [1, 16, 1000];

const GROUP: Group = Group {
    title: "pipelined get: agora dict.get vs Redis GET, unix socket (ratio vs Redis)",
    unit: "gets/s",
};

/// The measurements [`run`] makes, for the progress bar.
pub fn steps(rounds: usize) -> u64 {
    (rounds * CLIENTS.len() * DEPTHS.len() * 2) as u64
}

/// A `redis-server` of this benchmark's own, stopped when dropped.
struct RedisServer {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one, or `Ok(None)` when `redis-server` is not installed.
    fn start() -> Result<Option<RedisServer>, BoxError> {
        let dir = tempfile::Builder::new().prefix("agora-redis-").tempdir()?;
        let socket = dir.path().join("redis.sock");
        let spawned = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&socket)
            .args(["--unixsocketperm", "700"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let server = RedisServer {
            child,
            socket,
            _dir: dir,
        };
        server.wait_ready()?;
        Ok(Some(server))
    }

    fn wait_ready(&self) -> Result<(), BoxError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = Resp::connect(&self.socket) {
                if c.batch(b"*1\r\n$4\r\nPING\r\n", 1).is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err("redis-server did not answer within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection speaking just enough RESP: write a batch, count its replies.
struct Resp {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    line: Vec<u8>,
}

impl Resp {
    fn connect(path: &Path) -> io::Result<Resp> {
        let writer = UnixStream::connect(path)?;
        let reader = BufReader::with_capacity(1 << 16, writer.try_clone()?);
        Ok(Resp {
            writer,
            reader,
            line: Vec::new(),
        })
    }

    /// Writes `requests` (already encoded) and reads `n` replies; an error reply is an error.
    fn batch(&mut self, requests: &[u8], n: usize) -> io::Result<()> {
        self.writer.write_all(requests)?;
        for _ in 0..n {
            self.reply()?;
        }
        Ok(())
    }

    /// Reads one reply of the kinds these commands get: simple string, error, integer, bulk
    /// string (nil included).
    fn reply(&mut self) -> io::Result<()> {
        self.line.clear();
        self.reader.read_until(b'\n', &mut self.line)?;
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let text = self
            .line
            .strip_suffix(b"\r\n")
            .ok_or_else(|| bad("cut reply"))?;
        match text.first() {
            Some(b'+' | b':') => Ok(()),
            Some(b'-') => Err(bad(&String::from_utf8_lossy(text))),
            Some(b'$') => {
                let len: i64 = std::str::from_utf8(&text[1..])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("bad bulk length"))?;
                if len >= 0 {
                    // The payload and its CRLF.
                    let mut skip = (&mut self.reader).take(len as u64 + 2);
                    io::copy(&mut skip, &mut io::sink())?;
                }
                Ok(())
            }
            _ => Err(bad("unexpected reply type")),
        }
    }
}

/// `GET k` `depth` times, encoded.
fn redis_gets(depth: usize) -> Vec<u8> {
    b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".repeat(depth)
}

/// Redis GETs per second from `clients` processes pipelining `depth` each.
fn redis_workers(
    socket: &Path,
    clients: usize,
    depth: usize,
    slice: Duration,
) -> Result<f64, BoxError> {
    let socket = socket.to_path_buf();
    let requests = redis_gets(depth);
    let ops = run_workers(clients, slice, move |_, deadline| {
        let mut c = Resp::connect(&socket)?;
        Ok(until(deadline, || c.batch(&requests, depth))?)
    })?;
    Ok(ops * depth as f64)
}

/// agora `dict.get`s per second from `clients` processes pipelining `depth` each.
fn agora_workers(
    address: &Address,
    authkey: &[u8],
    id: u64,
    clients: usize,
    depth: usize,
    slice: Duration,
) -> Result<f64, BoxError> {
    let (address, key) = (address.clone(), authkey.to_vec());
    let ops = run_workers(clients, slice, move |_, deadline| {
        let client = agora::Client::connect(&address, &key)?;
        let d = Dict::<String, i64>::from_id(&client, id);
        Ok(until(deadline, || -> agora::Result<()> {
            if depth == 1 {
                return d.get("k").map(drop);
            }
            let mut p = client.pipeline();
            for _ in 0..depth {
                p.add(d.get_cmd("k"));
            }
            p.execute()?.check()
        })?)
    })?;
    Ok(ops * depth as f64)
}

/// Runs the section: every (clients, depth) pair, agora then Redis, once a round.
pub fn run(
    servers: &Servers,
    rounds: usize,
    report: &mut Report,
    progress: &Progress,
) -> Result<(), BoxError> {
    let Some(redis) = RedisServer::start()? else {
        progress.note("redis: redis-server is not installed; the Redis comparison is skipped");
        return Ok(());
    };
    let mut setup = Resp::connect(&redis.socket)?;
    setup.batch(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\n12345\r\n", 1)?;
    let client = servers.client(&servers.agora_unix)?;
    let dict: Dict<String, i64> = client.dict_named("bench-redis")?;
    dict.set("k", &12345)?;
    let pairs: Vec<(usize, usize)> = CLIENTS
        .iter()
        .flat_map(|&c| DEPTHS.iter().map(move |&d| (c, d)))
        .collect();
    let mut samples = vec![(Samples::default(), Samples::default()); pairs.len()];
    let slice = Duration::from_millis(300);
    for round in 0..rounds {
        for (&(c, d), (redis_s, agora_s)) in pairs.iter().zip(samples.iter_mut()) {
            let section = format!("redis {c}x{d}");
            agora_s
                .0
                .push(progress.measure(&section, "agora", round, || {
                    agora_workers(
                        &servers.agora_unix,
                        &servers.authkey,
                        dict.id(),
                        c,
                        d,
                        slice,
                    )
                })?);
            redis_s
                .0
                .push(progress.measure(&section, "redis", round, || {
                    redis_workers(&redis.socket, c, d, slice)
                })?);
        }
    }
    for (&(c, d), (redis_s, agora_s)) in pairs.iter().zip(&samples) {
        let base = redis_s.median();
        report.row(
            &GROUP,
            "unix",
            c,
            &format!("Redis GET, depth {d}"),
            redis_s,
            None,
        );
        report.row(
            &GROUP,
            "unix",
            c,
            &format!("agora dict.get, depth {d}"),
            agora_s,
            Some(base),
        );
    }
    Ok(())
}
