//! A room's broadcast: one delivery per gateway, built from the room's connection table
//! for every message a party broadcasts.
//!
//!     cargo bench -p conclave-node --bench broadcast

use conclave_node::bench::Broadcast;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn broadcast(c: &mut Criterion) {
    let mut group = c.benchmark_group("broadcast");
    for members in [10, 1000] {
        let room = Broadcast::new(members);
        group.throughput(Throughput::Elements(members as u64));
        group.bench_function(format!("to {members} members"), |b| {
            b.iter(|| std::hint::black_box(&room).once(&[]))
        });
        group.bench_function(format!("to {members} members but the sender"), |b| {
            b.iter(|| std::hint::black_box(&room).once(&["conn-7"]))
        });
    }
    group.finish();
}

criterion_group!(benches, broadcast);
criterion_main!(benches);
