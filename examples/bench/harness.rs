//! What every benchmark section shares: the server process, worker processes that run a job
//! for a fixed time, and statistics over interleaved rounds.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use agora::{Address, Client, Dict, Process};
use agora_client::bench_internals::{self as spin, Backoff, Polled};
use agora_manager::{Config, Listener, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The server process: an agora manager and a raw echo server, on a Unix socket and on TCP
/// loopback each, in one process and one tokio runtime, so the raw ping-pong runs between the
/// same two processes as the agora calls.
pub struct Servers {
    process: Process,
    _dir: tempfile::TempDir,
    /// The manager's Unix socket.
    pub agora_unix: Address,
    /// The manager's TCP address.
    pub agora_tcp: Address,
    /// The echo server's Unix socket.
    pub echo_unix: Address,
    /// The echo server's TCP address.
    pub echo_tcp: Address,
    /// The manager's authkey.
    pub authkey: Vec<u8>,
}

fn tcp_listener() -> std::io::Result<std::net::TcpListener> {
    std::net::TcpListener::bind("127.0.0.1:0")
}

impl Servers {
    /// Binds every socket here, then forks the process that serves them.
    pub fn start() -> Result<Servers, Box<dyn std::error::Error>> {
        let dir = tempfile::Builder::new().prefix("agora-bench-").tempdir()?;
        let agora_path = dir.path().join("agora.sock");
        let echo_path = dir.path().join("echo.sock");
        let agora_unix_l = UnixListener::bind(&agora_path)?;
        let echo_unix_l = UnixListener::bind(&echo_path)?;
        let agora_tcp_l = tcp_listener()?;
        let echo_tcp_l = tcp_listener()?;
        let addresses = (
            Address::Unix(agora_path.clone()),
            Address::Tcp(agora_tcp_l.local_addr()?.to_string()),
            Address::Unix(echo_path),
            Address::Tcp(echo_tcp_l.local_addr()?.to_string()),
        );
        let authkey = b"agora benchmark key".to_vec();
        let key = authkey.clone();
        let process = Process::spawn(move || {
            // SAFETY: prctl with PR_SET_PDEATHSIG only sets a flag of this process; the parent
            // is single-threaded, so its forking thread's death is the process's death.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            serve(
                vec![
                    Listener::Unix {
                        listener: agora_unix_l,
                        path: agora_path,
                    },
                    Listener::Tcp(agora_tcp_l),
                ],
                key,
                echo_unix_l,
                echo_tcp_l,
            )
        })?;
        Ok(Servers {
            process,
            _dir: dir,
            agora_unix: addresses.0,
            agora_tcp: addresses.1,
            echo_unix: addresses.2,
            echo_tcp: addresses.3,
            authkey,
        })
    }

    /// The server process's CPU clock (the manager's and the idle echo servers' threads).
    pub fn cpu_clock(&self) -> Option<CpuClock> {
        CpuClock::of(self.process.pid())
    }

    /// A client of the manager at `address`.
    pub fn client(&self, address: &Address) -> agora::Result<Client> {
        Client::connect(address, &self.authkey)
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.join();
    }
}

/// The server process's body: never returns while the parent lives.
fn serve(
    agora: Vec<Listener>,
    authkey: Vec<u8>,
    echo_unix: UnixListener,
    echo_tcp: std::net::TcpListener,
) {
    // The manager's own defaults (agora_manager::config::default_threads), so that the echo
    // floors and the manager run as the agora-manager program would.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(agora_manager::config::default_threads())
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench server: no runtime: {e}");
            return;
        }
    };
    runtime.block_on(async move {
        // A manager's configuration ignores the environment; take AGORA_SPIN_US's budget, as
        // Manager::spawn does, so that one variable sets (or turns off) the polling of every
        // contender.
        let mut config = Config::new(authkey);
        config.spin.budget = spin::budget();
        let server = match Server::new(agora, config) {
            Ok(s) => s,
            Err(e) => return eprintln!("bench server: {e}"),
        };
        tokio::spawn(echo_unix_loop(echo_unix));
        tokio::spawn(echo_tcp_loop(echo_tcp));
        if let Err(e) = server.run(std::future::pending()).await {
            eprintln!("bench server: {e}");
        }
    });
}

