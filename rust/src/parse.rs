//! The first step for every MLS input: size bounds and TLS decoding of an
//! `MlsMessage`. Shared by `core` (groups, KeyPackages) and `welcome` (split
//! Welcomes, sealed trees), so neither has to import the other for it.

use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::*;

use crate::error::{Error, Result};

/// Largest input accepted by any parse entry point.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

pub fn check_size(data: &[u8]) -> Result<()> {
    if data.len() > MAX_MESSAGE_BYTES {
        return Err(Error::Malformed(format!(
            "{} bytes exceeds the {} byte limit",
            data.len(),
            MAX_MESSAGE_BYTES
        )));
    }
    if data.is_empty() {
        return Err(Error::Malformed("empty input".into()));
    }
    Ok(())
}

pub fn parse_message(data: &[u8]) -> Result<MlsMessageIn> {
    check_size(data)?;
    Ok(MlsMessageIn::tls_deserialize_exact(data)?)
}
