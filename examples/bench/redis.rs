//! agora beside Redis on the same work, both over a Unix socket, in one run with the contenders
//! interleaved round by round:
//!
//! - `dict.get` against `GET` (the same key and value), from 1, 4 and 16 client processes at
//!   depths 1 (single calls), 16 and 1000 (pipelined);
//! - the ticket grab with a lock: agora's `Lock` + `Value` (acquire, get, set, release) against
//!   `SET lock NX` (retried at once until it succeeds), `GET`, `SET`, `DEL lock`: four round
//!   trips a ticket either way;
//! - the atomic ticket grab: agora's `fetch_add(-1)` against `DECR`, one round trip a ticket;
//!
//! each grab from 1, 4 and 16 worker processes, checked to sell every ticket exactly once;
//! - for each `dict.get` / `GET` figure, the CPU time the server process spent per get
//!   (`agora-manager` or `redis-server`, read from its CPU clock around the measurement): the
//!   work each side does for a get, which a busy machine moves far less than a rate. agora's
//!   includes its polling for the next request (`AGORA_SPIN_US`), which buys latency with CPU.
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

use crate::chart::Curve;
use crate::harness::{rate, run_to_completion, run_workers, CpuClock, Samples, Servers};
use crate::progress::Progress;
use crate::report::{Group, Report};
use crate::tickets::{check_sale, ManagerGrabs};

type BoxError = Box<dyn std::error::Error>;

/// Client processes, and requests in flight per client (1: no pipelining).
const CLIENTS: [usize; 3] = [1, 4, 16];
const DEPTHS: [usize; 3] = [1, 16, 1000];

const GROUP: Group = Group {
    title: "pipelined get: agora dict.get vs Redis GET, unix socket (ratio vs Redis)",
    unit: "gets/s",
};

const CPU_GROUP: Group = Group {
    title: "server CPU time per get: agora-manager vs redis-server (ratio vs Redis: below 1 is less work)",
    unit: "ns/get",
};

const GRAB_GROUP: Group = Group {
    title: "ticket grab: agora vs Redis, unix socket (ratio vs Redis)",
    unit: "tickets/s",
};

/// Tickets per run of a grab: enough for a few hundred milliseconds (as the tickets section).
const LOCKED_TICKETS: u64 = 1_500;
const ATOMIC_TICKETS: u64 = 6_000;

/// The two grabs, each on both sides: (locked, name of agora's, name of Redis's).
const GRABS: [(bool, &str, &str); 2] = [
    (true, "agora Lock + Value", "Redis SET NX + GET + SET + DEL"),
    (false, "agora fetch_add", "Redis DECR"),
];

/// The measurements [`run`] makes, for the progress bar.
pub fn steps(rounds: usize) -> u64 {
    (rounds * CLIENTS.len() * (DEPTHS.len() + GRABS.len()) * 2) as u64
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

    /// The server's CPU clock.
    fn cpu_clock(&self) -> Option<CpuClock> {
        CpuClock::of(self.child.id())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A RESP reply, as far as the grabs need one.
#[derive(Debug, PartialEq)]
enum Value {
    /// `+OK` and other simple strings.
    Simple,
    /// `:n`.
    Int(i64),
    /// `$n` and its payload; `None` for the nil bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
}

/// One command, encoded as a RESP array of bulk strings.
fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
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

    /// Sends one command and reads its reply.
    fn call(&mut self, request: &[u8]) -> io::Result<Value> {
        self.writer.write_all(request)?;
        self.value()
    }

    /// Reads one reply, keeping what it says (a bulk string's payload included).
    fn value(&mut self) -> io::Result<Value> {
        Ok(match self.head()? {
            Head::Simple => Value::Simple,
            Head::Int(n) => Value::Int(n),
            Head::Bulk(None) => Value::Bulk(None),
            Head::Bulk(Some(len)) => {
                // The payload and its CRLF.
                let mut payload = vec![0u8; len + 2];
                self.reader.read_exact(&mut payload)?;
                payload.truncate(len);
                Value::Bulk(Some(payload))
            }
        })
    }

    /// Reads one reply and drops it, a bulk string's payload unread into memory: the
    /// pipelined gets' loop, which allocates nothing per reply.
    fn reply(&mut self) -> io::Result<()> {
        if let Head::Bulk(Some(len)) = self.head()? {
            let mut skip = (&mut self.reader).take(len as u64 + 2);
            io::copy(&mut skip, &mut io::sink())?;
        }
        Ok(())
    }

    /// Reads a reply's first line: its kind, and a bulk string's length (its payload follows
    /// in the stream). An error reply is an error.
    fn head(&mut self) -> io::Result<Head> {
        self.line.clear();
        self.reader.read_until(b'\n', &mut self.line)?;
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let text = self
            .line
            .strip_suffix(b"\r\n")
            .ok_or_else(|| bad("cut reply"))?;
        let number = |digits: &[u8]| -> io::Result<i64> {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("bad number in a reply"))
        };
        match text.first() {
            Some(b'+') => Ok(Head::Simple),
            Some(b':') => Ok(Head::Int(number(&text[1..])?)),
            Some(b'-') => Err(bad(&String::from_utf8_lossy(text))),
            Some(b'$') => Ok(Head::Bulk(usize::try_from(number(&text[1..])?).ok())),
            _ => Err(bad("unexpected reply type")),
        }
    }
}

