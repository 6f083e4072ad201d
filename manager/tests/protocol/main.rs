//! The wire contract (`PROTOCOL.md`), tested with raw bytes against a real manager.
//!
//! No client library is involved: each test starts an in-process manager on a Unix socket in a
//! temporary directory (one also on TCP), writes MessagePack bytes built by hand or with `rmpv`,
//! and reads the replies with `agora_proto::testing::RawClient`. Every socket has a read
//! timeout, so a manager that fails to answer makes a test fail instead of hanging it.
//!
//! One test binary, one module a topic:
//!
//! - [`support`]: the manager under test and the helpers every module shares;
//! - [`handshake`], [`framing`], [`limits`]: sections 1 and 2 of `PROTOCOL.md`;
//! - [`registry`], [`dict`], [`list`], [`value_array_namespace`], [`set`]: the methods of
//!   section 4;
//! - [`keys_and_values`]: value semantics, section 3;
//! - [`concurrency`], [`tcp`], [`bad_arguments`]: many clients, the other transport, argument
//!   values a method cannot take;
//! - [`waiting`], [`locks`], [`polling`], [`cancel`]: parked calls, lock hand-over, the manager's
//!   polling for a next request;
//! - [`chain`]: calls run back to back in one request, the first of which may wait;
//! - [`lifecycle`]: deletion of objects with parked calls, and grants to connections that leave;
//! - [`redelivery`]: queue items a connection got and did not finish come back when it closes;
//! - [`fuzz`]: random pipelines of well-formed and malformed messages, each request answered
//!   exactly once;
//! - [`method_table`]: the manager against `agora_proto::methods`: every listed method is known
//!   with its documented param counts, every other `<kind>.<method>` is `UnknownMethodError`.

#[macro_use]
mod support;

mod bad_arguments;
mod cancel;
mod chain;
mod concurrency;
mod dict;
mod framing;
mod fuzz;
mod handshake;
mod holders;
mod keys_and_values;
mod lifecycle;
mod limits;
mod list;
mod locks;
mod method_table;
mod mutex;
mod ownership;
mod polling;
mod redelivery;
mod registry;
mod set;
mod tcp;
mod value_array_namespace;
mod waiting;
