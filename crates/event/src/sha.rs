//! SHA-256 over blocks the caller has laid out, for the fixed-size messages
//! hashed once or more per row (Merkle leaves and nodes, HMAC of a value):
//! compressed directly, without the `Digest` API's buffering and finalising,
//! which cost about as much as the compression for messages of one or two
//! blocks.

use sha2::block_api::compress256;

/// SHA-256's initial state (FIPS 180-4 §5.3.3).
pub(crate) const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// Compresses `blocks` into `state`.
#[inline]
pub(crate) fn compress(state: &mut [u32; 8], blocks: &[[u8; 64]]) {
    compress256(state, blocks);
}

/// The digest a state gives (big-endian words).
#[inline]
pub(crate) fn digest_of(state: &[u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// Writes SHA-256's padding into the last block of a message of
/// `total_len` bytes whose last `at` bytes are already in `last`: `0x80`,
/// zeros, the length in bits (the caller has checked `at < 56`).
#[inline]
pub(crate) fn pad(last: &mut [u8; 64], at: usize, total_len: u64) {
    last[at] = 0x80;
    last[56..].copy_from_slice(&(total_len * 8).to_be_bytes());
}