/// Echoes every read back in one write: the floor any request/response protocol pays. Like
/// the manager, it polls for the next message after writing before it goes back to sleep.
async fn echo<S>(mut stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + AsRawFd + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    let fd = stream.as_raw_fd();
    let mut polling = EchoPolling::default();
    let mut n = stream.read(&mut buf).await;
    while let Ok(len) = n {
        if len == 0 || stream.write_all(&buf[..len]).await.is_err() {
            return;
        }
        n = match polling.next(fd, &mut buf) {
            Some(len) => Ok(len),
            None => stream.read(&mut buf).await,
        };
    }
}

/// Whether an echo connection is polling: one at a time, as the manager's default allows (on
/// a runtime of more than one thread the others keep serving everybody else).
static ECHO_POLLING: AtomicBool = AtomicBool::new(false);

/// One echo connection's polling for its next message, as the manager polls for a request:
/// holding the runtime thread, without yielding, and backing off (the client's [`Backoff`],
/// budget and poll loop) after polling that was wasted (it found nothing, or its thread lost
/// the CPU meanwhile).
/// The back-off matters: without it, whenever the client or another thread shared this CPU
/// the echo server kept spinning while they waited for the CPU, and one raw round trip in five
/// or so took tens of microseconds (p90 20-70 µs against agora's 8-20).
#[derive(Default)]
struct EchoPolling(Backoff);

impl EchoPolling {
    /// The next message, if polling is due and it comes within the budget. `None`: tokio's
    /// read takes over. Reading behind tokio's back is harmless: a stale readiness only costs
    /// tokio one `EAGAIN`.
    fn next(&mut self, fd: RawFd, buf: &mut [u8]) -> Option<usize> {
        if ECHO_POLLING.swap(true, Ordering::Acquire) {
            return None;
        }
        let polled = self.0.poll_read(fd, buf, std::hint::spin_loop);
        ECHO_POLLING.store(false, Ordering::Release);
        polled
    }
}

async fn echo_unix_loop(listener: UnixListener) {
    let Ok(listener) = listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(listener))
    else {
        return;
    };
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(echo(stream));
    }
}

async fn echo_tcp_loop(listener: std::net::TcpListener) {
    let Ok(listener) = listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
    else {
        return;
    };
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        tokio::spawn(echo(stream));
    }
}

/// A raw connection to the echo server: one message out, the same bytes back.
pub enum RawStream {
    /// Over a Unix socket.
    Unix(UnixStream),
    /// Over TCP (with TCP_NODELAY).
    Tcp(std::net::TcpStream),
}

impl RawStream {
    /// Connects to the echo server.
    pub fn connect(address: &Address) -> std::io::Result<RawStream> {
        Ok(match address {
            Address::Unix(path) => RawStream::Unix(UnixStream::connect(path)?),
            Address::Tcp(host_port) => {
                let s = std::net::TcpStream::connect(host_port)?;
                s.set_nodelay(true)?;
                RawStream::Tcp(s)
            }
            Address::Tls(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "the raw contenders speak plain TCP or Unix sockets",
                ))
            }
        })
    }

    /// Sends `message` and reads as many bytes back, polling for them first as agora's client
    /// polls for a reply.
    pub fn round_trip(&mut self, message: &[u8], buf: &mut [u8]) -> std::io::Result<()> {
        let buf = &mut buf[..message.len()];
        match self {
            RawStream::Unix(s) => ping_pong(s, message, buf),
            RawStream::Tcp(s) => ping_pong(s, message, buf),
        }
    }
}

