//! The RPC path: single-client calls per second against a raw ping-pong, and dict get/set
//! ops/s of 1, 2, 4... client processes (the `--workers` list) against a raw echo server.

use std::time::Duration;

use agora::{Address, Dict};

use crate::chart::Curve;
use crate::harness::{rate, raw_polls, run_workers, until, RawStream, Samples, Servers};
use crate::progress::Progress;
use crate::report::{Group, Report};

type BoxError = Box<dyn std::error::Error>;

/// The bytes of the `dict.get` request the raw ping-pong mirrors, so both move the same size.
pub fn get_request_bytes(dict_id: u64) -> Vec<u8> {
    let mut id = Vec::new();
    agora_proto::encode::uint(&mut id, dict_id);
    let mut key = Vec::new();
    agora_proto::encode::str(&mut key, "k");
    let mut out = Vec::new();
    agora_proto::encode::request(&mut out, 1, "dict.get", &[&id, &key]);
    out
}

/// Round trips per second of one contender from this process, for `duration`.
fn single(
    duration: Duration,
    mut op: impl FnMut() -> Result<(), BoxError>,
) -> Result<f64, BoxError> {
    let start = std::time::Instant::now();
    let n = until(start + duration, &mut op)?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Where one transport's contenders connect.
pub struct Transport<'a> {
    /// unix or tcp.
    pub name: &'static str,
    /// The manager.
    pub agora: &'a Address,
    /// The raw echo server in the manager's process.
    pub echo: &'a Address,
}

/// The manager and the echo server over a Unix socket, then over TCP loopback.
pub fn transports(servers: &Servers) -> [Transport<'_>; 2] {
    [
        Transport {
            name: "unix",
            agora: &servers.agora_unix,
            echo: &servers.echo_unix,
        },
        Transport {
            name: "tcp",
            agora: &servers.agora_tcp,
            echo: &servers.echo_tcp,
        },
    ]
}

const ONE_CLIENT: Group = Group {
    title: "rpc: one client (ratio vs raw ping-pong)",
    unit: "calls/s",
};

const MANY_CLIENTS: Group = Group {
    title: "dict get/set by client processes (ratio vs raw echo server)",
    unit: "ops/s",
};

/// The measurements [`run`] makes, for the progress bar.
pub fn steps(rounds: usize, workers: &[usize]) -> u64 {
    (rounds * 2 * (3 + 2 * workers.len())) as u64
}

/// The dict the section works on: one key, `k`, and the raw message that mirrors a get of it.
struct Target {
    id: u64,
    message: Vec<u8>,
}

/// Runs the section, adds its rows to `report`, and returns the curves of the dict chart:
/// ops/s by number of client processes, agora and raw, per transport.
pub fn run(
    servers: &Servers,
    rounds: usize,
    workers: &[usize],
    report: &mut Report,
    progress: &Progress,
) -> Result<Vec<Curve>, BoxError> {
    let setup = servers.client(&servers.agora_unix)?;
    let dict: Dict<String, i64> = setup.dict_named("bench")?;
    dict.set("k", &12345)?;
    let target = Target {
        id: dict.id(),
        message: get_request_bytes(dict.id()),
    };
    for t in &transports(servers) {
        one_client(servers, t, &target, rounds, report, progress)?;
    }
    many_clients(servers, &target, rounds, workers, report, progress)
}

/// Single-client calls per second on `t`, beside the raw ping-pong of the same size.
fn one_client(
    servers: &Servers,
    t: &Transport<'_>,
    target: &Target,
    rounds: usize,
    report: &mut Report,
    progress: &Progress,
) -> Result<(), BoxError> {
    let client = servers.client(t.agora)?;
    let d = Dict::<String, i64>::from_id(&client, target.id);
    let mut raw = RawStream::connect(t.echo)?;
    let mut buf = vec![0u8; 1024];
    let raw_label = format!("raw ping-pong ({} B{})", target.message.len(), raw_polls());
    let (mut raw_s, mut get_s, mut set_s) =
        (Samples::default(), Samples::default(), Samples::default());
    let slice = Duration::from_millis(200);
    let section = format!("rpc/{}", t.name);
    for round in 0..rounds {
        raw_s
            .0
            .push(progress.measure(&section, &raw_label, round, || {
                single(slice, || Ok(raw.round_trip(&target.message, &mut buf)?))
            })?);
        get_s
            .0
            .push(progress.measure(&section, "dict.get", round, || {
                single(slice, || Ok(d.get("k").map(drop)?))
            })?);
        set_s
            .0
            .push(progress.measure(&section, "dict.setitem", round, || {
                single(slice, || Ok(d.set("k", &12345)?))
            })?);
    }
    let base = raw_s.median();
    report.row(&ONE_CLIENT, t.name, 1, &raw_label, &raw_s, None);
    report.row(&ONE_CLIENT, t.name, 1, "agora dict.get", &get_s, Some(base));
    report.row(
        &ONE_CLIENT,
        t.name,
        1,
        "agora dict.setitem",
        &set_s,
        Some(base),
    );
    Ok(())
}

