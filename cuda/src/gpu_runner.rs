//! [`Runner`] on a GPU: copy the host inputs (and the poisoned outputs) to
//! the device at the same offset modulo 16 bytes as on the host — so a
//! misaligned host case is misaligned on the device too — launch, copy the
//! outputs back.

use cudarc::driver::{CudaSlice, DeviceRepr};
use oxccl::{DType, ReduceOp};

use crate::device::Device;
use crate::error::{DriverContext, Result};
use crate::kernels::{Activation, AdamParams, Gemm, MatDims};
use crate::runner::{check_reduce_bytes, Runner};

pub struct GpuRunner {
    dev: Device,
}

impl GpuRunner {
    pub fn new(dev: Device) -> Self {
        GpuRunner { dev }
    }

    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// Gives the device back.
    pub fn into_device(self) -> Device {
        self.dev
    }
}

/// A device copy of a host slice, placed `off` elements into its allocation.
struct Staged<T> {
    slice: CudaSlice<T>,
    off: usize,
    len: usize,
}

impl GpuRunner {
    fn stage<T: DeviceRepr + Copy + Default>(&self, host: &[T]) -> Result<Staged<T>> {
        let size = std::mem::size_of::<T>().max(1);
        let off = (host.as_ptr() as usize % 16) / size;
        let mut padded = vec![T::default(); off + host.len() + 1];
        padded[off..off + host.len()].copy_from_slice(host);
        let slice = self.dev.stream().clone_htod(&padded).during("cuMemcpyHtoDAsync")?;
        Ok(Staged { slice, off, len: host.len() })
    }

    fn fetch<T: DeviceRepr>(&self, s: &Staged<T>, host: &mut [T]) -> Result<()> {
        self.dev.download_into(&s.slice.slice(s.off..s.off + s.len), host)
    }
}

macro_rules! v {
    ($s:expr) => {
        $s.slice.slice($s.off..$s.off + $s.len)
    };
}
macro_rules! vm {
    ($s:expr) => {
        $s.slice.slice_mut($s.off..$s.off + $s.len)
    };
}

impl Runner for GpuRunner {
    fn name(&self) -> String {
        self.dev.name().unwrap_or_else(|_| format!("cuda:{}", self.dev.ordinal()))
    }

    fn signal(&mut self, sig: crate::runner::Signal, words: &mut [u64; 3]) -> Result<()> {
        let mut s = self.stage(&words[..])?;
        self.dev.signal(sig, &mut vm!(s))?;
        self.fetch(&s, &mut words[..])
    }

    fn activation_fwd(&mut self, act: Activation, x: &[f32], y: &mut [f32]) -> Result<()> {
        let (dx, mut dy) = (self.stage(x)?, self.stage(y)?);
        self.dev.activation_fwd(act, &v!(dx), &mut vm!(dy))?;
        self.fetch(&dy, y)
    }

    fn activation_bwd(&mut self, act: Activation, x: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
        let (sx, sdy, mut sdx) = (self.stage(x)?, self.stage(dy)?, self.stage(dx)?);
        self.dev.activation_bwd(act, &v!(sx), &v!(sdy), &mut vm!(sdx))?;
        self.fetch(&sdx, dx)
    }

    fn adam(&mut self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: &AdamParams) -> Result<()> {
        let (mut sp, sg, mut sm, mut sv) = (self.stage(p)?, self.stage(g)?, self.stage(m)?, self.stage(v)?);
        self.dev.adam(&mut vm!(sp), &v!(sg), &mut vm!(sm), &mut vm!(sv), h)?;
        self.fetch(&sp, p)?;
        self.fetch(&sm, m)?;
        self.fetch(&sv, v)
    }

    fn matmul_f32(&mut self, a: &[f32], b: &[f32], c: &mut [f32], dims: MatDims) -> Result<()> {
        let (sa, sb, mut sc) = (self.stage(a)?, self.stage(b)?, self.stage(c)?);
        self.dev.matmul_f32(&v!(sa), &v!(sb), &mut vm!(sc), dims)?;
        self.fetch(&sc, c)
    }

