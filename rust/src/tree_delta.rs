//! Ratchet-tree deltas: what a commit changed in the tree, sealed like the
//! whole tree, so a commit uploads a few KB instead of the whole tree and a
//! joiner rebuilds its epoch's tree from a *base* (a whole sealed tree of an
//! earlier epoch, `welcome.rs`) plus the deltas after it.
//!
//! A tree is the TLS vector `optional<Node> nodes<V>`; a delta lists the
//! vector slots whose encoding differs between epoch `e` and `e+1`:
//!
//! * plaintext: `prev_key (32) || node_count (u32) || n (u32) ||
//!   n x (index (u32) || present (u8) || [len (u32) || node] if present)`,
//!   integers big-endian, indexes strictly increasing and `< node_count`;
//!   `prev_key` is the tree key ([`TREE_LABEL`] exporter) of epoch `e`;
//! * sealed: `0x02 || nonce (24) || XChaCha20-Poly1305(key, nonce, aad,
//!   plaintext)`, `key` = the tree key of epoch `e+1`, `aad = TREE_LABEL ||
//!   0x02 || group_id<V> || e+1 (u64)`.
//!
//! A joiner of epoch `E` holds `E`'s tree key (from its Welcome): it opens
//! the delta of `E`, finds `E-1`'s key inside, opens the delta of `E-1`, and
//! so on down to the base. The rebuilt tree is checked by OpenMLS against
//! the tree hash in the signed GroupInfo, exactly like a whole tree.

use std::ops::Range;

use openmls::prelude::tls_codec::{
    Deserialize as _, DeserializeBytes as _, Serialize as _, Size as _,
};
use openmls::prelude::*;
use openmls::treesync::RatchetTree;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::parse::check_size;
use crate::welcome::{open_sealed, seal, tree_aad, TREE_FORMAT, TREE_LABEL};

/// Format byte of a sealed delta (a whole tree is `0x01`).
pub const DELTA_FORMAT: u8 = 2;
/// Length of the tree key carried in a delta.
pub const KEY_LEN: usize = 32;
/// Most nodes a tree may have (2^19 leaves): bounds what a delta can make a
/// joiner allocate.
pub const MAX_TREE_NODES: u32 = 1 << 20;
/// Most deltas one join accepts after its base.
pub const MAX_DELTAS: usize = 4096;

fn delta_aad(group_id: &[u8], epoch: u64) -> Result<Vec<u8>> {
    let mut aad = TREE_LABEL.as_bytes().to_vec();
    aad.push(DELTA_FORMAT);
    aad.extend_from_slice(&VLBytes::new(group_id.to_vec()).tls_serialize_detached()?);
    aad.extend_from_slice(&epoch.to_be_bytes());
    Ok(aad)
}

/// The per-slot byte ranges of an encoded tree (`None`: blank slot), given
/// the encoded lengths of its present nodes in order. `encoded` must be a
/// whole TLS `optional<Node> nodes<V>`.
/// Byte ranges of a tree's vector slots in its encoding (`None`: blank).
type Slots = Vec<Option<Range<usize>>>;

fn split_slots(encoded: &[u8], mut node_lens: impl Iterator<Item = usize>) -> Result<Slots> {
    let (content, rest) = VLBytes::tls_deserialize_bytes(encoded)?;
    if !rest.is_empty() {
        return Err(Error::Malformed("bytes after the ratchet tree".into()));
    }
    let start = encoded.len() - content.as_slice().len();
    let mut pos = start;
    let mut slots = Vec::new();
    while pos < encoded.len() {
        let present = encoded[pos];
        pos += 1;
        match present {
            0 => slots.push(None),
            1 => {
                let len = node_lens
                    .next()
                    .ok_or_else(|| Error::Malformed("tree layout: more slots than nodes".into()))?;
                let end = pos
                    .checked_add(len)
                    .filter(|&e| e <= encoded.len())
                    .ok_or_else(|| Error::Malformed("tree layout: node past the end".into()))?;
                slots.push(Some(pos..end));
                pos = end;
            }
            _ => return Err(Error::Malformed("tree layout: bad presence byte".into())),
        }
    }
    if node_lens.next().is_some() {
        return Err(Error::Malformed(
            "tree layout: fewer slots than nodes".into(),
        ));
    }
    Ok(slots)
}

