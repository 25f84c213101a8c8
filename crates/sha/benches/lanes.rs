//! One message at a time against two at once, on this CPU.
//!
//! `cargo bench -p otel-audit-sha --bench lanes`. Each case hashes the same
//! 512 messages (padded in advance): with `sha2`'s compression one after the
//! other (the baseline), and in pairs with [`otel_audit_sha::compress2`].
//! Ten-block messages are what verify hashes per row (~600 bytes), one and
//! two blocks what a Merkle tree hashes per leaf and node.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_main};
use otel_audit_sha::{IV, compress, compress2, pad_in_place};

fn messages(len: usize) -> Vec<Vec<u8>> {
    (0..512)
        .map(|i| {
            let mut m: Vec<u8> = (0..len).map(|j| (i * 31 + j * 7) as u8).collect();
            pad_in_place(&mut m);
            m
        })
        .collect()
}

fn lanes(c: &mut Criterion) {
    // 33 and 65 bytes: a Merkle leaf and node; 600: a row.
    for (name, len) in [
        ("leaf_1_block", 33),
        ("node_2_blocks", 65),
        ("row_10_blocks", 600),
    ] {
        let msgs = messages(len);
        let blocks: u64 = msgs.iter().map(|m| (m.len() / 64) as u64).sum();
        let mut g = c.benchmark_group(format!("sha256/{name}"));
        g.throughput(Throughput::Elements(blocks));
        g.bench_function("baseline_one_at_a_time", |b| {
            b.iter(|| {
                for m in &msgs {
                    let mut s = IV;
                    compress(&mut s, m.as_chunks().0);
                    black_box(s);
                }
            })
        });
        g.bench_function("two_at_once", |b| {
            b.iter(|| {
                for [x, y] in msgs.as_chunks::<2>().0 {
                    let (mut s, mut t) = (IV, IV);
                    compress2(&mut s, x.as_chunks().0, &mut t, y.as_chunks().0);
                    black_box((s, t));
                }
            })
        });
        g.finish();
    }
}

// The macro generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::lanes);
}

criterion_main!(group::benches);