    fn matmul_bf16(&mut self, a: &[half::bf16], b: &[half::bf16], c: &mut [f32], dims: MatDims) -> Result<()> {
        let (a, b): (&[u16], &[u16]) = (bytemuck::cast_slice(a), bytemuck::cast_slice(b));
        let (sa, sb, mut sc) = (self.stage(a)?, self.stage(b)?, self.stage(c)?);
        self.dev.matmul_bf16(&v!(sa), &v!(sb), &mut vm!(sc), dims)?;
        self.fetch(&sc, c)
    }

    fn gemm_f32(&mut self, a: &[f32], b: &[f32], c: &mut [f32], g: &Gemm) -> Result<()> {
        let (sa, sb, mut sc) = (self.stage(a)?, self.stage(b)?, self.stage(c)?);
        self.dev.gemm_f32(&v!(sa), &v!(sb), &mut vm!(sc), g)?;
        self.fetch(&sc, c)
    }

    fn bias_add_f32(&mut self, y: &mut [f32], b: &[f32], rows: usize, cols: usize) -> Result<()> {
        let (mut sy, sb) = (self.stage(y)?, self.stage(b)?);
        self.dev.bias_add_f32(&mut vm!(sy), &v!(sb), rows, cols)?;
        self.fetch(&sy, y)
    }

    fn bias_grad_f32(&mut self, dy: &[f32], db: &mut [f32], rows: usize, cols: usize) -> Result<()> {
        let (sdy, mut sdb) = (self.stage(dy)?, self.stage(db)?);
        self.dev.bias_grad_f32(&v!(sdy), &mut vm!(sdb), rows, cols)?;
        self.fetch(&sdb, db)
    }

    fn mse_f32(&mut self, p: &[f32], t: &[f32], dp: &mut [f32], partial: &mut [f32], scale: f32) -> Result<()> {
        let (sp, st) = (self.stage(p)?, self.stage(t)?);
        let (mut sdp, mut spart) = (self.stage(dp)?, self.stage(partial)?);
        self.dev.mse_f32(&v!(sp), &v!(st), &mut vm!(sdp), &mut vm!(spart), scale)?;
        self.fetch(&sdp, dp)?;
        self.fetch(&spart, partial)
    }

    fn reduce(&mut self, op: ReduceOp, dtype: DType, dst: &mut [u8], a: &[u8], b: &[u8]) -> Result<()> {
        check_reduce_bytes("reduce", dtype, &[("dst", dst), ("a", a), ("b", b)])?;
        let (mut sd, sa, sb) = (self.stage(dst)?, self.stage(a)?, self.stage(b)?);
        self.dev.reduce(op, dtype, &mut vm!(sd), &v!(sa), &v!(sb))?;
        self.fetch(&sd, dst)
    }

    fn reduce_in_place(&mut self, op: ReduceOp, dtype: DType, acc: &mut [u8], b: &[u8]) -> Result<()> {
        check_reduce_bytes("reduce_in_place", dtype, &[("acc", acc), ("b", b)])?;
        let (mut sa, sb) = (self.stage(acc)?, self.stage(b)?);
        self.dev.reduce_in_place(op, dtype, &mut vm!(sa), &v!(sb))?;
        self.fetch(&sa, acc)
    }

    fn reduce_multi(
        &mut self,
        op: ReduceOp,
        dtype: DType,
        srcs: &[&[u8]],
        dsts: &mut [&mut [u8]],
        avg: u32,
    ) -> Result<()> {
        crate::emu::check_multi("reduce_multi", dtype, srcs, dsts)?;
        let ss = srcs.iter().map(|s| self.stage(s)).collect::<Result<Vec<_>>>()?;
        let mut ds = dsts.iter().map(|d| self.stage(d)).collect::<Result<Vec<_>>>()?;
        {
            let views: Vec<_> = ss.iter().map(|s| v!(s)).collect();
            let mut outs: Vec<_> = ds.iter_mut().map(|d| vm!(d)).collect();
            self.dev.reduce_multi(op, dtype, &views, &mut outs, avg)?;
        }
        for (d, host) in ds.iter().zip(dsts.iter_mut()) {
            self.fetch(d, host)?;
        }
        Ok(())
    }

    fn avg_div(&mut self, dtype: DType, acc: &mut [u8], world: u32) -> Result<()> {
        check_reduce_bytes("avg_div", dtype, &[("acc", acc)])?;
        let mut sa = self.stage(acc)?;
        self.dev.avg_div(dtype, &mut vm!(sa), world)?;
        self.fetch(&sa, acc)
    }
}
