//! A small tokio server whose request handlers share a counter, a lock and a queue with worker
//! processes, through one [`AsyncClient`] connection.
//!
//! ```text
//! cargo run --example tokio_server            # serves a built-in round of requests, then exits
//! cargo run --example tokio_server -- serve   # serves on 127.0.0.1:7878 until killed
//! ```
//!
//! The protocol is one line per request, one line per answer:
//!
//! - `hit`: adds one to the shared counter, answers its new value;
//! - `note TEXT`: appends TEXT to the shared log while holding the shared lock (the workers
//!   take the same lock), answers the log's length;
//! - `job TEXT`: queues TEXT for the workers, answers `queued`;
//! - `done N`: waits (up to 5 s) until N jobs are done, answers the done count.
//!
//! Worker processes (blocking client) take jobs from the queue, and for each one take the lock,
//! append `worker PID: TEXT` to the log and count it done. A handler waiting for the lock or a
//! reply parks only its task.

use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use agora::aio::AsyncClient;
use agora::{ErrorName, Manager, Process};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The shared objects, by name.
const COUNTER: &str = "hits";
const LOG: &str = "log";
const LOCK: &str = "log-lock";
const JOBS: &str = "jobs";
const DONE: &str = "jobs-done";

/// Starts `n` worker processes; call it before the runtime starts (fork copies only the
/// calling thread).
pub fn start_workers(manager: &Manager, n: usize) -> Result<Vec<Process>, Box<dyn Error>> {
    let mut workers = Vec::with_capacity(n);
    for _ in 0..n {
        let jobs = manager.queue_named::<String>(JOBS, 0)?;
        let lock = manager.lock_named(LOCK)?;
        let log = manager.list_named::<String>(LOG)?;
        let done = manager.value_named(DONE, &0i64)?;
        workers.push(Process::spawn_fallible(move || -> agora::Result<()> {
            let pid = std::process::id();
            loop {
                let job = match jobs.get() {
                    Ok(job) => job,
                    Err(e) if e.is(ErrorName::Closed) => return Ok(()),
                    Err(e) => return Err(e),
                };
                let guard = lock.acquire()?;
                log.append(&format!("worker {pid}: {job}"))?;
                guard.unlock()?;
                done.fetch_add(1)?;
            }
        })?);
    }
    Ok(workers)
}

/// Waits for the workers, which end once the queue is closed and drained.
pub fn join_workers(workers: Vec<Process>) -> Result<(), String> {
    for mut w in workers {
        let status = w.join().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("a worker failed: {status}"));
        }
    }
    Ok(())
}

/// The handlers' view of the shared objects.
pub struct Shared {
    counter: agora::aio::Value<i64>,
    log: agora::aio::List<String>,
    lock: agora::aio::Lock,
    jobs: agora::aio::Queue<String>,
    done: agora::aio::Value<i64>,
}

impl Shared {
    /// Opens the shared objects on `client`.
    pub async fn open(client: &AsyncClient) -> agora::Result<Shared> {
        Ok(Shared {
            counter: client.object(|c| c.value_named(COUNTER, &0i64)).await?,
            log: client.object(|c| c.list_named(LOG)).await?,
            lock: client.object(|c| c.lock_named(LOCK)).await?,
            jobs: client.object(|c| c.queue_named(JOBS, 0)).await?,
            done: client.object(|c| c.value_named(DONE, &0i64)).await?,
        })
    }

    /// Answers one request line.
    pub async fn answer(&self, line: &str) -> agora::Result<String> {
        let (command, arg) = line.split_once(' ').unwrap_or((line, ""));
        Ok(match command {
            "hit" => (self.counter.fetch_add(1).await? + 1).to_string(),
            "note" => {
                let guard = self.lock.lock().await?;
                self.log.append(&arg.to_owned()).await?;
                let len = self.log.len().await?;
                guard.unlock().await?;
                len.to_string()
            }
            "job" => {
                self.jobs.put(&arg.to_owned()).await?;
                "queued".to_owned()
            }
            "done" => {
                let want: i64 = arg.parse().unwrap_or(0);
                let mut done = self.done.get().await?;
                for _ in 0..500 {
                    if done >= want {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    done = self.done.get().await?;
                }
                done.to_string()
            }
            other => format!("error: unknown request {other:?}"),
        })
    }
}

/// Serves one connection: a line in, a line out, until the peer closes.
async fn serve_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let answer = match shared.answer(line.trim()).await {
            Ok(answer) => answer,
            Err(e) => format!("error: {e}"),
        };
        write.write_all(format!("{answer}\n").as_bytes()).await?;
    }
    Ok(())
}

