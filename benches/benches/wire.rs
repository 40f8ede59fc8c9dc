//! Frame decode: roomgate's validated decode against rkyv's unchecked access
//! of the same bytes (the price of treating network bytes as hostile).
#![allow(unsafe_code, missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rkyv::util::AlignedVec;
use roomgate::wire::{self, ArchivedClientFrame, ClientFrame, Lead, Limits, LEN_PREFIX};

fn frames() -> Vec<(&'static str, ClientFrame)> {
    vec![
        ("like", ClientFrame::Like { count: 3 }),
        (
            "chat",
            ClientFrame::Chat {
                client_msg_id: 12345,
                text: "主播这个课程多少钱？how much is the course? 123".into(),
            },
        ),
        (
            "lead",
            ClientFrame::Lead(Lead {
                client_lead_id: 9,
                phone: "+86 138 0013 8000".into(),
                wechat: "wx_zhangsan_88".into(),
                name: "张三".into(),
                fields: vec![
                    ("city".into(), "杭州".into()),
                    ("budget".into(), "20-50万".into()),
                ],
                consent: true,
                consent_version: "2026-11".into(),
                honeypot: String::new(),
                fill_ms: 15_000,
            }),
        ),
    ]
}

fn decode(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("frame_decode");
    g.throughput(Throughput::Elements(1));
    for (name, frame) in frames() {
        let encoded = wire::encode(&frame);
        let mut body = AlignedVec::<16>::new();
        body.extend_from_slice(&encoded[LEN_PREFIX..]);
        g.bench_with_input(
            BenchmarkId::new("roomgate_validated", name),
            &body,
            |b, body| b.iter(|| wire::decode_client(black_box(body), &limits).expect("valid")),
        );
        g.bench_with_input(
            BenchmarkId::new("rkyv_unchecked_peer", name),
            &body,
            |b, body| {
                b.iter(|| {
                    // SAFETY: the bytes were produced by rkyv::to_bytes just above.
                    let archived =
                        unsafe { rkyv::access_unchecked::<ArchivedClientFrame>(black_box(body)) };
                    rkyv::deserialize::<ClientFrame, rkyv::rancor::Error>(archived).expect("valid")
                })
            },
        );
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_encode");
    g.throughput(Throughput::Elements(1));
    for (name, frame) in frames() {
        g.bench_with_input(BenchmarkId::new("roomgate", name), &frame, |b, f| {
            b.iter(|| wire::encode(black_box(f)))
        });
    }
    g.finish();
}

/// The streaming decoder on one large read of tiny frames (what a flooding
/// client produces), against the same decoder moving the buffer once per
/// frame (`Vec::drain(..n)`, roomgate's decoder before the fix): the peer
/// is quadratic in frames per read, roomgate linear.
fn stream(c: &mut Criterion) {
    let limits = Limits::default();
    let like = wire::encode(&ClientFrame::Like { count: 1 });
    let mut g = c.benchmark_group("stream_decode");
    for frames in [100usize, 1_000, 10_000] {
        let read = like.repeat(frames);
        g.throughput(Throughput::Elements(frames as u64));
        g.bench_with_input(BenchmarkId::new("roomgate", frames), &read, |b, read| {
            b.iter(|| {
                let mut dec = wire::FrameDecoder::new(limits);
                dec.push(black_box(read));
                let mut n = 0;
                while let Ok(Some(_)) = dec.next_frame() {
                    n += 1;
                }
                assert_eq!(n, frames);
            })
        });
        g.bench_with_input(
            BenchmarkId::new("drain_per_frame_peer", frames),
            &read,
            |b, read| {
                b.iter(|| {
                    let mut buf = black_box(read).clone();
                    let mut n = 0;
                    while buf.len() >= LEN_PREFIX {
                        let len =
                            wire::decode_len([buf[0], buf[1], buf[2], buf[3]], limits.max_frame)
                                .expect("valid");
                        wire::decode_client(&buf[LEN_PREFIX..LEN_PREFIX + len], &limits)
                            .expect("valid");
                        buf.drain(..LEN_PREFIX + len);
                        n += 1;
                    }
                    assert_eq!(n, frames);
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, decode, encode, stream);
criterion_main!(benches);
