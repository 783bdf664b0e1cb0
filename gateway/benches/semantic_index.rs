//! The semantic cache's index: a search and an insert in one scope holding
//! 1,000 and 10,000 prompts' embeddings of 1,536 dimensions (the size of
//! OpenAI's text-embedding-3-small). Random unit vectors: real embeddings
//! cluster, which makes a graph search easier, not harder.
//! `cargo bench -p sluice --bench semantic_index`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use sluice::cache::semantic::Index;

const DIM: usize = 1536;

fn vector(rng: &mut fastrand::Rng) -> Vec<f32> {
    let v: Vec<f32> = (0..DIM).map(|_| rng.f32() - 0.5).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

fn key(n: usize) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&(n as u64).to_le_bytes());
    k
}

fn index(c: &mut Criterion) {
    let scope = [7u8; 32];
    let mut rng = fastrand::Rng::with_seed(7);
    for n in [1_000, 10_000] {
        let index = Index::new(n);
        for i in 0..n {
            index.insert(scope, key(i), vector(&mut rng));
        }
        let queries: Vec<Vec<f32>> = (0..64).map(|_| vector(&mut rng)).collect();
        let mut q = 0;
        c.bench_function(&format!("semantic_index/search/{n}"), |b| {
            b.iter(|| {
                q = (q + 1) % queries.len();
                black_box(index.search(&scope, &queries[q], 0.95))
            });
        });
        // At the bound: each insert evicts the oldest vector.
        let mut next = n;
        c.bench_function(&format!("semantic_index/insert/{n}"), |b| {
            b.iter_batched(
                || {
                    next += 1;
                    (key(next), vector(&mut rng))
                },
                |(k, v)| index.insert(scope, k, v),
                BatchSize::SmallInput,
            );
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = index
}
criterion_main!(benches);