/// Raw echo round trips per second from `w` processes at once, for `duration`.
fn raw_workers(
    echo: &Address,
    message: &[u8],
    w: usize,
    duration: Duration,
) -> Result<f64, BoxError> {
    let (echo, msg) = (echo.clone(), message.to_vec());
    run_workers(w, duration, move |_, deadline| {
        let mut raw = RawStream::connect(&echo)?;
        let mut buf = vec![0u8; 1024];
        Ok(until(deadline, || raw.round_trip(&msg, &mut buf))?)
    })
}

/// Dict gets and sets (alternating) per second from `w` processes at once, for `duration`.
fn dict_workers(
    servers: &Servers,
    address: &Address,
    id: u64,
    w: usize,
    duration: Duration,
) -> Result<f64, BoxError> {
    let (address, key) = (address.clone(), servers.authkey.clone());
    run_workers(w, duration, move |_, deadline| {
        let client = agora::Client::connect(&address, &key)?;
        let d = Dict::<String, i64>::from_id(&client, id);
        let mut flip = false;
        Ok(until(deadline, || {
            flip = !flip;
            if flip {
                d.get("k").map(drop)
            } else {
                d.set("k", &7)
            }
        })?)
    })
}

/// Dict get/set ops/s by number of client processes, beside raw echo round trips from as
/// many processes; every transport and worker count once a round.
fn many_clients(
    servers: &Servers,
    target: &Target,
    rounds: usize,
    workers: &[usize],
    report: &mut Report,
    progress: &Progress,
) -> Result<Vec<Curve>, BoxError> {
    let transports = transports(servers);
    // [transport][worker count] -> (raw, agora)
    let mut samples = vec![vec![(Samples::default(), Samples::default()); workers.len()]; 2];
    let slice = Duration::from_millis(300);
    for round in 0..rounds {
        for (t, cells) in transports.iter().zip(&mut samples) {
            for (&w, (raw_s, agora_s)) in workers.iter().zip(cells.iter_mut()) {
                let section = format!("{w} procs/{}", t.name);
                raw_s
                    .0
                    .push(progress.measure(&section, "raw echo", round, || {
                        raw_workers(t.echo, &target.message, w, slice)
                    })?);
                agora_s
                    .0
                    .push(progress.measure(&section, "dict get/set", round, || {
                        dict_workers(servers, t.agora, target.id, w, slice)
                    })?);
            }
        }
    }
    let raw_label = format!(
        "raw echo server ({} B{})",
        target.message.len(),
        raw_polls()
    );
    let mut curves = Vec::new();
    for (t, cells) in transports.iter().zip(&samples) {
        let mut raw_curve = Curve {
            name: format!("raw echo server ({}{})", t.name, raw_polls()),
            points: Vec::new(),
        };
        let mut agora_curve = Curve {
            name: format!("agora dict get/set ({})", t.name),
            points: Vec::new(),
        };
        for (&w, (raw_s, agora_s)) in workers.iter().zip(cells) {
            let base = raw_s.median();
            report.row(&MANY_CLIENTS, t.name, w, &raw_label, raw_s, None);
            report.row(
                &MANY_CLIENTS,
                t.name,
                w,
                "agora dict get/set",
                agora_s,
                Some(base),
            );
            raw_curve.points.push((w, base));
            agora_curve.points.push((w, agora_s.median()));
            progress.note(&format!(
                "  {w} client processes over {}: raw {} ops/s, agora {} ops/s",
                t.name,
                rate(base),
                rate(agora_s.median())
            ));
        }
        curves.push(agora_curve);
        curves.push(raw_curve);
    }
    Ok(curves)
}
