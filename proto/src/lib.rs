//! The agora wire protocol: MessagePack-RPC framing, envelopes, error names and value semantics.
//!
//! This crate has no I/O policy and no async runtime: the manager and every client share it.
//!
//! # Layout
//! - [`scanner`]: a resumable scanner that finds where a MessagePack value ends, reading each
//!   newly arrived byte once, with [`Limits`] enforced as soon as a header is seen.
//! - [`frame`]: [`FrameDecoder`], a byte buffer plus a scanner, yielding whole messages.
//! - [`envelope`]: the MessagePack-RPC envelope (`[0, msgid, method, params]` and friends)
//!   parsed from one complete message, with params kept as raw encoded slices.
//! - [`params`]: typed access to those raw params, with errors a client can act on.
//! - [`encode`]: writing requests, responses and notifications.
//! - [`error`]: the error names of the protocol (`KeyError`, `UnknownObjectError`, ...).
//! - [`value`]: value semantics shared by server and clients: equality, dict-key identity and
//!   ordering, defined on the value rather than on its encoding.
//! - [`kind`]: [`Kind`], the kinds of shared objects by their wire names.
//! - [`objref`]: the ext type that references another shared object, and a walk that finds
//!   every reference inside a value without decoding it.
//! - [`methods`]: which methods the manager may answer late.
//! - [`spin`]: the polling budget both sides read from `AGORA_SPIN_US`: its parsing, default
//!   and cap (the polling itself stays with the code that polls).
//! - `testing` (with the `testing` feature only): a blocking raw wire client for tests that
//!   must write and read the protocol's bytes themselves.
//!
//! A request's path through the manager: bytes → [`FrameDecoder::next_frame`] → a complete
//! frame → [`envelope::parse`] → [`Params`] → an object operation → [`encode::response_ok`].
//!
//! `PROTOCOL.md` at the root of the repository is the contract this crate implements.

pub mod encode;
pub mod envelope;
pub mod error;
pub mod frame;
pub mod kind;
pub mod methods;
pub mod objref;
pub mod params;
pub mod scanner;
pub mod spin;
#[cfg(feature = "testing")]
pub mod testing;
pub mod value;

pub use envelope::{Envelope, EnvelopeError};
pub use error::{CallError, ErrorName};
pub use frame::{FrameDecoder, FrameError};
pub use kind::Kind;
pub use objref::ObjectRef;
pub use params::Params;
pub use scanner::{Limits, Scanner};

/// The protocol version `hello` reports. Bumped on incompatible changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// MessagePack-RPC message type of a request.
pub const REQUEST: u8 = 0;
/// MessagePack-RPC message type of a response.
pub const RESPONSE: u8 = 1;
/// MessagePack-RPC message type of a notification.
pub const NOTIFICATION: u8 = 2;