/// Writes `message`, polls for the reply as agora's client does ([`spin::poll_read`] with the
/// client's budget and [`spin::pause`]), then
/// reads whatever is missing of it with a blocking read. Unlike agora's client it never backs
/// off: the echo answers at once, so polling for it is seldom wasted.
fn ping_pong<S>(s: &mut S, message: &[u8], buf: &mut [u8]) -> std::io::Result<()>
where
    S: Read + Write + AsRawFd,
{
    s.write_all(message)?;
    let got = match spin::poll_read(s.as_raw_fd(), buf, spin::budget(), spin::pause) {
        Polled::Read { len, .. } => len,
        // Nothing polled (or the end of the stream, which read_exact reports): read it all.
        Polled::Nothing => 0,
    };
    s.read_exact(&mut buf[got..])
}

/// What the raw contenders' labels say about polling: whether they poll as agora does.
pub fn raw_polls() -> &'static str {
    if spin::budget().is_zero() {
        ""
    } else {
        ", polls"
    }
}

/// Runs `job` in `clients` worker processes at once for `duration` and returns the total
/// operations per second. Each worker sets up (connects) first; all start together. The job
/// gets its worker's index (0..clients), so that workers can take roles (producer or consumer).
pub fn run_workers<F>(
    clients: usize,
    duration: Duration,
    job: F,
) -> Result<f64, Box<dyn std::error::Error>>
where
    F: Fn(usize, Instant) -> Result<u64, Box<dyn std::error::Error>> + Clone,
{
    let (go_r, go_w) = nix::unistd::pipe()?;
    let (res_r, res_w) = nix::unistd::pipe()?;
    let mut workers = Vec::with_capacity(clients);
    for index in 0..clients {
        let (go_r, res_w) = (go_r.try_clone()?, res_w.try_clone()?);
        let job = job.clone();
        workers.push(Process::spawn(move || {
            worker(go_r, res_w, || job(index, Instant::now() + duration))
        })?);
    }
    drop(go_r);
    drop(res_w);
    // One byte per worker releases them together. (Not end-of-file: every forked worker holds a
    // copy of the write end.)
    std::thread::sleep(Duration::from_millis(20));
    std::fs::File::from(go_w).write_all(&vec![1u8; clients])?;
    let mut results = std::fs::File::from(res_r);
    let mut total = 0u64;
    let mut buf = [0u8; 8];
    for _ in 0..clients {
        results.read_exact(&mut buf)?;
        total += u64::from_le_bytes(buf);
    }
    for mut w in workers {
        let status = w.join()?;
        if !status.success() {
            return Err(format!("a benchmark worker failed: {status}").into());
        }
    }
    Ok(total as f64 / duration.as_secs_f64())
}

/// A worker's body: waits for the go byte, runs `job` (which computes its deadline when it
/// starts), and writes the count it returns to `result`.
fn worker<F>(go: OwnedFd, result: OwnedFd, job: F)
where
    F: FnOnce() -> Result<u64, Box<dyn std::error::Error>>,
{
    let mut go = std::fs::File::from(go);
    let mut byte = [0u8; 1];
    let _ = go.read(&mut byte);
    let count = match job() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("benchmark worker: {e}");
            std::process::exit(1);
        }
    };
    let mut result = std::fs::File::from(result);
    let _ = result.write_all(&count.to_le_bytes());
}

/// Runs `op` until `deadline`, checking the clock every 16 operations; returns the count.
pub fn until<E>(deadline: Instant, mut op: impl FnMut() -> Result<(), E>) -> Result<u64, E> {
    let mut n = 0u64;
    loop {
        for _ in 0..16 {
            op()?;
        }
        n += 16;
        if Instant::now() >= deadline {
            return Ok(n);
        }
    }
}

