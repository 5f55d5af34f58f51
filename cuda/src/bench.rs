//! GPU benchmarks for `oxccl-gpu-check`: device copy bandwidth, then every
//! elementwise kernel, Adam and the reducer in GB/s (and as a share of the
//! copy bandwidth measured in the same run), then both matmuls in TFLOP/s.
//! Times come from CUDA events around `reps` back-to-back launches after
//! warm-up launches; bytes count every read and write once.

use cudarc::driver::sys::CUevent_flags;
use oxccl::ReduceOp;

use crate::buffer::DeviceBuffer;
use crate::device::Device;
use crate::error::{DriverContext, Result};
use crate::kernels::{Activation, AdamParams, MatDims, REDUCE_DTYPES};
use crate::rng::Rng;

/// One benchmark row.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub name: String,
    /// Mean time of one launch, ms.
    pub ms: f64,
    /// GB/s (1e9 bytes) for bandwidth rows.
    pub gbps: Option<f64>,
    /// TFLOP/s for matmul rows.
    pub tflops: Option<f64>,
}

/// Mean milliseconds of `f` over `reps` runs after `warmup` runs.
pub fn time_ms(dev: &Device, warmup: usize, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
    let start = dev.stream().record_event(flags).during("cuEventRecord")?;
    for _ in 0..reps {
        f()?;
    }
    let end = dev.stream().record_event(flags).during("cuEventRecord")?;
    let ms = start.elapsed_ms(&end).during("cuEventElapsedTime")?;
    Ok(f64::from(ms) / reps as f64)
}

fn bandwidth(name: &str, ms: f64, bytes: f64) -> Measurement {
    Measurement { name: name.into(), ms, gbps: Some(bytes / (ms * 1e-3) / 1e9), tflops: None }
}

/// A device buffer of `n` f32 filled with a tiled random pattern in [lo, hi).
fn random_f32(dev: &Device, rng: &mut Rng, n: usize, lo: f32, hi: f32) -> Result<DeviceBuffer<f32>> {
    let tile = rng.vec_f32(1 << 20, lo, hi);
    let host: Vec<f32> = tile.iter().copied().cycle().take(n).collect();
    dev.upload(&host)
}

/// Device-to-device copy of `bytes` bytes: read + write counted.
pub fn copy_bandwidth(dev: &Device, bytes: usize) -> Result<Measurement> {
    let n = bytes / 4;
    let src = dev.alloc_zeros::<f32>(n)?;
    let mut dst = dev.alloc_zeros::<f32>(n)?;
    let ms = time_ms(dev, 3, 20, || dev.copy(&src.view(), &mut dst.view_mut()))?;
    Ok(bandwidth("device copy (memcpy DtoD)", ms, 2.0 * (n * 4) as f64))
}

/// Activations, Adam and the reducer (sum, every dtype) on `n` f32-sized elements.
pub fn elementwise(dev: &Device, n: usize, seed: u64) -> Result<Vec<Measurement>> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    let x = random_f32(dev, &mut rng, n, -4.0, 4.0)?;
    let dy = random_f32(dev, &mut rng, n, -1.0, 1.0)?;
    let mut y = dev.alloc_zeros::<f32>(n)?;
    for act in Activation::ALL {
        let ms = time_ms(dev, 3, 20, || dev.activation_fwd(act, &x.view(), &mut y.view_mut()))?;
        out.push(bandwidth(act.fwd_kernel(), ms, 8.0 * n as f64));
        let ms = time_ms(dev, 3, 20, || dev.activation_bwd(act, &x.view(), &dy.view(), &mut y.view_mut()))?;
        out.push(bandwidth(act.bwd_kernel(), ms, 12.0 * n as f64));
    }
    drop((x, dy, y));

    let na = n / 2;
    let mut p = random_f32(dev, &mut rng, na, -1.0, 1.0)?;
    let g = random_f32(dev, &mut rng, na, -0.1, 0.1)?;
    let mut m = random_f32(dev, &mut rng, na, -0.1, 0.1)?;
    let mut v = random_f32(dev, &mut rng, na, 0.0, 0.01)?;
    let h = AdamParams { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, step: 10 };
    let ms = time_ms(dev, 3, 20, || dev.adam(&mut p.view_mut(), &g.view(), &mut m.view_mut(), &mut v.view_mut(), &h))?;
    out.push(bandwidth("adam_f32", ms, 28.0 * na as f64));
    drop((p, g, m, v));

    let bytes = n * 4 / 16 * 16; // whole elements of every dtype, whole 16-byte vectors
    let a = dev.upload(&vec![0x3cu8; bytes])?; // 0x3c3c… is finite in every float dtype
    let b = dev.upload(&vec![0x3bu8; bytes])?;
    let mut d = dev.alloc_zeros::<u8>(bytes)?;
    for dtype in REDUCE_DTYPES {
        let name = crate::kernels::reduce_kernel(ReduceOp::Sum, dtype)?;
        let ms = time_ms(dev, 3, 20, || dev.reduce(ReduceOp::Sum, dtype, &mut d.view_mut(), &a.view(), &b.view()))?;
        out.push(bandwidth(name, ms, 3.0 * bytes as f64));
    }
    Ok(out)
}

/// Both matmuls at `size`³, TFLOP/s.
pub fn matmul(dev: &Device, size: usize, seed: u64) -> Result<Vec<Measurement>> {
    let mut rng = Rng::new(seed);
    let dims = MatDims::new(size, size, size);
    let reps = if size >= 8192 { 5 } else { 20 };
    let a = random_f32(dev, &mut rng, size * size, -1.0, 1.0)?;
    let b = random_f32(dev, &mut rng, size * size, -1.0, 1.0)?;
    let mut c = dev.alloc_zeros::<f32>(size * size)?;
    let f32_ms = time_ms(dev, 2, reps, || dev.matmul_f32(&a.view(), &b.view(), &mut c.view_mut(), dims))?;
    let tile: Vec<u16> =
        rng.vec_f32(1 << 20, -1.0, 1.0).into_iter().map(|x| half::bf16::from_f32(x).to_bits()).collect();
    let host: Vec<u16> = tile.iter().copied().cycle().take(size * size).collect();
    let (a16, b16) = (dev.upload(&host)?, dev.upload(&host)?);
    let bf16_ms = time_ms(dev, 2, reps, || dev.matmul_bf16(&a16.view(), &b16.view(), &mut c.view_mut(), dims))?;
    let row = |name: &str, ms: f64| Measurement {
        name: format!("{name} {size}³"),
        ms,
        gbps: None,
        tflops: Some(dims.flops() / (ms * 1e-3) / 1e12),
    };
    Ok(vec![row("matmul_f32", f32_ms), row("matmul_bf16", bf16_ms)])
}
