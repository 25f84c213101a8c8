//! SHA-256 over blocks the caller has laid out, for the fixed-size messages
//! hashed once or more per row (Merkle leaves and nodes, HMAC of a value):
//! compressed directly, without the `Digest` API's buffering and finalising,
//! which cost about as much as the compression for messages of one or two
//! blocks.

/// Compresses 64-byte blocks into a state.
pub(crate) use sha2::block_api::compress256 as compress;

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

/// The digest a state gives (big-endian words).
#[inline]
pub(crate) fn digest_of(state: &[u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// Writes SHA-256's padding after the first `at` bytes of `blocks` (the end
/// of a message of `total_len` bytes, counting any blocks compressed
/// before): `0x80`, zeros, the length in bits at the end of the block it
/// fits in. Returns how many of `blocks` to compress.
#[inline]
pub(crate) fn pad(blocks: &mut [[u8; 64]], at: usize, total_len: u64) -> usize {
    blocks[at / 64][at % 64] = 0x80;
    // The `0x80` and the 8-byte length must both fit.
    let used = (at + 9).div_ceil(64);
    blocks[used - 1][56..].copy_from_slice(&(total_len * 8).to_be_bytes());
    used
}

/// SHA-256 of a message of `len` bytes laid out from the start of `blocks`
/// (which has room for its padding, and zeros after it).
#[inline]
pub(crate) fn hash(blocks: &mut [[u8; 64]], len: usize) -> [u8; 32] {
    let used = pad(blocks, len, len as u64);
    let mut state = IV;
    compress(&mut state, &blocks[..used]);
    digest_of(&state)
}
