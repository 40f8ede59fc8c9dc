//! Shard queue: the crossbeam `ArrayQueue` roomgate's shards use, against a
//! bounded crossbeam channel and std's `sync_channel`, same capacity, same
//! 64-byte element, measured in one group.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;

#[derive(Clone, Copy)]
struct Ev {
    _w: [u64; 8],
}

const CAP: usize = 65_536;
const N: usize = 100_000;

fn single_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue_push_pop_1thread");
    g.throughput(Throughput::Elements(1024));
    let ev = Ev { _w: [7; 8] };
    g.bench_function(BenchmarkId::new("array_queue", 1024), |b| {
        let q = ArrayQueue::new(CAP);
        b.iter(|| {
            for _ in 0..1024 {
                let _ = q.push(black_box(ev));
            }
            while let Some(e) = q.pop() {
                black_box(e);
            }
        })
    });
    g.bench_function(BenchmarkId::new("crossbeam_channel_peer", 1024), |b| {
        let (tx, rx) = crossbeam_channel::bounded(CAP);
        b.iter(|| {
            for _ in 0..1024 {
                let _ = tx.try_send(black_box(ev));
            }
            while let Ok(e) = rx.try_recv() {
                black_box(e);
            }
        })
    });
    g.bench_function(BenchmarkId::new("std_sync_channel_peer", 1024), |b| {
        let (tx, rx) = std::sync::mpsc::sync_channel(CAP);
        b.iter(|| {
            for _ in 0..1024 {
                let _ = tx.try_send(black_box(ev));
            }
            while let Ok(e) = rx.try_recv() {
                black_box(e);
            }
        })
    });
    g.finish();
}

/// One producer thread, one consumer thread, N events through the queue.
fn spsc(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue_transfer_2threads");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(20);
    let ev = Ev { _w: [7; 8] };
    g.bench_function(BenchmarkId::new("array_queue", N), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let q = Arc::new(ArrayQueue::new(CAP));
                let q2 = q.clone();
                let start = Instant::now();
                let consumer = std::thread::spawn(move || {
                    let mut got = 0;
                    while got < N {
                        match q2.pop() {
                            Some(e) => {
                                black_box(e);
                                got += 1;
                            }
                            None => std::hint::spin_loop(),
                        }
                    }
                });
                for _ in 0..N {
                    while q.push(ev).is_err() {
                        std::hint::spin_loop();
                    }
                }
                consumer.join().expect("consumer");
                total += start.elapsed();
            }
            total
        })
    });
    g.bench_function(BenchmarkId::new("crossbeam_channel_peer", N), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (tx, rx) = crossbeam_channel::bounded(CAP);
                let start = Instant::now();
                let consumer = std::thread::spawn(move || {
                    for _ in 0..N {
                        black_box(rx.recv().expect("sender alive"));
                    }
                });
                for _ in 0..N {
                    tx.send(ev).expect("receiver alive");
                }
                consumer.join().expect("consumer");
                total += start.elapsed();
            }
            total
        })
    });
    g.bench_function(BenchmarkId::new("std_sync_channel_peer", N), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (tx, rx) = std::sync::mpsc::sync_channel(CAP);
                let start = Instant::now();
                let consumer = std::thread::spawn(move || {
                    for _ in 0..N {
                        black_box(rx.recv().expect("sender alive"));
                    }
                });
                for _ in 0..N {
                    tx.send(ev).expect("receiver alive");
                }
                consumer.join().expect("consumer");
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, single_thread, spsc);
criterion_main!(benches);
