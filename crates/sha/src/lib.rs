//! SHA-256 over blocks the caller has laid out, for the messages otel-audit
//! hashes once or more per row: row hashes, Merkle leaves and nodes, HMACs.
//!
//! Two things make these faster than the `Digest` API:
//!
//! - The caller lays out (and pads, with [`pad`] or [`pad_in_place`]) whole
//!   64-byte blocks that are compressed directly, without the `Digest` API's
//!   buffering and finalising, which cost about as much as the compression
//!   for messages of one or two blocks.
//! - [`compress2`] compresses two independent messages at once. A SHA-256
//!   round depends on the one before, so one message keeps the CPU's SHA
//!   unit waiting on each round's latency; two messages interleaved round by
//!   round fill those waits. Verify hashes every row independently (each
//!   row's `prev_hash` is stored with it) and a Merkle tree's nodes on one
//!   level are independent, so both hash in pairs.
//!
//! On x86-64 CPUs with the SHA extensions `compress2` runs its own
//! interleaved SHA-NI kernel (the only `unsafe` code in otel-audit: block
//! loads and the call after checking the CPU); elsewhere it compresses the
//! two messages one after the other with `sha2`. Either way the result is
//! SHA-256's, which the tests check against `sha2` on messages of every
//! length up to several blocks.
//!
//! ```
//! use otel_audit_sha::{IV, compress2, digest_of, pad_in_place};
//! use sha2::{Digest, Sha256};
//!
//! let (mut a, mut b) = (b"first message".to_vec(), vec![7u8; 200]);
//! pad_in_place(&mut a);
//! pad_in_place(&mut b);
//! let (mut sa, mut sb) = (IV, IV);
//! compress2(&mut sa, a.as_chunks().0, &mut sb, b.as_chunks().0);
//! assert_eq!(digest_of(&sa), <[u8; 32]>::from(Sha256::digest(b"first message")));
//! assert_eq!(digest_of(&sb), <[u8; 32]>::from(Sha256::digest([7u8; 200])));
//! ```

/// Compresses 64-byte blocks into a state (`sha2`'s, with its own SHA-NI
/// kernel when the CPU has one).
pub use sha2::block_api::compress256 as compress;

/// SHA-256's initial state (FIPS 180-4 §5.3.3).
pub const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// The round constants (FIPS 180-4 §4.2.2).
#[cfg(target_arch = "x86_64")]
const K: [u32; 64] = [
    0x428a_2f98,
    0x7137_4491,
    0xb5c0_fbcf,
    0xe9b5_dba5,
    0x3956_c25b,
    0x59f1_11f1,
    0x923f_82a4,
    0xab1c_5ed5,
    0xd807_aa98,
    0x1283_5b01,
    0x2431_85be,
    0x550c_7dc3,
    0x72be_5d74,
    0x80de_b1fe,
    0x9bdc_06a7,
    0xc19b_f174,
    0xe49b_69c1,
    0xefbe_4786,
    0x0fc1_9dc6,
    0x240c_a1cc,
    0x2de9_2c6f,
    0x4a74_84aa,
    0x5cb0_a9dc,
    0x76f9_88da,
    0x983e_5152,
    0xa831_c66d,
    0xb003_27c8,
    0xbf59_7fc7,
    0xc6e0_0bf3,
    0xd5a7_9147,
    0x06ca_6351,
    0x1429_2967,
    0x27b7_0a85,
    0x2e1b_2138,
    0x4d2c_6dfc,
    0x5338_0d13,
    0x650a_7354,
    0x766a_0abb,
    0x81c2_c92e,
    0x9272_2c85,
    0xa2bf_e8a1,
    0xa81a_664b,
    0xc24b_8b70,
    0xc76c_51a3,
    0xd192_e819,
    0xd699_0624,
    0xf40e_3585,
    0x106a_a070,
    0x19a4_c116,
    0x1e37_6c08,
    0x2748_774c,
    0x34b0_bcb5,
    0x391c_0cb3,
    0x4ed8_aa4a,
    0x5b9c_ca4f,
    0x682e_6ff3,
    0x748f_82ee,
    0x78a5_636f,
    0x84c8_7814,
    0x8cc7_0208,
    0x90be_fffa,
    0xa450_6ceb,
    0xbef9_a3f7,
    0xc671_78f2,
];

