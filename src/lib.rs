//! agora: objects shared between cooperating processes, the way Python's
//! `multiprocessing.Manager` shares them, but fast and safe to rely on.
//!
//! # Architecture
//! - A **manager process** owns the objects: dicts, lists, values, arrays, namespaces. It is the
//!   `agora_manager` library, run in a child of your program by [`Manager::spawn`] (nothing to
//!   install) or as the standalone `agora-manager` program.
//! - Every other process holds **proxies** ([`Dict`], [`List`], ...). A proxy is an object id
//!   and a connection: each operation is one request to the manager, which applies it
//!   atomically and answers. Operations on different objects run in parallel in the manager.
//! - An unnamed object lives while something holds it: a proxy of it in some process, a
//!   reference to it stored in another object, or a handoff to a worker or a token's receiver;
//!   the manager frees it when the last one goes (the client's Lifetime docs say how). Named
//!   objects live until deleted.
//! - They talk **MessagePack-RPC** over a Unix socket or TCP, after proving knowledge of a shared
//!   authkey (HMAC challenge). `PROTOCOL.md` in the repository is the full contract, so clients
//!   in other languages (Python) share the same objects.
//!
//! # Example
//! ```
//! use agora::{Manager, Process};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Start the manager first, while the program has no other threads.
//! let manager = Manager::spawn()?;
//! let scores = manager.dict_named::<String, i64>("scores")?;
//!
//! // A worker forked from this program: the proxy it captured works there too.
//! // `spawn_fallible` lets the closure use `?`; an error exits the worker with status 1.
//! let mut worker = Process::spawn_fallible(|| scores.set("worker", &42))?;
//! assert!(worker.join()?.success());
//! assert_eq!(scores.get("worker")?, Some(42));
//!
//! // A worker that is a program: `command` sets the environment `Client::from_env()` reads.
//! let mut program = Process::start(manager.command("sh").args(["-c", "test -n \"$AGORA_ADDRESS\""]))?;
//! assert!(program.join()?.success());
//!
//! // Dropping the handle stops the manager (so would this program's death, even by SIGKILL).
//! drop(manager);
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`manager`]: [`Manager`], a manager process owned by this program, stopped when the
//!   handle is dropped or the program dies, even by `SIGKILL`.
//! - [`process`]: [`Process`], worker processes forked with a closure or started from a
//!   program, with `join`, `is_alive`, `terminate` as in Python.
//! - The client API ([`Client`], [`Address`] and [`Addresses`], the proxies, [`Error`]) is
//!   re-exported from the `agora_client` crate, and [`ErrorName`] / [`ObjectRef`] / [`Limits`] from `agora_proto`.
//!
//! # Platform
//! Unix only (Linux is what is tested): the manager is started with `fork`, and it is tied to
//! the program's life with a pipe.

#![warn(missing_docs)]

mod fork;
pub mod manager;
pub mod process;

pub use agora_client::*;
pub use agora_proto::{ErrorName, Limits, ObjectRef};

/// Where a spawned manager keeps its objects ([`ManagerBuilder::store`]): memory or etcd.
pub use agora_manager::store::StoreSpec;
pub use manager::{run_manager_if_requested, Manager, ManagerBuilder, SpawnError};
pub use process::Process;

/// The examples in README.md, compiled and run as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