fn tree_slots(tree: &RatchetTree) -> Result<(Vec<u8>, Slots)> {
    let encoded = tree.tls_serialize_detached()?;
    let slots = split_slots(&encoded, tree.nodes().map(|n| n.tls_serialized_len()))?;
    Ok((encoded, slots))
}

fn u32_of(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Crypto(format!("{what} does not fit a u32")))
}

/// The delta plaintext turning `before` (epoch e) into `after` (epoch e+1).
fn delta_plaintext(
    before: &RatchetTree,
    after: &RatchetTree,
    prev_key: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    if prev_key.len() != KEY_LEN {
        return Err(Error::Crypto("tree key length".into()));
    }
    let (enc_b, slots_b) = tree_slots(before)?;
    let (enc_a, slots_a) = tree_slots(after)?;
    let node_count = u32_of(slots_a.len(), "node count")?;
    if node_count > MAX_TREE_NODES {
        return Err(Error::Crypto(
            "the tree has too many nodes for a delta".into(),
        ));
    }
    let mut body = Vec::new();
    let mut n: u32 = 0;
    for (i, slot) in slots_a.iter().enumerate() {
        let new = slot.as_ref().map(|r| &enc_a[r.clone()]);
        let old = slots_b
            .get(i)
            .and_then(|s| s.as_ref())
            .map(|r| &enc_b[r.clone()]);
        if new == old {
            continue;
        }
        n += 1;
        body.extend_from_slice(&u32_of(i, "node index")?.to_be_bytes());
        match new {
            None => body.push(0),
            Some(bytes) => {
                body.push(1);
                body.extend_from_slice(&u32_of(bytes.len(), "node length")?.to_be_bytes());
                body.extend_from_slice(bytes);
            }
        }
    }
    let mut plain = Zeroizing::new(Vec::with_capacity(KEY_LEN + 8 + body.len()));
    plain.extend_from_slice(prev_key);
    plain.extend_from_slice(&node_count.to_be_bytes());
    plain.extend_from_slice(&n.to_be_bytes());
    plain.extend_from_slice(&body);
    Ok(plain)
}

/// Seal the delta from `before` (epoch `epoch - 1`, tree key `prev_key`) to
/// `after` (epoch `epoch`, tree key `key`).
pub fn seal_delta(
    before: &RatchetTree,
    after: &RatchetTree,
    prev_key: &[u8],
    key: &[u8],
    group_id: &[u8],
    epoch: u64,
) -> Result<Vec<u8>> {
    let plain = delta_plaintext(before, after, prev_key)?;
    seal(DELTA_FORMAT, &plain, key, &delta_aad(group_id, epoch)?)
}

/// A parsed delta: the previous epoch's key, the new node count, and the
/// changed slots as ranges into `plain`.
struct Delta {
    plain: Zeroizing<Vec<u8>>,
    node_count: usize,
    entries: Vec<(usize, Option<Range<usize>>)>,
}

impl Delta {
    fn prev_key(&self) -> &[u8] {
        &self.plain[..KEY_LEN]
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<Range<usize>> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| Error::Malformed("tree delta: truncated".into()))?;
        let r = self.pos..end;
        self.pos = end;
        Ok(r)
    }

    fn u8(&mut self) -> Result<u8> {
        let r = self.take(1)?;
        Ok(self.data[r.start])
    }

    fn u32(&mut self) -> Result<u32> {
        let r = self.take(4)?;
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.data[r]);
        Ok(u32::from_be_bytes(b))
    }
}

