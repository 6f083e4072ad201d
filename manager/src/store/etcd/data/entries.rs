//! Dicts and namespaces in etcd: each entry a key of its own, so that a call writes the entries
//! it changed, not the whole object.
//!
//! # Keys
//! Under the object's prefix `P o/ID/`:
//! - `state`: the header `GEN NEXT SEEDED`: the generation the entries are under, the next
//!   place number, and whether the entries are in etcd at all (an object created with more
//!   entries than one transaction takes starts unseeded: its content is its `meta`'s init args
//!   until its first write). Every write rewrites it, so its revision is the object's, and the
//!   compare-and-swap of a round is on it, as for the other value kinds.
//! - `e/GEN/HEX`: one entry, its key's encoding in hex; valued its place (8 bytes, big-endian)
//!   then its value's encoding. Places keep the insertion order Python's dicts have: an
//!   updated entry keeps its place, a deleted and re-inserted one takes a new, last one.
//!
//! # Writes
//! A round whose changes fit in one transaction ([`SMALL_OPS`] keys, [`SMALL_BYTES`]) puts and
//! deletes the changed entries and rewrites the header, if the header is still the one read.
//! A larger one (an `update` of thousands of items, a first write of an unseeded object)
//! writes the whole new content as a new generation, in transactions of that size that nobody
//! reads yet, then switches the header to it and deletes the old generation in one transaction,
//! if the header is still the one read; else it deletes what it wrote and the round runs again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, TxnOp};

use agora_proto::params::{array_items, map_entries};
use agora_proto::{encode, CallError, Params};

use crate::lifecycle::next_waiter_id;
use crate::objects::{self, Kind, ObjectHandle};

use super::super::EtcdStore;
use super::deleted;

/// Most keys a round writes in place; a round that changes more writes a new generation.
const SMALL_OPS: usize = 100;

/// Most bytes of entries one transaction carries (etcd refuses requests over 1.5 MiB).
const SMALL_BYTES: usize = 512 * 1024;

/// Most times a load reads the header again because the object changed between two reads.
const MAX_LOADS: usize = 100;

/// An entry's key and value encodings, as a snapshot holds them.
type Pair<'a> = (&'a [u8], &'a [u8]);

/// An entry to write: its key's encoding, its place, its value's encoding.
type Placed<'a> = (&'a [u8], u64, &'a [u8]);

/// An entry as read from etcd: its key's encoding, its place, its value's encoding.
type Read = (Vec<u8>, u64, Vec<u8>);

/// The header key's value, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    gen: String,
    next: u64,
    seeded: bool,
}

impl Header {
    fn encode(&self) -> String {
        format!("{} {} {}", self.gen, self.next, u8::from(self.seeded))
    }

    fn decode(raw: &[u8]) -> Option<Header> {
        let text = std::str::from_utf8(raw).ok()?;
        let mut parts = text.split(' ');
        let gen = parts.next()?.to_owned();
        let next = parts.next()?.parse().ok()?;
        let seeded = parts.next()? == "1";
        Some(Header { gen, next, seeded })
    }
}

/// The entries of an object as etcd has them: each key's place and value, by key encoding.
pub struct Entries {
    header: Header,
    places: HashMap<Vec<u8>, (u64, Vec<u8>)>,
}

/// What a round changes: the entries to put (key, place, value) and the keys to delete.
struct Diff<'a> {
    puts: Vec<Placed<'a>>,
    deletes: Vec<Vec<u8>>,
    next: u64,
}

impl Diff<'_> {
    fn fits(&self) -> bool {
        let bytes: usize = self.puts.iter().map(|(k, _, v)| entry_bytes(k, v)).sum();
        self.puts.len() + self.deletes.len() < SMALL_OPS && bytes <= SMALL_BYTES
    }
}

/// How a write that had something to write ended.
pub enum Wrote {
    /// Written at this revision.
    At(i64),
    /// The object changed (or went) since it was read: nothing was written.
    Changed,
}

/// An object's entry keys: where they are and how they are named.
pub struct Keys {
    store: Arc<EtcdStore>,
    id: u64,
    header: Vec<u8>,
}

/// The `(key, value)` encodings of a dict's or namespace's snapshot (`[{key: value, ...}]`).
fn pairs(snapshot: &[u8]) -> Result<Vec<Pair<'_>>, CallError> {
    let corrupt = || CallError::runtime("a dict or namespace gave a snapshot that is not a map");
    let items = array_items(snapshot).ok_or_else(corrupt)?;
    let map = items.first().ok_or_else(corrupt)?;
    map_entries(map).ok_or_else(corrupt)
}