/// A reply's first line, as [`Resp::head`] reads it.
enum Head {
    Simple,
    Int(i64),
    /// A bulk string's length; `None` for the nil bulk string (`$-1`).
    Bulk(Option<usize>),
}

/// Runs `op` until `deadline`, reading the clock after every one; returns the count.
///
/// Not the harness's `until`, which reads the clock every 16 operations: a batch of 1000 gets
/// takes about a millisecond, so 16 of them overshot the 300 ms slice by up to a sixth with 16
/// workers (each worker's count is divided by the slice), and counted in steps of 16000 gets.
/// A clock read per call or batch costs nothing next to a round trip.
fn until_each<E>(deadline: Instant, mut op: impl FnMut() -> Result<(), E>) -> Result<u64, E> {
    let mut n = 0u64;
    loop {
        op()?;
        n += 1;
        if Instant::now() >= deadline {
            return Ok(n);
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
        Ok(until_each(deadline, || c.batch(&requests, depth))?)
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
        Ok(until_each(deadline, || -> agora::Result<()> {
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

/// One worker's purchases in Redis until sold out: `DECR`, or (`locked`) `SET lock NX` retried
/// until it succeeds, then `GET`, `SET` one lower, `DEL lock`.
fn redis_buyer(mut c: Resp, locked: bool) -> Result<Vec<u64>, BoxError> {
    let mut bought = Vec::new();
    let unexpected = |v: Value| -> BoxError { format!("unexpected Redis reply {v:?}").into() };
    if !locked {
        let decr = command(&[b"DECR", b"tickets"]);
        loop {
            match c.call(&decr)? {
                // The count after this buyer's decrement: 0..n-1 were tickets n..1.
                Value::Int(left) if left >= 0 => bought.push(left as u64 + 1),
                Value::Int(_) => return Ok(bought),
                other => return Err(unexpected(other)),
            }
        }
    }
    let (acquire, release) = (
        command(&[b"SET", b"lock", b"1", b"NX"]),
        command(&[b"DEL", b"lock"]),
    );
    let get = command(&[b"GET", b"tickets"]);
    loop {
        // Not granted (nil): another buyer holds it; ask again at once.
        while c.call(&acquire)? != Value::Simple {}
        let count: i64 = match c.call(&get)? {
            Value::Bulk(Some(n)) => std::str::from_utf8(&n)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or("the ticket count is not a number")?,
            other => return Err(unexpected(other)),
        };
        if count > 0 {
            let lower = (count - 1).to_string();
            c.call(&command(&[b"SET", b"tickets", lower.as_bytes()]))?;
        }
        c.call(&release)?;
        if count <= 0 {
            return Ok(bought);
        }
        bought.push(count as u64);
    }
}

/// Reports the servers' CPU time per get (`cpu`: (Redis, agora) for each of `pairs`), and
/// judges the target: one client 1000 deep costs the manager less CPU per call than Redis.
fn cpu_rows(
    report: &mut Report,
    pairs: &[(usize, usize)],
    cpu: &[(Samples, Samples)],
) -> Option<String> {
    let mut target = None;
    for (&(c, d), (redis_s, agora_s)) in pairs.iter().zip(cpu) {
        if redis_s.0.is_empty() || agora_s.0.is_empty() {
            continue;
        }
        let base = redis_s.median();
        let redis_name = format!("redis-server, depth {d}");
        report.row(&CPU_GROUP, "unix", c, &redis_name, redis_s, None);
        let agora_name = format!("agora-manager, depth {d}");
        report.row(&CPU_GROUP, "unix", c, &agora_name, agora_s, Some(base));
        if (c, d) == (1, 1000) {
            let ratio = agora_s.median() / base;
            let met = if ratio < 1.0 { "met" } else { "NOT met" };
            target = Some(format!(
                "redis: one client 1000 deep costs the manager {} ns of CPU per dict.get = \
                 {ratio:.2}x redis-server's {} ns per GET (target < 1: {met})",
                rate(agora_s.median()),
                rate(base)
            ));
        }
    }
    target
}

/// Tickets per second selling `n` tickets in Redis with `w` worker processes; checks the sale.
fn redis_grab(socket: &Path, locked: bool, w: usize, n: u64) -> Result<f64, BoxError> {
    let mut setup = Resp::connect(socket)?;
    setup.call(&command(&[b"SET", b"tickets", n.to_string().as_bytes()]))?;
    setup.call(&command(&[b"DEL", b"lock"]))?;
    let socket = socket.to_path_buf();
    let (elapsed, sold) = run_to_completion(w, move || {
        let c = Resp::connect(&socket)?;
        Ok(move || redis_buyer(c, locked))
    })?;
    let name = if locked { GRABS[0].2 } else { GRABS[1].2 };
    check_sale(name, n, &sold)?;
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// What the section hands back: its two charts' curves (by number of clients) and the lines
/// saying whether the target is met.
pub struct Outcome {
    /// gets/s by clients: agora and Redis at each depth.
    pub gets: Vec<Curve>,
    /// tickets/s by workers: agora and Redis, each grab.
    pub grabs: Vec<Curve>,
    /// The targets, judged.
    pub targets: Vec<String>,
}

/// Runs the section: every (clients, depth) pair and every grab at every worker count, agora
/// then Redis, once a round. `Ok(None)` when Redis is not installed.
pub fn run(
    servers: &Servers,
    rounds: usize,
    report: &mut Report,
    progress: &Progress,
) -> Result<Option<Outcome>, BoxError> {
    let Some(redis) = RedisServer::start()? else {
        progress.note("redis: redis-server is not installed; the Redis comparison is skipped");
        return Ok(None);
    };
    let grabs = ManagerGrabs::new(servers)?;
    let slice = Duration::from_millis(300);
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
    // The servers' CPU time per get, as (Redis, agora) for each pair.
    let mut cpu = samples.clone();
    let (agora_clock, redis_clock) = (servers.cpu_clock(), redis.cpu_clock());
    let calls = |rate: &f64| rate * slice.as_secs_f64();
    // [grab][clients]: (Redis, agora).
    let mut grab_samples =
        vec![vec![(Samples::default(), Samples::default()); CLIENTS.len()]; GRABS.len()];
    for round in 0..rounds {
        for (gi, &(locked, agora_name, redis_name)) in GRABS.iter().enumerate() {
            let n = if locked {
                LOCKED_TICKETS
            } else {
                ATOMIC_TICKETS
            };
            for (ci, &w) in CLIENTS.iter().enumerate() {
                let section = format!("redis grab x{w}");
                let (redis_s, agora_s) = &mut grab_samples[gi][ci];
                agora_s.0.push(
                    progress.measure(&section, agora_name, round, || grabs.run(locked, w, n))?,
                );
                redis_s
                    .0
                    .push(progress.measure(&section, redis_name, round, || {
                        redis_grab(&redis.socket, locked, w, n)
                    })?);
            }
        }
        for ((&(c, d), (redis_s, agora_s)), (redis_cpu, agora_cpu)) in
            pairs.iter().zip(samples.iter_mut()).zip(cpu.iter_mut())
        {
            let section = format!("redis {c}x{d}");
            let (gets, per_get) = progress.measure(&section, "agora", round, || {
                let run = || {
                    agora_workers(
                        &servers.agora_unix,
                        &servers.authkey,
                        dict.id(),
                        c,
                        d,
                        slice,
                    )
                };
                CpuClock::per_call(agora_clock.as_ref(), run, calls)
            })?;
            agora_s.0.push(gets);
            agora_cpu.0.extend(per_get);
            let (gets, per_get) = progress.measure(&section, "redis", round, || {
                let run = || redis_workers(&redis.socket, c, d, slice);
                CpuClock::per_call(redis_clock.as_ref(), run, calls)
            })?;
            redis_s.0.push(gets);
            redis_cpu.0.extend(per_get);
        }
    }
    let mut targets = Vec::new();
    let mut slowest: Option<(f64, usize, usize)> = None;
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
        let ratio = agora_s.median() / base;
        if d > 1 && slowest.is_none_or(|(r, ..)| ratio < r) {
            slowest = Some((ratio, c, d));
        }
        if d == 1 {
            targets.push(format!(
                "redis: single calls from {c} client(s): agora dict.get {} gets/s = {ratio:.2}x Redis GET {}",
                rate(agora_s.median()),
                rate(base)
            ));
        }
    }
    if let Some((ratio, c, d)) = slowest {
        let met = if ratio >= 1.0 { "met" } else { "NOT met" };
        targets.push(format!(
            "redis: pipelined dict.get is at least {ratio:.2}x Redis GET at every (clients, depth) \
             of 1, 4, 16 x 16, 1000 (lowest at {c} x {d}) (target >= 1: {met})"
        ));
    }
    targets.extend(cpu_rows(report, &pairs, &cpu));
    for (gi, &(_, agora_name, redis_name)) in GRABS.iter().enumerate() {
        for (ci, &w) in CLIENTS.iter().enumerate() {
            let (redis_s, agora_s) = &grab_samples[gi][ci];
            report.row(&GRAB_GROUP, "unix", w, redis_name, redis_s, None);
            report.row(
                &GRAB_GROUP,
                "unix",
                w,
                agora_name,
                agora_s,
                Some(redis_s.median()),
            );
        }
    }
    let curve = |name: String, medians: Vec<f64>| Curve {
        name,
        points: CLIENTS.iter().copied().zip(medians).collect(),
    };
    let mut gets = Vec::new();
    for &d in &DEPTHS {
        let at = |agora: bool| -> Vec<f64> {
            pairs
                .iter()
                .zip(&samples)
                .filter(|((_, depth), _)| *depth == d)
                .map(|(_, (r, a))| if agora { a.median() } else { r.median() })
                .collect()
        };
        gets.push(curve(format!("agora dict.get, depth {d}"), at(true)));
        gets.push(curve(format!("Redis GET, depth {d}"), at(false)));
    }
    let mut grab_curves = Vec::new();
    for (gi, &(_, agora_name, redis_name)) in GRABS.iter().enumerate() {
        let medians = |agora: bool| -> Vec<f64> {
            grab_samples[gi]
                .iter()
                .map(|(r, a)| if agora { a.median() } else { r.median() })
                .collect()
        };
        grab_curves.push(curve(agora_name.to_owned(), medians(true)));
        grab_curves.push(curve(redis_name.to_owned(), medians(false)));
    }
    Ok(Some(Outcome {
        gets,
        grabs: grab_curves,
        targets,
    }))
}
