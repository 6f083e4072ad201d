//! `/metrics`: what the manager counts ([`crate::stats`]), in the text format Prometheus
//! scrapes (OpenMetrics), served over plain HTTP on its own TCP listener
//! (`agora-manager --metrics HOST:PORT`).
//!
//! The metrics are read when scraped, from the counters the connections keep anyway: a
//! scrape adds nothing to the path of a call. The HTTP side is the least a scraper needs:
//! `GET /metrics` (a query string is ignored) is answered with the metrics, any other path
//! with 404, any other method on `/metrics` with 405, and the connection is closed after each answer.

use std::fmt::Write as _;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use agora_proto::Kind;

use crate::server::{stopped, Shared};
use crate::stats::method_name;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The longest request head read; a longer one is refused with 431.
const MAX_HEAD: usize = 8 * 1024;

/// How long a scraper has to send its request and take the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Most scrapes served at once; a connection beyond them is closed unanswered.
const MAX_SCRAPES: usize = 8;

/// Reads the manager's state at each scrape.
struct Manager(Arc<Shared>);

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Manager")
    }
}

impl Collector for Manager {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shared = &self.0;
        let stats = &shared.stats;
        let by_method = stats.by_method();
        // Both families are labelled by method; only the count differs.
        let families = [
            (
                "agora_calls",
                "Requests received, by method (\"other\": a method the manager does not have)",
                false,
            ),
            (
                "agora_errors",
                "Requests answered with an error, by method",
                true,
            ),
        ];
        for (name, help, errors) in families {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for &(index, calls, failed) in &by_method {
                let labels = [("method", method_name(index))];
                let n = if errors { failed } else { calls };
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
            }
        }

        let connections = stats.connections();
        let parked: u64 = connections.iter().map(|(_, c)| c.parked()).sum();
        encoder
            .encode_descriptor(
                "agora_parked_calls",
                "Calls parked now, waiting for a grant or their timeout",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&parked)?;
        encoder
            .encode_descriptor(
                "agora_connections",
                "Connections open now",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&(connections.len() as u64))?;
        encoder
            .encode_descriptor(
                "agora_connections_accepted",
                "Connections accepted since the manager started",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, u64>(&stats.accepted(), None)?;

        let mut objects = encoder.encode_descriptor(
            "agora_objects",
            "Live objects, by kind",
            None,
            MetricType::Gauge,
        )?;
        for (kind, n) in Kind::ALL.iter().zip(shared.registry.count_by_kind()) {
            let labels = [("kind", kind.as_str())];
            objects.encode_family(&labels)?.encode_gauge(&n)?;
        }
        encoder
            .encode_descriptor(
                "agora_uptime_seconds",
                "Seconds since the manager started",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&stats.started.elapsed().as_secs_f64())?;
        Ok(())
    }
}

/// The metrics of the manager, in the OpenMetrics text format.
pub fn render(shared: &Arc<Shared>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Manager(shared.clone())));
    let mut text = String::new();
    // Writing to a String cannot fail; an encoder error would leave the text cut short.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        warn!(
            error = e.to_string().as_str(),
            "could not encode the metrics"
        );
    }
    text
}

/// Serves `/metrics` on `listener` until the manager stops.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut stopping = shared.shutdown.subscribe();
    let mut scrapes = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stopping) => break,
            Some(_) = scrapes.join_next() => {}
            accepted = listener.accept() => match accepted {
                // A scrape holds its task for up to IO_TIMEOUT: past a few at once, more are
                // not scrapers but a flood, and each would cost memory until it timed out.
                Ok((_, peer)) if scrapes.len() >= MAX_SCRAPES => {
                    debug!(%peer, "metrics: too many scrapes at once, connection dropped");
                }
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    scrapes.spawn(async move {
                        match tokio::time::timeout(IO_TIMEOUT, answer(stream, &shared)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => debug!(
                                %peer,
                                error = e.to_string().as_str(),
                                "metrics request failed"
                            ),
                            Err(_) => debug!(%peer, "metrics request timed out"),
                        }
                    });
                }
                Err(e) => {
                    warn!(error = e.to_string().as_str(), "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Reads one request and answers it.
async fn answer(mut stream: TcpStream, shared: &Arc<Shared>) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let ended = loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break true;
        }
        if head.len() > MAX_HEAD {
            break false;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    };
    let (status, body) = if ended {
        route(&head, shared)
    } else {
        ("431 Request Header Fields Too Large", String::new())
    };
    let content_type = if status.starts_with("200") {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let mut response = String::new();
    let _ = write!(
        response,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The status and body for a request whose head is `head`.
fn route(head: &[u8], shared: &Arc<Shared>) -> (&'static str, String) {
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => ("200 OK", render(shared)),
        (_, "/metrics") => ("405 Method Not Allowed", "only GET\n".to_owned()),
        _ => ("404 Not Found", "the metrics are at /metrics\n".to_owned()),
    }
}