/// Samples of one contender over the rounds.
#[derive(Default, Clone)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    /// The median.
    pub fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    /// The spread of the rounds: (max - min) / median, the noise of this contender's figures;
    /// none when every round measured the same (a count of zero, say).
    pub fn spread(&self) -> f64 {
        let max = self.0.iter().copied().fold(f64::MIN, f64::max);
        let min = self.0.iter().copied().fold(f64::MAX, f64::min);
        if max == min {
            return 0.0;
        }
        (max - min) / self.median()
    }
}

/// The 1-minute load average, to say how busy the machine was.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// The CPU time one process has used, all its threads, user and system, read from outside it:
/// what a server spent on the work a measurement sent it. It moves far less than a rate when
/// other tenants of the machine take the CPU away (time the hypervisor gives elsewhere is not
/// counted where the kernel accounts for steal; a CPU slowed by its neighbours still shows).
pub struct CpuClock(libc::clockid_t);

impl CpuClock {
    /// The clock of process `pid`; `None` where the system does not give one.
    pub fn of(pid: u32) -> Option<CpuClock> {
        let pid = libc::pid_t::try_from(pid).ok()?;
        let mut id: libc::clockid_t = 0;
        // SAFETY: clock_getcpuclockid writes a clock id into the one we own.
        let rc = unsafe { libc::clock_getcpuclockid(pid, &mut id) };
        (rc == 0).then_some(CpuClock(id))
    }

    /// The CPU time used so far; `None` once the process is gone.
    pub fn now(&self) -> Option<Duration> {
        read_clock(self.0)
    }

    /// Runs `measure`, which makes `calls(result)` calls of this clock's process, and gives
    /// its result with the process's CPU time per call in nanoseconds (`None` when the clock
    /// could not be read or no call was made).
    pub fn per_call<T, E>(
        clock: Option<&CpuClock>,
        measure: impl FnOnce() -> Result<T, E>,
        calls: impl FnOnce(&T) -> f64,
    ) -> Result<(T, Option<f64>), E> {
        let before = clock.and_then(CpuClock::now);
        let result = measure()?;
        let n = calls(&result);
        let after = clock.and_then(CpuClock::now);
        let per_call = match (before, after) {
            (Some(b), Some(a)) if n > 0.0 => Some(a.saturating_sub(b).as_nanos() as f64 / n),
            _ => None,
        };
        Ok((result, per_call))
    }
}

/// The machine's CPU time counters, from `/proc/stat`: how much of a run's CPU time the
/// hypervisor gave to other virtual machines (steal), the noise a load average does not show.
#[derive(Clone, Copy)]
pub struct CpuTimes {
    total: u64,
    steal: u64,
}

impl CpuTimes {
    /// The counters now (`None` where `/proc/stat` cannot be read).
    pub fn now() -> Option<CpuTimes> {
        CpuTimes::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// The counters in the text of `/proc/stat`: its `cpu` line, the sum of every CPU's.
    fn parse(stat: &str) -> Option<CpuTimes> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        // user nice system idle iowait irq softirq steal (guest time is within user's).
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        (fields.len() == 8).then(|| CpuTimes {
            total: fields.iter().sum(),
            steal: fields[7],
        })
    }

    /// The share of all CPU time since `before` that was stolen, in percent.
    pub fn stolen_since(&self, before: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(before.total).filter(|&t| t > 0)?;
        let steal = self.steal.checked_sub(before.steal)?;
        Some(steal as f64 * 100.0 / total as f64)
    }
}

/// "3.2%" of the CPU time between `before` and now stolen, or "?" where it cannot be told.
pub fn stolen_since(before: Option<CpuTimes>) -> String {
    match (before, CpuTimes::now()) {
        (Some(b), Some(now)) => now
            .stolen_since(&b)
            .map_or_else(|| "?".into(), |p| format!("{p:.1}%")),
        _ => "?".into(),
    }
}

/// Formats a rate with thousands separators.
pub fn rate(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Where results are written.
pub fn results_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench-results")
}

