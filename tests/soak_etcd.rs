//! The SIGKILL soak of `examples/soak.rs` on the etcd store: a manager keeping its objects in a
//! three-member etcd cluster while workers are killed at random, and the cluster's leader is
//! stopped half way. The checker is the soak's own: nothing lost or given twice, never two
//! holders at once, no ticket sold twice.
//!
//! Needs this crate's feature `etcd` and an `etcd` program (skipped without one unless
//! `AGORA_REQUIRE_ETCD=1`): `cargo test --features etcd --test soak_etcd`.

#[path = "../examples/soak.rs"]
#[allow(dead_code)]
mod soak;

#[path = "../manager/tests/etcd/cluster.rs"]
#[allow(dead_code)]
mod cluster;

use std::time::Duration;

#[test]
fn sigkills_and_a_lost_etcd_leader_lose_nothing_and_break_nothing() {
    if !cluster::available() {
        return;
    }
    let mut etcd = cluster::Etcd::cluster(3);
    let store = etcd.store(&format!("soak-{}", std::process::id()));
    let dir = tempfile::tempdir().expect("a directory for the histories");
    let config = soak::Config {
        duration: Duration::from_secs(16),
        kill_every: Duration::from_millis(200),
        workers: 2,
        store: store.parse().expect("a store"),
    };
    let mut stopped = None;
    let report = soak::run_with(&config, dir.path(), || {
        let leader = etcd.leader().unwrap_or(0);
        etcd.kill_member(leader);
        stopped = Some(leader);
    })
    .expect("run the soak");
    eprintln!("{report}\n(etcd member {stopped:?}, the leader, was stopped half way)");
    if !report.passed() {
        panic!("{report}\nhistories kept in {}", dir.keep().display());
    }
    assert!(stopped.is_some(), "the member was never stopped");
    assert!(report.kills >= 20, "{} kills in 16 s", report.kills);
}
