//! A room's connection table, looked up for every client frame the room handles.
//!
//!     cargo bench -p conclave-node --bench conns

use conclave_node::bench::ConnLookup;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn conns(c: &mut Criterion) {
    let mut group = c.benchmark_group("conn_table");
    for connections in [10, 1000] {
        let table = ConnLookup::new(connections);
        group.throughput(Throughput::Elements(connections as u64));
        group.bench_function(format!("find each of {connections} by peer"), |b| {
            b.iter(|| std::hint::black_box(&table).find_each())
        });
    }
    group.finish();
}

criterion_group!(benches, conns);
criterion_main!(benches);