/// The time on clock `id` (`clock_gettime`); `None` when it cannot be read.
fn read_clock(id: libc::clockid_t) -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u32::try_from(ts.tv_nsec).ok()?;
    (rc == 0).then(|| Duration::new(secs, nanos))
}

/// Nanoseconds on the system-wide monotonic clock, comparable between processes (Linux's
/// `CLOCK_MONOTONIC`, which never fails to read; `Instant` cannot be sent to another process).
pub fn monotonic_ns() -> u64 {
    read_clock(libc::CLOCK_MONOTONIC).map_or(0, |t| t.as_nanos() as u64)
}

/// Runs a job in each of `workers` processes, all released together, and returns the time
/// from the release to the last worker's finish, with every worker's results concatenated.
///
/// Each process first runs `prepare` (connecting, say) and only then waits for the release:
/// the clock times the work, not `workers` connections being set up at once, which would
/// charge the many-worker runs for handshakes a one-worker run does once. Results travel
/// through files, so a worker never blocks on a full pipe while the clock runs.
pub fn run_to_completion<P, J>(
    workers: usize,
    prepare: P,
) -> Result<(Duration, Vec<u64>), Box<dyn std::error::Error>>
where
    P: Fn() -> Result<J, Box<dyn std::error::Error>> + Clone,
    J: FnOnce() -> Result<Vec<u64>, Box<dyn std::error::Error>>,
{
    let dir = tempfile::Builder::new()
        .prefix("agora-bench-run-")
        .tempdir()?;
    let (go_r, go_w) = nix::unistd::pipe()?;
    let (ready_r, ready_w) = nix::unistd::pipe()?;
    let mut procs = Vec::with_capacity(workers);
    for i in 0..workers {
        let (go_r, ready_w) = (go_r.try_clone()?, ready_w.try_clone()?);
        let (prepare, out) = (prepare.clone(), dir.path().join(format!("{i}")));
        procs.push(Process::spawn(move || {
            let job = prepare();
            // Ready even when preparing failed: the failure is reported after the release.
            let _ = std::fs::File::from(ready_w).write_all(&[1]);
            let mut byte = [0u8; 1];
            let _ = std::fs::File::from(go_r).read(&mut byte);
            let code = match job.and_then(|job| job()) {
                Ok(values) => {
                    let mut bytes = monotonic_ns().to_le_bytes().to_vec();
                    values.iter().for_each(|v| bytes.extend(v.to_le_bytes()));
                    std::fs::write(&out, bytes).map_or(1, |()| 0)
                }
                Err(e) => {
                    eprintln!("benchmark worker: {e}");
                    1
                }
            };
            std::process::exit(code);
        })?);
    }
    drop((go_r, ready_w));
    // Every worker prepared (a worker that died first ends the read early: its status says).
    let mut ready = vec![0u8; workers];
    let _ = std::fs::File::from(ready_r).read_exact(&mut ready);
    let start = monotonic_ns();
    std::fs::File::from(go_w).write_all(&vec![1u8; workers])?;
    for mut p in procs {
        let status = p.join()?;
        if !status.success() {
            return Err(format!("a benchmark worker failed: {status}").into());
        }
    }
    let (mut end, mut all) = (start, Vec::new());
    for i in 0..workers {
        let bytes = std::fs::read(dir.path().join(format!("{i}")))?;
        let mut words = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
        end = end.max(words.next().unwrap_or(start));
        all.extend(words);
    }
    Ok((Duration::from_nanos(end.saturating_sub(start)), all))
}