/// Parse a delta plaintext (layout only; the node bytes are checked when
/// the rebuilt tree is decoded and verified).
fn parse_delta(plain: Zeroizing<Vec<u8>>) -> Result<Delta> {
    let mut r = Reader {
        data: &plain,
        pos: 0,
    };
    r.take(KEY_LEN)?;
    let node_count = r.u32()?;
    if node_count == 0 || node_count > MAX_TREE_NODES {
        return Err(Error::Malformed(format!(
            "tree delta: node count {node_count} outside 1..={MAX_TREE_NODES}"
        )));
    }
    let n = r.u32()?;
    if n > node_count {
        return Err(Error::Malformed(
            "tree delta: more entries than nodes".into(),
        ));
    }
    // Each entry takes at least 5 bytes: bound the allocation by the input.
    let mut entries = Vec::with_capacity((n as usize).min(plain.len() / 5));
    let mut last: Option<u32> = None;
    for _ in 0..n {
        let index = r.u32()?;
        if index >= node_count || last.is_some_and(|l| index <= l) {
            return Err(Error::Malformed(
                "tree delta: node indexes must increase and stay below the node count".into(),
            ));
        }
        last = Some(index);
        let slot = match r.u8()? {
            0 => None,
            1 => {
                let len = r.u32()? as usize;
                if len == 0 {
                    return Err(Error::Malformed("tree delta: empty node".into()));
                }
                Some(r.take(len)?)
            }
            _ => return Err(Error::Malformed("tree delta: bad presence byte".into())),
        };
        entries.push((index as usize, slot));
    }
    if r.pos != plain.len() {
        return Err(Error::Malformed(
            "tree delta: bytes after the last node".into(),
        ));
    }
    Ok(Delta {
        node_count: node_count as usize,
        entries,
        plain,
    })
}

