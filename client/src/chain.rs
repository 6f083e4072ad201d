//! Two calls as one `chain` request (`PROTOCOL.md`, section 4.16): one round trip, and when the
//! first waits, the second runs in the manager the moment the first is answered.
//!
//! The lock proxies build their `acquire_then` and `unlock_after` on it: a critical section of
//! a read and a write under a lock costs two round trips instead of four, and under contention
//! the lock passes on without waiting for the next holder to wake up and send its first call.

use bytes::Bytes;

use crate::client::Client;
use crate::command::{Args, Cmd};
use crate::connection::remote_error;
use crate::error::{Error, Result};

/// The two results of a chain: the first call's, and the second's (`None`: not run, because
/// the first failed or did not get what it waited for).
pub(crate) type Pair<A, B> = (Result<A>, Option<Result<B>>);

/// Runs `first` then `second` as one chain. Fails as a whole only when the request fails (the
/// connection, a stale proxy, a malformed chain); each call's own error is in its place.
pub(crate) fn run<A, B>(client: &Client, first: Cmd<A>, second: Cmd<B>) -> Result<Pair<A, B>> {
    let run = if first.run != 0 {
        first.run
    } else {
        second.run
    };
    let mut params = Args::default();
    params.raw(&call(&first.method, first.args?));
    params.raw(&call(&second.method, second.args?));
    let mut chain = Cmd::with_args("chain", params, crate::command::decode::bytes);
    chain.run = run;
    let decoders = (first.decode, second.decode);
    client.run_decoding(chain, |reply| {
        let mut entries = entries(&reply?)?.into_iter();
        let one = entries.next().flatten().map(decoders.0).ok_or_else(|| {
            Error::Protocol("a chain's reply has no entry for its first call".into())
        })?;
        Ok((one, entries.next().flatten().map(decoders.1)))
    })
}

/// `[method, [params...]]`, encoded.
fn call(method: &str, args: Args) -> Vec<u8> {
    let mut out = Vec::with_capacity(args.bytes().len() + method.len() + 8);
    agora_proto::encode::array_header(&mut out, 2);
    agora_proto::encode::str(&mut out, method);
    agora_proto::encode::array_header(&mut out, args.count() as usize);
    out.extend_from_slice(args.bytes());
    out
}

/// A chain's result split into its entries: `None` for a call that did not run, else the
/// call's reply.
fn entries(result: &Bytes) -> Result<Vec<Option<std::result::Result<Bytes, Error>>>> {
    let bad = || Error::Protocol("a chain's reply is not an array of entries".into());
    let items = agora_proto::params::array_items(result).ok_or_else(bad)?;
    items
        .into_iter()
        .map(|entry| {
            if agora_proto::params::is_nil(entry) {
                return Ok(None);
            }
            let pair = agora_proto::params::array_items(entry).ok_or_else(bad)?;
            let [error, value] = pair.as_slice() else {
                return Err(bad());
            };
            Ok(Some(if agora_proto::params::is_nil(error) {
                Ok(result.slice_ref(value))
            } else {
                Err(remote_error(error))
            }))
        })
        .collect()
}
