//! Throughput of the CPU reducers (`oxccl::reduce::reduce`) against memcpy.
//!
//! For every dtype, `reduce(.., Sum, dst, a, b)` (plus `Max` for f32) over
//! 256 KiB buffers (in cache) and 64 MiB buffers (beyond cache). Throughput
//! counts bytes moved: 3 × buffer (two reads, one write) for reduce and
//! 2 × buffer (one read, one write) for the `memcpy` reference, so criterion
//! reports comparable GB/s.
//!
//! Run: `cargo bench -p oxccl-bench --bench reduce` (smoke: `-- --test`).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use oxccl::reduce::reduce;
use oxccl::{DType, ReduceOp};
use std::time::Duration;

const SIZES: [(usize, &str); 2] = [(256 << 10, "256KiB"), (64 << 20, "64MiB")];

/// A zeroed byte buffer aligned for every dtype (backed by `u64`).
fn buffer(bytes: usize) -> Vec<u64> {
    vec![0u64; bytes / 8]
}

/// Fills with small non-zero values of the dtype, so float sums stay finite
/// and normal (denormals or NaNs could slow some paths down).
fn fill(dtype: DType, buf: &mut [u64], seed: u64) {
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(buf);
    let mut s = seed;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as u32 % 100 + 1
    };
    match dtype {
        DType::F16 => bytemuck::cast_slice_mut::<_, half::f16>(bytes)
            .iter_mut()
            .for_each(|x| *x = half::f16::from_f32(next() as f32 / 64.0)),
        DType::BF16 => bytemuck::cast_slice_mut::<_, half::bf16>(bytes)
            .iter_mut()
            .for_each(|x| *x = half::bf16::from_f32(next() as f32 / 64.0)),
        DType::F32 => bytemuck::cast_slice_mut::<_, f32>(bytes).iter_mut().for_each(|x| *x = next() as f32 / 64.0),
        DType::F64 => bytemuck::cast_slice_mut::<_, f64>(bytes).iter_mut().for_each(|x| *x = f64::from(next()) / 64.0),
        // Integers: any bit pattern is fine (sums wrap).
        _ => bytes.iter_mut().for_each(|x| *x = next() as u8),
    }
}

fn bench_reduce(c: &mut Criterion) {
    let mut cases: Vec<(DType, ReduceOp)> = DType::ALL.iter().map(|&d| (d, ReduceOp::Sum)).collect();
    cases.push((DType::F32, ReduceOp::Max));

    for (bytes, label) in SIZES {
        let mut group = c.benchmark_group(format!("reduce/{label}"));
        group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));

        let mut dst = buffer(bytes);
        let mut a = buffer(bytes);
        let mut b = buffer(bytes);
        // Touch every page up front: untouched calloc pages all map the
        // shared zero page, which would make memcpy's reads cache hits.
        for buf in [&mut dst, &mut a, &mut b] {
            fill(DType::U8, buf, 0x2545_F491_4F6C_DD1D);
        }

        group.throughput(Throughput::Bytes(2 * bytes as u64));
        group.bench_function("memcpy", |bench| {
            let (d, s): (&mut [u8], &[u8]) = (bytemuck::cast_slice_mut(&mut dst), bytemuck::cast_slice(&a));
            bench.iter(|| d.copy_from_slice(black_box(s)));
        });

        group.throughput(Throughput::Bytes(3 * bytes as u64));
        for &(dtype, op) in &cases {
            fill(dtype, &mut a, 0x9E37_79B9_7F4A_7C15);
            fill(dtype, &mut b, 0xD1B5_4A32_D192_ED03);
            let id = BenchmarkId::new(op.name(), dtype.name());
            group.bench_function(id, |bench| {
                let d: &mut [u8] = bytemuck::cast_slice_mut(&mut dst);
                let (x, y): (&[u8], &[u8]) = (bytemuck::cast_slice(&a), bytemuck::cast_slice(&b));
                bench.iter(|| reduce(dtype, op, d, black_box(x), black_box(y)));
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_reduce);
criterion_main!(benches);