/// Operations per second of `op`, run from this process for `duration`.
pub fn per_second(
    duration: Duration,
    mut op: impl FnMut() -> Result<(), Box<dyn std::error::Error>>,
) -> Result<f64, Box<dyn std::error::Error>> {
    let start = Instant::now();
    let n = until(start + duration, &mut op)?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// `dict.get` calls per second of `threads` threads for `duration`, thread `i` calling
/// through `clients[i % clients.len()]`. Every client is connected before the clock starts.
pub fn calls_per_second(
    clients: &[Client],
    dict_id: u64,
    threads: usize,
    duration: Duration,
) -> Result<f64, Box<dyn std::error::Error>> {
    let start = Barrier::new(threads + 1);
    let counts = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (client, start) = (&clients[i % clients.len()], &start);
                s.spawn(move || {
                    let d = Dict::<String, i64>::from_id(client, dict_id);
                    start.wait();
                    until(Instant::now() + duration, || d.get("k").map(drop))
                })
            })
            .collect();
        start.wait();
        let began = Instant::now();
        let counts: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        (counts, began.elapsed())
    });
    let (counts, elapsed) = counts;
    let mut total = 0u64;
    for count in counts {
        total += count.map_err(|_| "a calling thread panicked")??;
    }
    Ok(total as f64 / elapsed.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 5 50 800 10 1 2 32 7 0\ncpu0 50 2 25 400 5 0 1 16 3 0\nintr 1 2\n";

    #[test]
    fn cpu_times_are_the_sum_line_with_its_steal() {
        let before = CpuTimes::parse(STAT).expect("a cpu line");
        assert_eq!((before.total, before.steal), (1000, 32));
        let after = CpuTimes::parse(&STAT.replace(
            "cpu  100 5 50 800 10 1 2 32",
            "cpu  150 5 50 1690 10 1 2 92",
        ))
        .expect("a cpu line");
        assert_eq!(after.stolen_since(&before), Some(6.0));
        // No time passed, or counters that went back: nothing to tell.
        assert_eq!(before.stolen_since(&before), None);
        assert_eq!(before.stolen_since(&after), None);
    }

    #[test]
    fn rounds_that_agree_have_no_spread() {
        assert_eq!(Samples(vec![0.0, 0.0, 0.0]).spread(), 0.0);
        assert_eq!(Samples(vec![5.0, 5.0]).spread(), 0.0);
        assert_eq!(Samples(vec![90.0, 100.0, 110.0]).spread(), 0.2);
    }

    #[test]
    fn cpu_times_refuse_what_is_not_a_cpu_line() {
        assert!(CpuTimes::parse("cpu0 1 2 3 4 5 6 7 8\n").is_none());
        assert!(CpuTimes::parse("cpu  1 2 3 4 5 6 7\n").is_none());
        assert!(CpuTimes::parse("cpu  1 2 x 4 5 6 7 8\n").is_none());
    }

    #[test]
    fn a_process_cpu_clock_counts_its_work_per_call() {
        let clock = CpuClock::of(std::process::id()).expect("this process's CPU clock");
        // Spins until this thread has used 20 ms of CPU (by its own clock, however long the
        // machine makes that take).
        let thread_cpu =
            || read_clock(libc::CLOCK_THREAD_CPUTIME_ID).expect("this thread's CPU clock");
        let busy = || -> Result<u64, ()> {
            let until = thread_cpu() + Duration::from_millis(20);
            let mut spins = 0u64;
            while thread_cpu() < until {
                spins = std::hint::black_box(spins + 1);
            }
            Ok(spins)
        };
        let (spins, per_call) =
            CpuClock::per_call(Some(&clock), busy, |_| 1000.0).expect("the work succeeds");
        assert!(spins > 0);
        // 20 ms of this thread's CPU over 1000 calls: the process spent at least 20 us a call.
        let per_call = per_call.expect("the clock was read");
        assert!(per_call >= 20_000.0, "{per_call} ns a call");
        // No calls made, or no clock: no figure.
        assert!(
            CpuClock::per_call(Some(&clock), || Ok::<_, ()>(()), |_| 0.0)
                .expect("ok")
                .1
                .is_none()
        );
        assert!(CpuClock::per_call(None, || Ok::<_, ()>(()), |_| 1.0)
            .expect("ok")
            .1
            .is_none());
    }
}
