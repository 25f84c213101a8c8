//! Merkle tree over row hashes, as RFC 6962 (Certificate Transparency) defines
//! it, so a later inclusion proof can show one row without the others.

use sha2::{Digest, Sha256};

/// `SHA-256(0x00 || row_hash)`.
pub fn leaf_hash(row_hash: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(row_hash);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The Merkle tree hash of `row_hashes` (RFC 6962 §2.1): the empty tree is
/// `SHA-256("")`; otherwise split at the largest power of two below n.
///
/// ```
/// use otel_audit_event::merkle::{leaf_hash, merkle_root, node_hash};
/// let rows = [[1u8; 32], [2u8; 32], [3u8; 32]];
/// let expected = node_hash(
///     &node_hash(&leaf_hash(&rows[0]), &leaf_hash(&rows[1])),
///     &leaf_hash(&rows[2]),
/// );
/// assert_eq!(merkle_root(&rows), expected);
/// ```
pub fn merkle_root(row_hashes: &[[u8; 32]]) -> [u8; 32] {
    if row_hashes.is_empty() {
        return Sha256::digest([]).into();
    }
    // Bottom-up: pairing left to right and promoting an odd last node gives the
    // same tree as RFC 6962's recursive split, without recursion.
    let mut level: Vec<[u8; 32]> = row_hashes.iter().map(leaf_hash).collect();
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for pair in level.chunks(2) {
            match pair {
                [l, r] => next.push(node_hash(l, r)),
                [one] => next.push(*one),
                _ => unreachable!("chunks(2) yields one or two"),
            }
        }
        level = next;
    }
    level[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recursive(d: &[[u8; 32]]) -> [u8; 32] {
        match d.len() {
            0 => Sha256::digest([]).into(),
            1 => leaf_hash(&d[0]),
            n => {
                let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
                node_hash(&recursive(&d[..k]), &recursive(&d[k..]))
            }
        }
    }

    #[test]
    fn matches_rfc6962_recursive_definition() {
        for n in 0..70usize {
            let rows: Vec<[u8; 32]> = (0..n).map(|i| [i as u8; 32]).collect();
            assert_eq!(merkle_root(&rows), recursive(&rows), "n = {n}");
        }
    }
}
