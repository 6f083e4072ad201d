//! The SIGKILL soak of `examples/soak.rs`, short: ten seconds with a worker killed every
//! 200 ms, judged by the same checker (`cargo run --release --example soak` runs it long).

#[path = "../examples/soak.rs"]
#[allow(dead_code)]
mod soak;

use std::time::Duration;

#[test]
fn ten_seconds_of_sigkills_lose_nothing_and_break_nothing() {
    let dir = tempfile::tempdir().expect("a directory for the histories");
    let config = soak::Config {
        duration: Duration::from_secs(10),
        kill_every: Duration::from_millis(200),
        workers: 2,
        store: agora::StoreSpec::Memory,
    };
    let report = soak::run(&config, dir.path()).expect("run the soak");
    eprintln!("{report}");
    if !report.passed() {
        panic!("{report}\nhistories kept in {}", dir.keep().display());
    }
    assert!(report.kills >= 20, "{} kills in 10 s", report.kills);
}