/// The digest a state gives (big-endian words).
#[inline]
pub fn digest_of(state: &[u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// Writes SHA-256's padding after the first `at` bytes of `blocks` (the end
/// of a message of `total_len` bytes, counting any blocks compressed
/// before): `0x80`, zeros, the length in bits at the end of the block it
/// fits in. `blocks` must hold zeros after `at`. Returns how many of
/// `blocks` to compress.
#[inline]
pub fn pad(blocks: &mut [[u8; 64]], at: usize, total_len: u64) -> usize {
    blocks[at / 64][at % 64] = 0x80;
    // The `0x80` and the 8-byte length must both fit.
    let used = (at + 9).div_ceil(64);
    blocks[used - 1][56..].copy_from_slice(&(total_len * 8).to_be_bytes());
    used
}

/// Appends SHA-256's padding to a whole message, so that `message` becomes
/// the blocks to compress from [`IV`] (`message.as_chunks().0`).
#[inline]
pub fn pad_in_place(message: &mut Vec<u8>) {
    let len = message.len();
    let padded = (len + 9).div_ceil(64) * 64;
    message.resize(padded, 0);
    message[len] = 0x80;
    message[padded - 8..].copy_from_slice(&(len as u64 * 8).to_be_bytes());
}

/// SHA-256 of one message, already padded (whole blocks, as [`pad`] or
/// [`pad_in_place`] leave a message).
#[inline]
pub fn digest(padded: &[[u8; 64]]) -> [u8; 32] {
    let mut state = IV;
    compress(&mut state, padded);
    digest_of(&state)
}

/// Compresses `a_blocks` into `a` and `b_blocks` into `b`, the two
/// interleaved where the CPU allows (see the crate's documentation). The
/// two may differ in length: the longer one's remaining blocks are
/// compressed alone.
#[inline]
pub fn compress2(a: &mut [u32; 8], a_blocks: &[[u8; 64]], b: &mut [u32; 8], b_blocks: &[[u8; 64]]) {
    #[cfg(target_arch = "x86_64")]
    if ni::available() {
        let common = a_blocks.len().min(b_blocks.len());
        let (a_both, a_rest) = a_blocks.split_at(common);
        let (b_both, b_rest) = b_blocks.split_at(common);
        ni::compress2(a, a_both, b, b_both);
        compress(a, a_rest);
        compress(b, b_rest);
        return;
    }
    compress(a, a_blocks);
    compress(b, b_blocks);
}

/// SHA-256 of two messages at once, each already padded (whole blocks, as
/// [`pad_in_place`] leaves a message).
#[inline]
pub fn digest2(a_padded: &[[u8; 64]], b_padded: &[[u8; 64]]) -> ([u8; 32], [u8; 32]) {
    let (mut a, mut b) = (IV, IV);
    compress2(&mut a, a_padded, &mut b, b_padded);
    (digest_of(&a), digest_of(&b))
}

#[cfg(target_arch = "x86_64")]
mod ni {
    //! Two SHA-256 compressions interleaved on the SHA-NI instructions.
    //!
    //! The instructions keep the eight working variables as two vectors,
    //! ABEF and CDGH; `sha256rnds2` does two rounds, `sha256msg1/2` extend
    //! the message schedule four words at a time (Intel's "SHA extensions"
    //! paper, 2013).
    use std::arch::x86_64::{
        __m128i, _mm_add_epi32, _mm_alignr_epi8, _mm_blend_epi16, _mm_loadu_si128, _mm_set_epi32,
        _mm_set_epi64x, _mm_sha256msg1_epu32, _mm_sha256msg2_epu32, _mm_sha256rnds2_epu32,
        _mm_shuffle_epi8, _mm_shuffle_epi32, _mm_storeu_si128,
    };

    use super::K;

    /// Whether this CPU has the instructions the kernel uses (the check
    /// is an atomic load after the first call).
    #[inline]
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("sha")
            && std::arch::is_x86_feature_detected!("sse4.1")
            && std::arch::is_x86_feature_detected!("ssse3")
    }

    /// Compresses `a_blocks` into `a` and `b_blocks` into `b`, which have
    /// the same length. The CPU must have passed [`available`].
    #[inline]
    #[allow(unsafe_code)]
    pub(super) fn compress2(
        a: &mut [u32; 8],
        a_blocks: &[[u8; 64]],
        b: &mut [u32; 8],
        b_blocks: &[[u8; 64]],
    ) {
        debug_assert_eq!(a_blocks.len(), b_blocks.len());
        // SAFETY: the caller checked `available()`, which covers every
        // target feature `kernel` enables.
        unsafe { kernel(a, a_blocks, b, b_blocks) }
    }

    /// A state as the instructions hold it: (ABEF, CDGH).
    #[inline]
    #[target_feature(enable = "sha,sse4.1,ssse3")]
    #[allow(unsafe_code)]
    fn load_state(s: &[u32; 8]) -> (__m128i, __m128i) {
        // SAFETY: words 0..4 and 4..8 of an 8-word array; `loadu` has no
        // alignment requirement.
        let (dcba, hgfe) = unsafe {
            (
                _mm_loadu_si128(s.as_ptr().cast()),
                _mm_loadu_si128(s.as_ptr().add(4).cast()),
            )
        };
        let cdab = _mm_shuffle_epi32::<0xb1>(dcba);
        let efgh = _mm_shuffle_epi32::<0x1b>(hgfe);
        (
            _mm_alignr_epi8::<8>(cdab, efgh),
            _mm_blend_epi16::<0xf0>(efgh, cdab),
        )
    }

    #[inline]
    #[target_feature(enable = "sha,sse4.1,ssse3")]
    #[allow(unsafe_code)]
    fn store_state(abef: __m128i, cdgh: __m128i, s: &mut [u32; 8]) {
        let feba = _mm_shuffle_epi32::<0x1b>(abef);
        let dchg = _mm_shuffle_epi32::<0xb1>(cdgh);
        let dcba = _mm_blend_epi16::<0xf0>(feba, dchg);
        let hgef = _mm_alignr_epi8::<8>(dchg, feba);
        // SAFETY: as in `load_state`, for stores.
        unsafe {
            _mm_storeu_si128(s.as_mut_ptr().cast(), dcba);
            _mm_storeu_si128(s.as_mut_ptr().add(4).cast(), hgef);
        }
    }

    /// A block's sixteen words, big-endian, four to a vector.
    #[inline]
    #[target_feature(enable = "sha,sse4.1,ssse3")]
    #[allow(unsafe_code)]
    fn load_block(block: &[u8; 64]) -> [__m128i; 4] {
        let bswap = _mm_set_epi64x(0x0c0d_0e0f_0809_0a0b, 0x0405_0607_0001_0203);
        std::array::from_fn(|i| {
            // SAFETY: bytes 16 i .. 16 i + 16 of a 64-byte array, i < 4;
            // `loadu` has no alignment requirement.
            let w = unsafe { _mm_loadu_si128(block.as_ptr().add(16 * i).cast()) };
            _mm_shuffle_epi8(w, bswap)
        })
    }

    /// Words `4 r .. 4 r + 4` of the schedule from the four before them.
    #[inline]
    #[target_feature(enable = "sha,sse4.1,ssse3")]
    fn schedule(w: &mut [__m128i; 4], i: usize) {
        let (w0, w1, w2, w3) = (w[i], w[(i + 1) % 4], w[(i + 2) % 4], w[(i + 3) % 4]);
        let t = _mm_add_epi32(_mm_sha256msg1_epu32(w0, w1), _mm_alignr_epi8::<4>(w3, w2));
        w[i] = _mm_sha256msg2_epu32(t, w3);
    }

    #[target_feature(enable = "sha,sse4.1,ssse3")]
    fn kernel(a: &mut [u32; 8], a_blocks: &[[u8; 64]], b: &mut [u32; 8], b_blocks: &[[u8; 64]]) {
        let (mut a0, mut a1) = load_state(a);
        let (mut b0, mut b1) = load_state(b);
        for (x, y) in a_blocks.iter().zip(b_blocks) {
            let saved = (a0, a1, b0, b1);
            let mut wa = load_block(x);
            let mut wb = load_block(y);
            // Sixteen steps of four rounds; each step of one message is
            // followed by the same step of the other, so that each
            // `sha256rnds2` has an independent one behind it.
            for r in 0..16 {
                let i = r % 4;
                if r >= 4 {
                    schedule(&mut wa, i);
                    schedule(&mut wb, i);
                }
                let k = _mm_set_epi32(
                    K[4 * r + 3] as i32,
                    K[4 * r + 2] as i32,
                    K[4 * r + 1] as i32,
                    K[4 * r] as i32,
                );
                let ta = _mm_add_epi32(wa[i], k);
                let tb = _mm_add_epi32(wb[i], k);
                a1 = _mm_sha256rnds2_epu32(a1, a0, ta);
                b1 = _mm_sha256rnds2_epu32(b1, b0, tb);
                a0 = _mm_sha256rnds2_epu32(a0, a1, _mm_shuffle_epi32::<0x0e>(ta));
                b0 = _mm_sha256rnds2_epu32(b0, b1, _mm_shuffle_epi32::<0x0e>(tb));
            }
            a0 = _mm_add_epi32(a0, saved.0);
            a1 = _mm_add_epi32(a1, saved.1);
            b0 = _mm_add_epi32(b0, saved.2);
            b1 = _mm_add_epi32(b1, saved.3);
        }
        store_state(a0, a1, a);
        store_state(b0, b1, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// A deterministic byte stream (xorshift), so a failure reproduces.
    fn bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn reference(m: &[u8]) -> [u8; 32] {
        Sha256::digest(m).into()
    }

    #[test]
    fn two_messages_of_every_length_pair_hash_as_sha256() {
        // Lengths around every padding boundary (55, 56, 63, 64, ...) and
        // messages of different block counts in the two lanes.
        let lengths: Vec<usize> = (0..=300).chain([511, 512, 1000, 4095, 4096]).collect();
        for (i, &la) in lengths.iter().enumerate() {
            for &lb in lengths.iter().skip(i % 7).step_by(7) {
                let (ma, mb) = (bytes(la as u64, la), bytes(lb as u64 + 1000, lb));
                let (mut pa, mut pb) = (ma.clone(), mb.clone());
                pad_in_place(&mut pa);
                pad_in_place(&mut pb);
                let (da, db) = digest2(pa.as_chunks().0, pb.as_chunks().0);
                assert_eq!(da, reference(&ma), "first of lengths {la} and {lb}");
                assert_eq!(db, reference(&mb), "second of lengths {la} and {lb}");
            }
        }
    }

    #[test]
    fn the_same_message_in_both_lanes_and_continued_states() {
        let m = bytes(42, 1000);
        let mut p = m.clone();
        pad_in_place(&mut p);
        let blocks = p.as_chunks().0;
        assert_eq!(digest2(blocks, blocks), (reference(&m), reference(&m)));
        // States carried over from earlier blocks, as an HMAC's are.
        let (mut a, mut b) = (IV, IV);
        compress2(&mut a, &blocks[..3], &mut b, &blocks[..5]);
        compress2(&mut a, &blocks[3..], &mut b, &blocks[5..]);
        assert_eq!(
            (digest_of(&a), digest_of(&b)),
            (reference(&m), reference(&m))
        );
    }

    #[test]
    fn pad_and_pad_in_place_agree() {
        for len in 0..200 {
            let m = bytes(len as u64, len);
            let mut blocks = vec![[0u8; 64]; 5];
            for (i, b) in m.iter().enumerate() {
                blocks[i / 64][i % 64] = *b;
            }
            let used = pad(&mut blocks, len, len as u64);
            assert_eq!(digest(&blocks[..used]), reference(&m), "length {len}");
            let mut p = m.clone();
            pad_in_place(&mut p);
            assert_eq!(p.as_chunks::<64>().0, &blocks[..used], "length {len}");
        }
    }
}
