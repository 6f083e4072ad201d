//! Issue-level benchmark of the RPC path: single-client round trips against a raw ping-pong,
//! and total throughput of many client processes against a raw echo server.

use std::time::Duration;

use agora::{Address, Dict};

use crate::harness::{rate, run_workers, until, RawStream, Samples, Servers};
use crate::report::Report;

type BoxError = Box<dyn std::error::Error>;

/// The bytes of the `dict.get` request the raw ping-pong mirrors, so both move the same size.
fn get_request_bytes(dict_id: u64) -> Vec<u8> {
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

struct Transport<'a> {
    name: &'static str,
    agora: &'a Address,
    echo: &'a Address,
}

/// Runs the section and adds its rows to `report`.
pub fn run(
    servers: &Servers,
    rounds: usize,
    clients: &[usize],
    report: &mut Report,
) -> Result<(), BoxError> {
    let setup = servers.client(&servers.agora_unix)?;
    let dict: Dict<String, i64> = setup.dict_named("bench")?;
    dict.set("k", &12345)?;
    let message = get_request_bytes(dict.id());
    let transports = [
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
    ];

    for t in &transports {
        let client = servers.client(t.agora)?;
        let d = Dict::<String, i64>::from_id(&client, dict.id());
        let mut raw = RawStream::connect(t.echo)?;
        let mut buf = vec![0u8; 1024];
        let (mut raw_s, mut get_s, mut set_s) =
            (Samples::default(), Samples::default(), Samples::default());
        let slice = Duration::from_millis(200);
        for _ in 0..rounds {
            raw_s
                .0
                .push(single(slice, || Ok(raw.round_trip(&message, &mut buf)?))?);
            get_s.0.push(single(slice, || Ok(d.get("k").map(drop)?))?);
            set_s.0.push(single(slice, || Ok(d.set("k", &12345)?))?);
        }
        let base = raw_s.median();
        report.row(
            "rpc",
            t.name,
            1,
            &format!("raw ping-pong ({} B)", message.len()),
            &raw_s,
            None,
        );
        report.row("rpc", t.name, 1, "agora dict.get", &get_s, Some(base));
        report.row("rpc", t.name, 1, "agora dict.setitem", &set_s, Some(base));
    }

    for t in &transports {
        for &c in clients {
            let (mut raw_s, mut agora_s) = (Samples::default(), Samples::default());
            let slice = Duration::from_millis(300);
            for _ in 0..rounds {
                let echo = t.echo.clone();
                let msg = message.clone();
                raw_s.0.push(run_workers(c, slice, move |deadline| {
                    let mut raw = RawStream::connect(&echo)?;
                    let mut buf = vec![0u8; 1024];
                    Ok(until(deadline, || raw.round_trip(&msg, &mut buf))?)
                })?);
                let (address, key, id) = (t.agora.clone(), servers.authkey.clone(), dict.id());
                agora_s.0.push(run_workers(c, slice, move |deadline| {
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
                })?);
            }
            let base = raw_s.median();
            report.row("throughput", t.name, c, "raw echo server", &raw_s, None);
            report.row(
                "throughput",
                t.name,
                c,
                "agora dict get/set",
                &agora_s,
                Some(base),
            );
            eprintln!(
                "  {} clients over {}: raw {} ops/s, agora {} ops/s",
                c,
                t.name,
                rate(base),
                rate(agora_s.median())
            );
        }
    }
    Ok(())
}