/// A snapshot (`[{key: value, ...}]`) of `pairs` in their order.
fn snapshot_of<'a>(pairs: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    encode::array_header(&mut out, 1);
    encode::map_header(&mut out, pairs.len());
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.extend_from_slice(v);
    }
    out
}

/// What an entry weighs in a transaction: its key in hex, and its value.
fn entry_bytes(key: &[u8], value: &[u8]) -> usize {
    2 * key.len() + value.len()
}

/// An entry key's value: its place, then its value's encoding.
fn entry_value(place: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&place.to_be_bytes());
    out.extend_from_slice(value);
    out
}

fn whole_prefix() -> Option<DeleteOptions> {
    Some(DeleteOptions::new().with_prefix())
}

impl Keys {
    pub fn new(store: &Arc<EtcdStore>, id: u64, header: Vec<u8>) -> Keys {
        Keys {
            store: store.clone(),
            id,
            header,
        }
    }

    fn generation(&self, gen: &str) -> Vec<u8> {
        self.store.object_key(self.id, &format!("e/{gen}/"))
    }

    fn entry(&self, generation: &[u8], key: &[u8]) -> Vec<u8> {
        let mut out = generation.to_vec();
        out.extend_from_slice(hex::encode(key).as_bytes());
        out
    }

    /// The keys a new object starts with: its entries, in place, when one transaction takes
    /// them; else only an unseeded header (the entries are the init args in `meta`).
    pub fn initial(&self, object: &ObjectHandle) -> Result<Vec<TxnOp>, CallError> {
        let mut snapshot = Vec::new();
        object.snapshot(&mut snapshot);
        let pairs = pairs(&snapshot)?;
        let n = pairs.len() as u64;
        let all: Vec<Placed<'_>> = (0..).zip(&pairs).map(|(i, (k, v))| (*k, i, *v)).collect();
        let first = Diff {
            puts: all,
            deletes: Vec::new(),
            next: n,
        };
        let gen = "0".to_owned();
        if !first.fits() {
            let header = Header {
                gen,
                next: n,
                seeded: false,
            };
            return Ok(vec![TxnOp::put(self.header.clone(), header.encode(), None)]);
        }
        let generation = self.generation(&gen);
        let mut ops = self.put_ops(&generation, &first.puts);
        let header = Header {
            gen,
            next: n,
            seeded: true,
        };
        ops.push(TxnOp::put(self.header.clone(), header.encode(), None));
        Ok(ops)
    }