/// Rebuild the tree of `(group_id, epoch)` from a sealed base and the sealed
/// deltas of the epochs after it, in order, up to `epoch` (`key` is
/// `epoch`'s tree key). Wrong, tampered, reordered, missing or extra parts
/// are `InvalidMessage`; garbage is `MalformedInput`.
pub fn open_chain(
    base: &[u8],
    deltas: &[Vec<u8>],
    key: &[u8],
    group_id: &[u8],
    epoch: u64,
) -> Result<RatchetTreeIn> {
    if deltas.len() > MAX_DELTAS {
        return Err(Error::Malformed(format!(
            "{} tree deltas (at most {MAX_DELTAS})",
            deltas.len()
        )));
    }
    let count = deltas.len() as u64;
    if count > epoch {
        return Err(Error::Invalid(format!(
            "{count} tree deltas reach back before epoch 0 from epoch {epoch}"
        )));
    }
    // Newest first: each delta holds the key of the epoch before it.
    let mut opened: Vec<Delta> = Vec::with_capacity(deltas.len());
    let mut k = Zeroizing::new(key.to_vec());
    for (back, sealed) in deltas.iter().rev().enumerate() {
        let e = epoch - back as u64;
        check_size(sealed)?;
        let plain = open_sealed(
            DELTA_FORMAT,
            sealed,
            &k,
            &delta_aad(group_id, e)?,
            "a tree delta",
        )?;
        let delta = parse_delta(plain)?;
        k = Zeroizing::new(delta.prev_key().to_vec());
        opened.push(delta);
    }
    let base_epoch = epoch - count;
    check_size(base)?;
    let base_plain = open_sealed(
        TREE_FORMAT,
        base,
        &k,
        &tree_aad(group_id, base_epoch)?,
        "the base ratchet tree",
    )?;
    let base_tree = RatchetTreeIn::tls_deserialize_exact(base_plain.as_slice())?;
    if opened.is_empty() {
        return Ok(base_tree);
    }
    let ranges = split_slots(
        &base_plain,
        base_tree.nodes().map(|n| n.tls_serialized_len()),
    )?;
    drop(base_tree);
    let mut slots: Vec<Option<&[u8]>> = ranges
        .into_iter()
        .map(|r| r.map(|r| &base_plain[r]))
        .collect();
    for delta in opened.iter().rev() {
        slots.resize(delta.node_count, None);
        for (index, range) in &delta.entries {
            // `parse_delta` checked index < node_count.
            if let Some(slot) = slots.get_mut(*index) {
                *slot = range.as_ref().map(|r| &delta.plain[r.clone()]);
            }
        }
    }
    let mut content = Zeroizing::new(Vec::new());
    for slot in &slots {
        match slot {
            None => content.push(0),
            Some(bytes) => {
                content.push(1);
                content.extend_from_slice(bytes);
            }
        }
    }
    let encoded = Zeroizing::new(VLBytes::new(content.to_vec()).tls_serialize_detached()?);
    RatchetTreeIn::tls_deserialize_exact(encoded.as_slice()).map_err(|e| {
        Error::Invalid(format!(
            "the tree rebuilt from the base and deltas does not decode ({e})"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn plain(parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(parts.concat())
    }

    #[test]
    fn parses_a_well_formed_delta() {
        let key = [7u8; KEY_LEN];
        let p = plain(&[
            &key,
            &5u32.to_be_bytes(),
            &2u32.to_be_bytes(),
            &1u32.to_be_bytes(),
            &[0],
            &4u32.to_be_bytes(),
            &[1],
            &3u32.to_be_bytes(),
            b"abc",
        ]);
        let d = parse_delta(p).expect("well formed");
        assert_eq!(d.node_count, 5);
        assert_eq!(d.prev_key(), &key);
        assert_eq!(d.entries.len(), 2);
        assert_eq!(d.entries[0], (1, None));
        assert_eq!(&d.plain[d.entries[1].1.clone().expect("present")], b"abc");
    }

    fn be(n: u32) -> Vec<u8> {
        n.to_be_bytes().to_vec()
    }

    #[test]
    fn refuses_bad_layouts() {
        let key = vec![0u8; KEY_LEN];
        let cases: Vec<Vec<Vec<u8>>> = vec![
            vec![key[..31].to_vec()],
            // node count 0 and above the limit, more entries than nodes
            vec![key.clone(), be(0), be(0)],
            vec![key.clone(), be(MAX_TREE_NODES + 1), be(0)],
            vec![key.clone(), be(2), be(3)],
            // index out of range, not increasing
            vec![key.clone(), be(2), be(1), be(2), vec![0]],
            vec![key.clone(), be(4), be(2), be(1), vec![0], be(1), vec![0]],
            // bad presence, empty node, node past the end, trailing bytes
            vec![key.clone(), be(2), be(1), be(0), vec![2]],
            vec![key.clone(), be(2), be(1), be(0), vec![1], be(0)],
            vec![
                key.clone(),
                be(2),
                be(1),
                be(0),
                vec![1],
                be(9),
                b"abc".to_vec(),
            ],
            vec![key.clone(), be(2), be(0), b"x".to_vec()],
        ];
        for parts in cases {
            let p = Zeroizing::new(parts.concat());
            assert!(matches!(parse_delta(p), Err(Error::Malformed(_))));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3_000, ..ProptestConfig::default() })]

        #[test]
        fn parse_delta_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_delta(Zeroizing::new(data));
        }

        #[test]
        fn parse_structured_delta_never_panics(
            count in 0u32..64,
            entries in proptest::collection::vec((0u32..80, 0u8..3, 0u32..8, proptest::collection::vec(any::<u8>(), 0..8)), 0..12),
        ) {
            let mut p = vec![1u8; KEY_LEN];
            p.extend_from_slice(&count.to_be_bytes());
            p.extend_from_slice(&(entries.len() as u32).to_be_bytes());
            for (i, present, len, bytes) in entries {
                p.extend_from_slice(&i.to_be_bytes());
                p.push(present);
                if present == 1 {
                    p.extend_from_slice(&len.to_be_bytes());
                    p.extend_from_slice(&bytes);
                }
            }
            let _ = parse_delta(Zeroizing::new(p));
        }

        #[test]
        fn split_slots_never_panics(
            data in proptest::collection::vec(any::<u8>(), 0..128),
            lens in proptest::collection::vec(0usize..64, 0..8),
        ) {
            let _ = split_slots(&data, lens.into_iter());
        }

        #[test]
        fn open_chain_refuses_garbage(
            base in proptest::collection::vec(any::<u8>(), 0..96),
            deltas in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..96), 0..3),
            epoch in 0u64..5,
        ) {
            let r = open_chain(&base, &deltas, &[3u8; 32], b"group", epoch);
            prop_assert!(matches!(r, Err(Error::Malformed(_)) | Err(Error::Invalid(_))));
        }
    }
}
