//! The etcd store with real etcd servers and several managers (`--store etcd://...`).
//!
//! Needs the cargo feature `etcd` and an `etcd` program on PATH (see [`harness`]):
//! `cargo test -p agora-manager --features etcd --test etcd`.

mod cluster;
mod failover;
mod harness;
mod locks;
mod queues;
#[path = "../real_binary/mod.rs"]
mod real_binary;
mod signals;
mod values;
