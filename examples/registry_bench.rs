//! Object create+delete per second with many clients at once: the registry's own throughput.
//!
//! ```text
//! cargo build --release -p agora-manager
//! cargo run --release --example registry_bench -- [--clients 16] [--seconds 3]
//!     [--manager PATH]...
//! ```
//!
//! Each `--manager` is an `agora-manager` binary (default: the release build of this
//! workspace); give two to compare builds. For each binary in turn, round after round (so a
//! burst of load from elsewhere hits every binary alike), the benchmark starts the manager on a
//! Unix socket, has every client thread, each with its own connection, create an unnamed dict
//! and delete it in a loop for the given time, and prints the cycles per second of the round;
//! at the end, the median of the rounds per binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_client::{Address, Client};

/// The authkey of the benchmark's managers, as hex for `AGORA_AUTHKEY`.
const KEY: &[u8] = b"registry bench key";

struct Options {
    clients: usize,
    seconds: f64,
    rounds: usize,
    managers: Vec<PathBuf>,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        clients: 16,
        seconds: 3.0,
        rounds: 3,
        managers: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--clients" => o.clients = value()?.parse().map_err(|e| format!("--clients: {e}"))?,
            "--seconds" => o.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--rounds" => o.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--manager" => o.managers.push(PathBuf::from(value()?)),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if o.managers.is_empty() {
        o.managers
            .push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/agora-manager"));
    }
    Ok(o)
}

/// A manager process, killed when dropped.
struct Manager(Child);

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `binary` on a socket in `dir` and waits until it takes connections.
fn start(binary: &Path, dir: &Path) -> Result<(Manager, Address), String> {
    let socket = dir.join("manager.sock");
    let child = Command::new(binary)
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .env("AGORA_AUTHKEY", hex::encode(KEY))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let manager = Manager(child);
    let address = Address::Unix(socket);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Client::connect(&address, KEY).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{} did not start listening", binary.display()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok((manager, address))
}

/// One round against `binary`: create+delete cycles per second over all clients.
fn round(binary: &Path, o: &Options) -> Result<f64, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (_manager, address) = start(binary, dir.path())?;
    let clients: Vec<Client> = (0..o.clients)
        .map(|_| Client::connect(&address, KEY).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    let cycles = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let (stop, cycles) = (stop.clone(), cycles.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = client
                        .create("dict", None, &[])
                        .map_err(|e| e.to_string())?;
                    client.delete(id).map_err(|e| e.to_string())?;
                    n += 1;
                }
                cycles.fetch_add(n, Ordering::Relaxed);
                Ok(())
            })
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(o.seconds));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| "a client thread panicked")??;
    }
    Ok(cycles.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

fn main() -> Result<(), String> {
    let o = options()?;
    let mut figures = vec![Vec::new(); o.managers.len()];
    for r in 0..o.rounds {
        for (binary, figures) in o.managers.iter().zip(&mut figures) {
            let per_second = round(binary, &o)?;
            println!(
                "round {}: {:>10.0} create+delete/s  {}",
                r + 1,
                per_second,
                binary.display()
            );
            figures.push(per_second);
        }
    }
    println!("median of {} rounds, {} clients:", o.rounds, o.clients);
    for (binary, mut figures) in o.managers.iter().zip(figures) {
        figures.sort_by(f64::total_cmp);
        let median = figures[figures.len() / 2];
        println!("{median:>10.0} create+delete/s  {}", binary.display());
    }
    Ok(())
}
