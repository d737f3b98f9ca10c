//! The client socket's hot functions: parsing what clients send, encoding what they get.
//!
//!     cargo bench -p conclave-gateway --bench frames

use conclave_gateway::bench::{encode_message, parse_client_frames};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// `count` masked text frames of `size` bytes, as a client sends them.
fn client_frames(count: usize, size: usize) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut wire = Vec::with_capacity(count * (size + 8));
    for _ in 0..count {
        wire.push(0x81);
        assert!(size < 126);
        wire.push(0x80 | size as u8);
        wire.extend_from_slice(&mask);
        wire.extend((0..size).map(|i| b'a' ^ mask[i % 4]));
    }
    wire
}

fn frames(c: &mut Criterion) {
    let wire = client_frames(1000, 64);
    let mut group = c.benchmark_group("client_frames");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("parse 1000 × 64 B", |b| {
        b.iter(|| parse_client_frames(std::hint::black_box(&wire), 1 << 20))
    });
    group.finish();

    let payload = vec![b'x'; 64];
    c.bench_function("encode a 64 B text message", |b| {
        b.iter(|| encode_message(std::hint::black_box(&payload), false))
    });
    let large = vec![7u8; 1 << 20];
    c.bench_function("encode a 1 MiB binary message", |b| {
        b.iter(|| encode_message(std::hint::black_box(&large), true))
    });
}

criterion_group!(benches, frames);
criterion_main!(benches);
