//! Structural validation of Cap'n Proto messages received from the network.
//!
//! `proto/codec.py` reads messages with pycapnp (the C++ library). Some of
//! pycapnp's entry points do not translate C++ exceptions, so a malformed far
//! or list pointer reaching them ends in `std::terminate` (SIGABRT) instead of
//! a Python exception. The codec therefore hands every message to
//! [`validate`] first: the pure-Rust `capnp` crate parses the segment table
//! and walks every pointer of the message from the root (struct, list, far and
//! double-far pointers, inline-composite tags, bounds of every object), under
//! the same traversal and nesting limits the codec then gives pycapnp, and
//! reports any defect as an error value. Only messages that pass are read by
//! pycapnp. See docs/PROTOCOL.md ("Decoding untrusted bytes").

use std::panic::{catch_unwind, AssertUnwindSafe};

use capnp::message::ReaderOptions;
use capnp::serialize;

/// Largest segment count accepted (the codec's own limit is lower).
const MAX_SEGMENTS: usize = 512;

/// Why a message was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The segment table or the segments themselves are malformed.
    #[error("bad framing: {0}")]
    Framing(String),
    /// Bytes follow the message.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    /// A pointer is malformed, out of bounds, too deep or over the traversal limit.
    #[error("bad pointer: {0}")]
    Pointer(String),
    /// The message holds capability pointers (the protocol has none).
    #[error("message holds {0} capabilities")]
    Capabilities(u32),
    /// The validator itself failed (a bug); never a panic across the FFI.
    #[error("internal error while validating the message")]
    Internal,
}

/// Validate one framed, unpacked message occupying all of `data`.
///
/// Returns the number of words reachable from the root pointer.
pub fn validate(
    data: &[u8],
    traversal_limit_words: u64,
    nesting_limit: i32,
) -> Result<u64, WireError> {
    catch_unwind(AssertUnwindSafe(|| {
        validate_inner(data, traversal_limit_words, nesting_limit)
    }))
    .unwrap_or(Err(WireError::Internal))
}

fn validate_inner(
    data: &[u8],
    traversal_limit_words: u64,
    nesting_limit: i32,
) -> Result<u64, WireError> {
    let mut options = ReaderOptions::new();
    options
        .traversal_limit_in_words(Some(
            usize::try_from(traversal_limit_words).unwrap_or(usize::MAX),
        ))
        .nesting_limit(nesting_limit);
    if data.len() >= 4 {
        let count = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize + 1;
        if count > MAX_SEGMENTS {
            return Err(WireError::Framing(format!("{count} segments")));
        }
    }
    let mut rest = data;
    let message = serialize::read_message_from_flat_slice(&mut rest, options)
        .map_err(|e| WireError::Framing(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Trailing(rest.len()));
    }
    let root: capnp::any_pointer::Reader<'_> = message
        .get_root()
        .map_err(|e| WireError::Pointer(e.to_string()))?;
    let size = root
        .target_size()
        .map_err(|e| WireError::Pointer(e.to_string()))?;
    if size.cap_count != 0 {
        return Err(WireError::Capabilities(size.cap_count));
    }
    Ok(size.word_count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMIT: u64 = 1 << 20;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// A small valid message: a list of three data blobs.
    fn valid() -> Vec<u8> {
        let mut b = capnp::message::Builder::new_default();
        let mut list = b.initn_root::<capnp::data_list::Builder<'_>>(3);
        list.set(0, b"one");
        list.set(1, b"");
        list.set(2, &[7u8; 40]);
        serialize::write_message_to_words(&b)
    }

    #[test]
    fn valid_message_passes() {
        let data = valid();
        assert!(validate(&data, LIMIT, 16).unwrap() > 0);
    }

    #[test]
    fn issue_12_repro_is_rejected() {
        let data = hex(concat!(
            "000000000800000000000000010002000000000000000000050000c302010000",
            "fcffffff00000000000102030405060708090a0b0c0d0e0f1011121314151617",
            "18191a1b1c1d1e1f"
        ));
        assert!(validate(&data, LIMIT, 16).is_err());
    }

    #[test]
    fn truncation_and_trailing_bytes_are_rejected() {
        let data = valid();
        for n in 0..data.len() {
            assert!(validate(&data[..n], LIMIT, 16).is_err(), "prefix {n}");
        }
        let mut longer = data.clone();
        longer.extend_from_slice(&[0; 8]);
        assert_eq!(validate(&longer, LIMIT, 16), Err(WireError::Trailing(8)));
    }

    #[test]
    fn limits_apply() {
        let data = valid();
        assert!(validate(&data, 2, 16).is_err());
        assert!(matches!(
            validate(&data, LIMIT, 0),
            Err(WireError::Pointer(_))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

        /// Arbitrary bytes: an answer, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            prop_assert_ne!(validate(&data, LIMIT, 16), Err(WireError::Internal));
        }

        /// A valid message with words overwritten: an answer, never a panic.
        #[test]
        fn corrupted_words_never_panic(
            edits in proptest::collection::vec((any::<usize>(), any::<u64>()), 1..6),
            cut in any::<usize>(),
        ) {
            let mut data = valid();
            let words = data.len() / 8;
            for (at, value) in edits {
                let i = (at % words) * 8;
                data[i..i + 8].copy_from_slice(&value.to_le_bytes());
            }
            let end = data.len() - cut % 9;
            prop_assert_ne!(validate(&data[..end], LIMIT, 16), Err(WireError::Internal));
        }
    }
}