/// Accepts connections on `listener`, a task each, until `stop` resolves.
pub async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(shared, stream).await {
                        eprintln!("tokio_server: a connection failed: {e}");
                    }
                });
            }
            () = &mut stop => return Ok(()),
        }
    }
}

/// One client of the server: sends each request and collects the answers.
pub async fn ask(
    address: std::net::SocketAddr,
    requests: &[String],
) -> std::io::Result<Vec<String>> {
    let stream = TcpStream::connect(address).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut answers = Vec::with_capacity(requests.len());
    for request in requests {
        write.write_all(format!("{request}\n").as_bytes()).await?;
        answers.push(lines.next_line().await?.unwrap_or_default());
    }
    Ok(answers)
}

/// What a built-in round of requests found.
#[derive(Debug)]
pub struct Round {
    /// The counter after every client's hits.
    pub hits: i64,
    /// The log: every client's notes and every worker's job lines.
    pub log: Vec<String>,
    /// Jobs the workers marked done.
    pub done: i64,
}

/// Runs the server on a free port, `clients` clients of `requests` hits, notes and jobs each,
/// then closes the queue (which stops the workers: [`join_workers`] waits for them) and reads
/// the shared objects.
pub async fn round(
    client: &AsyncClient,
    clients: usize,
    requests: usize,
) -> Result<Round, Box<dyn Error + Send + Sync>> {
    let shared = Arc::new(Shared::open(client).await?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(shared.clone(), listener, async {
        let _ = stop_rx.await;
    }));
    let mut asking = tokio::task::JoinSet::new();
    for c in 0..clients {
        let mut lines = Vec::new();
        for r in 0..requests {
            lines.push("hit".to_owned());
            lines.push(format!("note client {c} request {r}"));
            lines.push(format!("job client {c} job {r}"));
        }
        asking.spawn(async move { ask(address, &lines).await });
    }
    while let Some(answers) = asking.join_next().await {
        for answer in answers?? {
            if answer.starts_with("error") {
                return Err(answer.into());
            }
        }
    }
    let total = (clients * requests).to_string();
    let done = ask(address, &[format!("done {total}")]).await?;
    let _ = stop_tx.send(());
    server.await??;
    // The workers stop once the queue is closed and drained.
    shared.jobs.close().await?;
    Ok(Round {
        hits: shared.counter.get().await?,
        log: shared.log.copy().await?,
        done: done[0].parse()?,
    })
}

fn main() -> ExitCode {
    agora::run_manager_if_requested();
    let forever = std::env::args().nth(1).as_deref() == Some("serve");
    let outcome = (|| -> Result<(), Box<dyn Error + Send + Sync>> {
        // Started by executing this program again: the runtime below must not be forked.
        let manager = Manager::builder()
            .reexec()
            .spawn()
            .map_err(|e| e.to_string())?;
        let workers = start_workers(&manager, 2).map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let client = AsyncClient::from_client(manager.client().clone()).await?;
            if forever {
                let shared = Arc::new(Shared::open(&client).await?);
                let listener = TcpListener::bind("127.0.0.1:7878").await?;
                println!("serving on 127.0.0.1:7878 (hit, note TEXT, job TEXT, done N)");
                serve(shared, listener, std::future::pending()).await?;
                return Ok(());
            }
            let round = round(&client, 8, 10).await?;
            println!(
                "{} hits, {} log lines, {} jobs done by the workers",
                round.hits,
                round.log.len(),
                round.done
            );
            Ok::<(), Box<dyn Error + Send + Sync>>(())
        })?;
        Ok(join_workers(workers)?)
    })();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokio_server: {e}");
            ExitCode::FAILURE
        }
    }
}