    fn put_ops(&self, generation: &[u8], puts: &[Placed<'_>]) -> Vec<TxnOp> {
        puts.iter()
            .map(|(k, place, v)| {
                TxnOp::put(self.entry(generation, k), entry_value(*place, v), None)
            })
            .collect()
    }

    /// Reads the object: its header's revision, the object built from its entries, and the
    /// entries.
    pub async fn load(&self, kind: Kind) -> Result<(i64, ObjectHandle, Entries), CallError> {
        for _ in 0..MAX_LOADS {
            let got = self
                .store
                .get("reading an object", self.header.clone(), None)
                .await?;
            let kv = got.kvs().first().ok_or_else(deleted)?;
            let revision = kv.mod_revision();
            let header = Header::decode(kv.value())
                .ok_or_else(|| CallError::runtime("a dict's header in etcd is corrupt"))?;
            let (init, places) = if header.seeded {
                let Some(stored) = self.read_entries(&header, revision).await? else {
                    continue; // changed between the two reads
                };
                let init = snapshot_of(stored.iter().map(|(k, _, v)| (k.as_slice(), v.as_slice())));
                let places = stored.into_iter().map(|(k, p, v)| (k, (p, v))).collect();
                (init, Some(places))
            } else {
                let meta = self.store.meta(self.id).await?.ok_or_else(deleted)?;
                (meta.init, None)
            };
            let params = Params::from_array(init.into())
                .ok_or_else(|| CallError::runtime("an object's state in etcd is corrupt"))?;
            let object = objects::create_value(kind, &params)?;
            // Unseeded, the places are numbered here; the first write writes them.
            let places = match places {
                Some(places) => places,
                None => {
                    let mut snapshot = Vec::new();
                    object.snapshot(&mut snapshot);
                    (0..)
                        .zip(pairs(&snapshot)?)
                        .map(|(i, (k, v))| (k.to_vec(), (i, v.to_vec())))
                        .collect()
                }
            };
            let entries = Entries { header, places };
            return Ok((revision, object, entries));
        }
        Err(CallError::runtime(
            "the object changed through other managers on every read; try again",
        ))
    }

    /// The entries of the header's generation, in their order, if the header is still at
    /// `revision`.
    async fn read_entries(
        &self,
        header: &Header,
        revision: i64,
    ) -> Result<Option<Vec<Read>>, CallError> {
        let generation = self.generation(&header.gen);
        let when = self.unchanged(revision);
        let then = vec![TxnOp::get(
            generation.clone(),
            Some(GetOptions::new().with_prefix()),
        )];
        let answer = self
            .store
            .read_txn("reading an object", when, then, Vec::new())
            .await?;
        if !answer.succeeded {
            return Ok(None);
        }
        let corrupt = || CallError::runtime("an entry of a dict in etcd is corrupt");
        let mut entries = Vec::new();
        for kv in answer.got(0).unwrap_or_default() {
            let hexed = kv.key().get(generation.len()..).ok_or_else(corrupt)?;
            let key = hex::decode(hexed).map_err(|_| corrupt())?;
            let (place, value) = kv.value().split_at_checked(8).ok_or_else(corrupt)?;
            let place = u64::from_be_bytes(place.try_into().map_err(|_| corrupt())?);
            entries.push((key, place, value.to_vec()));
        }
        entries.sort_by_key(|(_, place, _)| *place);
        Ok(Some(entries))
    }

    /// Writes what changed between `entries` and the object's snapshot `after`, if its header
    /// is still at `revision`: `Ok(None)` when nothing changed (nothing is sent), else
    /// `Ok(Some(written))`, with `entries` brought up to date when it was written.
    pub async fn write(
        &self,
        entries: &mut Entries,
        revision: i64,
        after: &[u8],
    ) -> Result<Option<Wrote>, CallError> {
        let pairs = pairs(after)?;
        let diff = entries.diff(&pairs);
        if diff.puts.is_empty() && diff.deletes.is_empty() {
            return Ok(None);
        }
        let at = if entries.header.seeded && diff.fits() {
            self.write_in_place(entries, revision, diff).await?
        } else {
            self.write_generation(entries, revision, &pairs).await?
        };
        Ok(Some(at.map_or(Wrote::Changed, Wrote::At)))
    }

    async fn write_in_place(
        &self,
        entries: &mut Entries,
        revision: i64,
        diff: Diff<'_>,
    ) -> Result<Option<i64>, CallError> {
        let generation = self.generation(&entries.header.gen);
        let mut ops = self.put_ops(&generation, &diff.puts);
        ops.extend(
            diff.deletes
                .iter()
                .map(|k| TxnOp::delete(self.entry(&generation, k), None)),
        );
        let header = Header {
            next: diff.next,
            ..entries.header.clone()
        };
        let Some(written) = self.commit(ops, &header, revision).await? else {
            return Ok(None);
        };
        entries.apply(diff);
        Ok(Some(written))
    }

    /// Runs `ops` with `header` written, if the header is still at `revision`: the revision
    /// written at, or `None` when the object changed or went since.
    async fn commit(
        &self,
        mut ops: Vec<TxnOp>,
        header: &Header,
        revision: i64,
    ) -> Result<Option<i64>, CallError> {
        ops.push(TxnOp::put(self.header.clone(), header.encode(), None));
        let answer = self
            .store
            .txn("changing a dict", self.unchanged(revision), ops, Vec::new())
            .await?;
        Ok(answer.succeeded.then_some(answer.revision))
    }

    /// The comparison that the header is still at `revision`.
    fn unchanged(&self, revision: i64) -> Vec<Compare> {
        vec![Compare::mod_revision(
            self.header.clone(),
            CompareOp::Equal,
            revision,
        )]
    }

    /// Writes `pairs` as a new generation, then switches the header to it.
    async fn write_generation(
        &self,
        entries: &mut Entries,
        revision: i64,
        pairs: &[Pair<'_>],
    ) -> Result<Option<i64>, CallError> {
        let gen = format!("{:x}.{:x}", self.store.lease(), next_waiter_id());
        let generation = self.generation(&gen);
        let all: Vec<Placed<'_>> = (0..).zip(pairs).map(|(i, (k, v))| (*k, i, *v)).collect();
        let mut rest: &[Placed<'_>] = &all;
        // Every part but the last goes ahead, unread by anyone until the switch.
        loop {
            let take = part_len(rest);
            if take == rest.len() {
                break;
            }
            let ops = self.put_ops(&generation, &rest[..take]);
            let what = "writing a large change";
            if let Err(e) = self.store.txn(what, Vec::new(), ops, Vec::new()).await {
                self.discard(&generation).await;
                return Err(e);
            }
            rest = &rest[take..];
        }
        let mut ops = self.put_ops(&generation, rest);
        let old = self.generation(&entries.header.gen);
        ops.push(TxnOp::delete(old, whole_prefix()));
        let header = Header {
            gen,
            next: all.len() as u64,
            seeded: true,
        };
        // An error leaves unknown whether the switch happened: the generation is kept.
        let Some(written) = self.commit(ops, &header, revision).await? else {
            self.discard(&generation).await;
            return Ok(None);
        };
        entries.places = all
            .into_iter()
            .map(|(k, place, v)| (k.to_vec(), (place, v.to_vec())))
            .collect();
        entries.header = header;
        Ok(Some(written))
    }

    /// Deletes a generation that never became the object's.
    async fn discard(&self, generation: &[u8]) {
        let ops = vec![TxnOp::delete(generation.to_vec(), whole_prefix())];
        if let Err(e) = self
            .store
            .txn("discarding a write", Vec::new(), ops, Vec::new())
            .await
        {
            tracing::warn!(error = %e.message, "a dict's unused entries were left in etcd until it is deleted");
        }
    }
}

/// How many of `rest`'s entries go in one transaction: at least one, fewer than
/// [`SMALL_OPS`] (room for a transaction's other keys), at most [`SMALL_BYTES`] unless one
/// entry alone is larger.
fn part_len(rest: &[Placed<'_>]) -> usize {
    let mut bytes = 0;
    for (i, (k, _, v)) in rest.iter().enumerate() {
        bytes += entry_bytes(k, v);
        if i == SMALL_OPS - 1 || (i > 0 && bytes > SMALL_BYTES) {
            return i;
        }
    }
    rest.len()
}

impl Entries {
    /// Brings the entries up to date with `diff`, once it is written.
    fn apply(&mut self, diff: Diff<'_>) {
        for key in &diff.deletes {
            self.places.remove(key);
        }
        for (k, place, v) in diff.puts {
            self.places.insert(k.to_vec(), (place, v.to_vec()));
        }
        self.header.next = diff.next;
    }

    /// What turns these entries into `pairs` (in order): changed or new entries are put, with
    /// their place kept while the order is, a new last place otherwise; missing ones deleted.
    fn diff<'a>(&self, pairs: &[Pair<'a>]) -> Diff<'a> {
        let mut next = self.header.next;
        let mut last: Option<u64> = None;
        let mut puts = Vec::new();
        let mut kept = HashSet::with_capacity(pairs.len());
        for &(key, value) in pairs {
            kept.insert(key);
            let place = match self.places.get(key) {
                Some((place, old)) if last.is_none_or(|l| *place > l) => {
                    if old.as_slice() != value {
                        puts.push((key, *place, value));
                    }
                    *place
                }
                _ => {
                    let place = next;
                    next += 1;
                    puts.push((key, place, value));
                    place
                }
            };
            last = Some(place);
        }
        let deletes = self
            .places
            .keys()
            .filter(|k| !kept.contains(k.as_slice()))
            .cloned()
            .collect();
        Diff {
            puts,
            deletes,
            next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(keys: &[(&str, u64, &str)], next: u64) -> Entries {
        Entries {
            header: Header {
                gen: "0".into(),
                next,
                seeded: true,
            },
            places: keys
                .iter()
                .map(|(k, p, v)| (k.as_bytes().to_vec(), (*p, v.as_bytes().to_vec())))
                .collect(),
        }
    }

    fn pairs_of<'a>(keys: &[(&'a str, &'a str)]) -> Vec<(&'a [u8], &'a [u8])> {
        keys.iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect()
    }

    fn puts(diff: &Diff<'_>) -> Vec<(String, u64)> {
        diff.puts
            .iter()
            .map(|(k, p, _)| (String::from_utf8_lossy(k).into_owned(), *p))
            .collect()
    }

    #[test]
    fn an_updated_entry_keeps_its_place_and_nothing_else_is_written() {
        let known = entries(&[("a", 0, "1"), ("b", 1, "2"), ("c", 2, "3")], 3);
        let diff = known.diff(&pairs_of(&[("a", "1"), ("b", "9"), ("c", "3")]));
        assert_eq!(puts(&diff), vec![("b".into(), 1)]);
        assert!(diff.deletes.is_empty());
        assert_eq!(diff.next, 3);
    }

    #[test]
    fn a_deleted_and_reinserted_entry_takes_the_last_place() {
        let known = entries(&[("a", 0, "1"), ("b", 1, "2"), ("c", 2, "3")], 3);
        let diff = known.diff(&pairs_of(&[("b", "2"), ("c", "3"), ("a", "1")]));
        assert_eq!(puts(&diff), vec![("a".into(), 3)]);
        assert_eq!(diff.next, 4);
    }

    #[test]
    fn new_entries_are_appended_and_missing_ones_deleted() {
        let known = entries(&[("a", 0, "1"), ("b", 1, "2")], 2);
        let diff = known.diff(&pairs_of(&[("b", "2"), ("x", "5"), ("y", "6")]));
        assert_eq!(puts(&diff), vec![("x".into(), 2), ("y".into(), 3)]);
        assert_eq!(diff.deletes, vec![b"a".to_vec()]);
    }

    proptest::proptest! {
        /// Whatever a round does (sets, deletions, re-insertions, several at once), the
        /// entries' places, once its diff is applied, give the dict's order and values.
        #[test]
        fn places_follow_a_dicts_insertion_order_through_any_changes(
            ops in proptest::collection::vec((0u8..4, 0u8..12, 0u8..100), 1..200),
            round in 1usize..6,
        ) {
            let mut dict: indexmap::IndexMap<Vec<u8>, Vec<u8>> = indexmap::IndexMap::new();
            let mut known = entries(&[], 0);
            for ops in ops.chunks(round) {
                for &(op, k, v) in ops {
                    let (key, value) = (vec![k], vec![v]);
                    match op {
                        0 | 1 => {
                            dict.insert(key, value);
                        }
                        2 => {
                            dict.shift_remove(&key);
                        }
                        _ => {
                            dict.shift_remove(&key);
                            dict.insert(key, value);
                        }
                    }
                }
                let pairs: Vec<Pair<'_>> =
                    dict.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
                let diff = known.diff(&pairs);
                known.apply(diff);
                let mut by_place: Vec<(&u64, &Vec<u8>, &Vec<u8>)> =
                    known.places.iter().map(|(k, (p, v))| (p, k, v)).collect();
                by_place.sort();
                let order: Vec<(&Vec<u8>, &Vec<u8>)> =
                    by_place.iter().map(|(_, k, v)| (*k, *v)).collect();
                let expected: Vec<(&Vec<u8>, &Vec<u8>)> = dict.iter().collect();
                proptest::prop_assert_eq!(order, expected);
                let mut places: Vec<u64> = known.places.values().map(|(p, _)| *p).collect();
                places.sort_unstable();
                places.dedup();
                proptest::prop_assert_eq!(places.len(), known.places.len(), "places unique");
                proptest::prop_assert!(known.places.values().all(|(p, _)| *p < known.header.next));
            }
        }
    }

    #[test]
    fn a_header_reads_back_as_written() {
        let header = Header {
            gen: "1f.a".into(),
            next: 42,
            seeded: false,
        };
        assert_eq!(Header::decode(header.encode().as_bytes()), Some(header));
        assert_eq!(Header::decode(b"0 x 1"), None);
    }

    #[test]
    fn parts_hold_at_most_the_ops_and_bytes_of_one_transaction() {
        let big = vec![0u8; SMALL_BYTES / 2 + 1];
        let few: Vec<Placed<'_>> = (0..3).map(|i| (&b"k"[..], i, big.as_slice())).collect();
        assert_eq!(part_len(&few), 1, "two values over the bytes of a part");
        let many: Vec<Placed<'_>> = (0..250).map(|i| (&b"k"[..], i, &b"v"[..])).collect();
        assert_eq!(part_len(&many), SMALL_OPS - 1);
        assert_eq!(part_len(&many[..10]), 10);
    }
}
