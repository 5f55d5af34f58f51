//! The kernels compiled for the host through ptx/emu (see emu.h there):
//! the same sources as the PTX, run block by block with real threads and
//! barriers. Slow, exact in what it checks: fragment layouts, barriers,
//! bounds, cp.async ordering.

use std::ffi::{c_int, c_void};

use oxccl::{DType, ReduceOp};

use crate::error::{Error, Result};
use crate::kernels::{self, Activation, AdamParams, Gemm, MatDims, Shape};
use crate::runner::{check_reduce_bytes, Runner};

mod ffi {
    use std::ffi::{c_int, c_uint, c_void};

    use crate::kernels::MultiPtrs;

    pub type Unary = unsafe extern "C" fn(c_uint, c_uint, c_uint, *const f32, *mut f32, usize) -> c_int;
    pub type Binary = unsafe extern "C" fn(c_uint, c_uint, c_uint, *const f32, *const f32, *mut f32, usize) -> c_int;
    pub type Reduce =
        unsafe extern "C" fn(c_uint, c_uint, c_uint, *mut c_void, *const c_void, *const c_void, usize) -> c_int;

    extern "C" {
        pub fn oxk_emu_relu_fwd_f32(gx: c_uint, gy: c_uint, bx: c_uint, x: *const f32, y: *mut f32, n: usize) -> c_int;
        pub fn oxk_emu_gelu_fwd_f32(gx: c_uint, gy: c_uint, bx: c_uint, x: *const f32, y: *mut f32, n: usize) -> c_int;
        pub fn oxk_emu_relu_bwd_f32(
            gx: c_uint,
            gy: c_uint,
            bx: c_uint,
            x: *const f32,
            dy: *const f32,
            dx: *mut f32,
            n: usize,
        ) -> c_int;
        pub fn oxk_emu_gelu_bwd_f32(
            gx: c_uint,
            gy: c_uint,
            bx: c_uint,
            x: *const f32,
            dy: *const f32,
            dx: *mut f32,
            n: usize,
        ) -> c_int;
        pub fn oxk_emu_adam_f32(
            gx: c_uint,
            gy: c_uint,
            bx: c_uint,
            p: *mut f32,
            g: *const f32,
            m: *mut f32,
            v: *mut f32,
            n: usize,
            lr: f32,
            beta1: f32,
            beta2: f32,
            eps: f32,
            weight_decay: f32,
            bc1: f32,
            bc2: f32,
        ) -> c_int;
        pub fn oxk_emu_matmul_f32(
            gx: c_uint,
            gy: c_uint,
            bx: c_uint,
            a: *const f32,
            b: *const f32,
            c: *mut f32,
            m: c_int,
            n: c_int,
            k: c_int,
        ) -> c_int;
        pub fn oxk_emu_gemm_f32(
            gx: c_uint,
            gy: c_uint,
            bx: c_uint,
            a: *const f32,
            b: *const f32,
            c: *mut f32,
            m: c_int,
            n: c_int,
            k: c_int,
            trans_a: c_int,
            trans_b: c_int,
            alpha: f32,
            beta: f32,
        ) -> c_int;
        pub fn oxk_emu_bias_add_f32(
            gx: c_uint,
            gy: c_uint,
            bx: c_uint,
            y: *mut f32,
            b: *const f32,
            rows: usize,
            cols: usize,
        ) -> c_int;
        pub fn oxk_emu_bias_grad_f32(
            gx: c_uint,
            gy: c_uint,
            bx: c_uint,
            dy: *const f32,
            db: *mut f32,
            rows: usize,
            cols: usize,
        ) -> c_int;
        pub fn oxk_emu_mse_f32(
            gx: c_uint,
            gy: c_uint,
            bx: c_uint,
            p: *const f32,
            t: *const f32,
            dp: *mut f32,
            partial: *mut f32,
            n: usize,
            scale: f32,
        ) -> c_int;
        pub fn oxk_emu_matmul_bf16(
            gx: c_uint,
            gy: c_uint,
            bx: c_uint,
            a: *const u16,
            b: *const u16,
            c: *mut f32,
            m: c_int,
            n: c_int,
            k: c_int,
        ) -> c_int;
    }

    macro_rules! reducers {
        ($($name:ident),*) => {
            extern "C" {
                $(pub fn $name(gx: c_uint, gy: c_uint, bx: c_uint, d: *mut c_void, a: *const c_void, b: *const c_void, n: usize) -> c_int;)*
            }
            pub fn reducer(kernel: &str) -> Option<Reduce> {
                match kernel {
                    $(k if k == &stringify!($name)["oxk_emu_".len()..] => Some($name as Reduce),)*
                    _ => None,
                }
            }
        };
    }
    extern "C" {
        pub fn oxk_emu_sig_write(
            gx: c_uint,
            gy: c_uint,
            bx: c_uint,
            word: *mut u64,
            epoch: *const u64,
            offset: u64,
        ) -> c_int;
        pub fn oxk_emu_sig_wait(
            gx: c_uint,
            gy: c_uint,
            bx: c_uint,
            word: *const u64,
            epoch: *const u64,
            offset: u64,
            timeout_ns: u64,
            fault: *mut u64,
            code: u64,
        ) -> c_int;
        pub fn oxk_emu_sig_advance(gx: c_uint, gy: c_uint, bx: c_uint, epoch: *mut u64) -> c_int;
    }

    /// avg's division entry points, all of one signature.
    pub type AvgDiv = unsafe extern "C" fn(c_uint, c_uint, c_uint, *mut c_void, usize, u32) -> c_int;

    macro_rules! avg_divs {
        ($($name:ident),*) => {
            extern "C" {
                $(pub fn $name(gx: c_uint, gy: c_uint, bx: c_uint, d: *mut c_void, n: usize, world: u32) -> c_int;)*
            }
            pub fn avg_div(kernel: &str) -> Option<AvgDiv> {
                match kernel {
                    $(k if k == &stringify!($name)["oxk_emu_".len()..] => Some($name as AvgDiv),)*
                    _ => None,
                }
            }
        };
    }
    avg_divs!(
        oxk_emu_avg_div_f32,
        oxk_emu_avg_div_f64,
        oxk_emu_avg_div_f16,
        oxk_emu_avg_div_bf16,
        oxk_emu_avg_div_i8,
        oxk_emu_avg_div_u8,
        oxk_emu_avg_div_i32,
        oxk_emu_avg_div_u32,
        oxk_emu_avg_div_i64,
        oxk_emu_avg_div_u64
    );

    /// The multi-reducer's entry points, all of one signature.
    pub type Multi = unsafe extern "C" fn(c_uint, c_uint, c_uint, MultiPtrs, c_int, c_int, usize, u32) -> c_int;

    macro_rules! multis {
        ($($name:ident),*) => {
            extern "C" {
                $(pub fn $name(gx: c_uint, gy: c_uint, bx: c_uint, p: MultiPtrs, nsrc: c_int, ndst: c_int, n: usize, avg: u32) -> c_int;)*
            }
            pub fn multi(kernel: &str) -> Option<Multi> {
                match kernel {
                    $(k if k == &stringify!($name)["oxk_emu_".len()..] => Some($name as Multi),)*
                    _ => None,
                }
            }
        };
    }
    multis!(
        oxk_emu_reduce_multi_sum_f32,
        oxk_emu_reduce_multi_prod_f32,
        oxk_emu_reduce_multi_min_f32,
        oxk_emu_reduce_multi_max_f32,
        oxk_emu_reduce_multi_sum_f64,
        oxk_emu_reduce_multi_prod_f64,
        oxk_emu_reduce_multi_min_f64,
        oxk_emu_reduce_multi_max_f64,
        oxk_emu_reduce_multi_sum_f16,
        oxk_emu_reduce_multi_prod_f16,
        oxk_emu_reduce_multi_min_f16,
        oxk_emu_reduce_multi_max_f16,
        oxk_emu_reduce_multi_sum_bf16,
        oxk_emu_reduce_multi_prod_bf16,
        oxk_emu_reduce_multi_min_bf16,
        oxk_emu_reduce_multi_max_bf16,
        oxk_emu_reduce_multi_sum_i8,
        oxk_emu_reduce_multi_prod_i8,
        oxk_emu_reduce_multi_min_i8,
        oxk_emu_reduce_multi_max_i8,
        oxk_emu_reduce_multi_sum_u8,
        oxk_emu_reduce_multi_prod_u8,
        oxk_emu_reduce_multi_min_u8,
        oxk_emu_reduce_multi_max_u8,
        oxk_emu_reduce_multi_sum_i32,
        oxk_emu_reduce_multi_prod_i32,
        oxk_emu_reduce_multi_min_i32,
        oxk_emu_reduce_multi_max_i32,
        oxk_emu_reduce_multi_sum_u32,
        oxk_emu_reduce_multi_prod_u32,
        oxk_emu_reduce_multi_min_u32,
        oxk_emu_reduce_multi_max_u32,
        oxk_emu_reduce_multi_sum_i64,
        oxk_emu_reduce_multi_prod_i64,
        oxk_emu_reduce_multi_min_i64,
        oxk_emu_reduce_multi_max_i64,
        oxk_emu_reduce_multi_sum_u64,
        oxk_emu_reduce_multi_prod_u64,
        oxk_emu_reduce_multi_min_u64,
        oxk_emu_reduce_multi_max_u64
    );

    reducers!(
        oxk_emu_reduce_sum_f32,
        oxk_emu_reduce_prod_f32,
        oxk_emu_reduce_min_f32,
        oxk_emu_reduce_max_f32,
        oxk_emu_reduce_sum_f64,
        oxk_emu_reduce_prod_f64,
        oxk_emu_reduce_min_f64,
        oxk_emu_reduce_max_f64,
        oxk_emu_reduce_sum_f16,
        oxk_emu_reduce_prod_f16,
        oxk_emu_reduce_min_f16,
        oxk_emu_reduce_max_f16,
        oxk_emu_reduce_sum_bf16,
        oxk_emu_reduce_prod_bf16,
        oxk_emu_reduce_min_bf16,
        oxk_emu_reduce_max_bf16,
        oxk_emu_reduce_sum_i8,
        oxk_emu_reduce_prod_i8,
        oxk_emu_reduce_min_i8,
        oxk_emu_reduce_max_i8,
        oxk_emu_reduce_sum_u8,
        oxk_emu_reduce_prod_u8,
        oxk_emu_reduce_min_u8,
        oxk_emu_reduce_max_u8,
        oxk_emu_reduce_sum_i32,
        oxk_emu_reduce_prod_i32,
        oxk_emu_reduce_min_i32,
        oxk_emu_reduce_max_i32,
        oxk_emu_reduce_sum_u32,
        oxk_emu_reduce_prod_u32,
        oxk_emu_reduce_min_u32,
        oxk_emu_reduce_max_u32,
        oxk_emu_reduce_sum_i64,
        oxk_emu_reduce_prod_i64,
        oxk_emu_reduce_min_i64,
        oxk_emu_reduce_max_i64,
        oxk_emu_reduce_sum_u64,
        oxk_emu_reduce_prod_u64,
        oxk_emu_reduce_min_u64,
        oxk_emu_reduce_max_u64
    );
}

/// Runs kernels on the host. Launches are serialised inside the emulator.
#[derive(Clone, Copy, Debug)]
pub struct Emu {
    max_grid: u32,
}

impl Default for Emu {
    /// The GPU's launch shapes.
    fn default() -> Self {
        Emu { max_grid: kernels::ELEMENTWISE_MAX_GRID }
    }
}

impl Emu {
    /// Elementwise launches capped at `max_grid` blocks, so that small
    /// inputs still take several trips round the grid-stride loops.
    pub fn with_max_grid(max_grid: u32) -> Self {
        Emu { max_grid }
    }

    fn vec_shape(&self, n: usize, per_thread: usize) -> Shape {
        kernels::elementwise_shape_capped(n, per_thread, self.max_grid)
    }
}

fn done(kernel: &'static str, code: c_int) -> Result<()> {
    match code {
        0 => Ok(()),
        code => Err(Error::EmuLaunch { kernel, code }),
    }
}

impl Runner for Emu {
    fn name(&self) -> String {
        "emu".into()
    }

    fn signal(&mut self, sig: crate::runner::Signal, words: &mut [u64; 3]) -> Result<()> {
        use std::sync::atomic::{AtomicU64, Ordering};
        let [word, epoch, fault] = words.map(AtomicU64::new);
        match sig {
            crate::runner::Signal::Write { offset } => self.sig_write(&word, &epoch, offset)?,
            crate::runner::Signal::Wait { offset, timeout_ns, code } => {
                self.sig_wait(&word, &epoch, offset, timeout_ns, &fault, code)?
            }
            crate::runner::Signal::Advance => self.sig_advance(&epoch)?,
        }
        *words = [word, epoch, fault].map(|w| w.load(Ordering::Acquire));
        Ok(())
    }

    fn activation_fwd(&mut self, act: Activation, x: &[f32], y: &mut [f32]) -> Result<()> {
        let kernel = act.fwd_kernel();
        let n = kernels::same_len(kernel, &[("x", x.len()), ("y", y.len())])?;
        let f: ffi::Unary = match act {
            Activation::Relu => ffi::oxk_emu_relu_fwd_f32,
            Activation::Gelu => ffi::oxk_emu_gelu_fwd_f32,
        };
        let s = self.vec_shape(n, 4);
        // SAFETY: x and y are live slices of n f32 each and do not overlap (y is &mut);
        // the kernel touches indices < n only.
        done(kernel, unsafe { f(s.grid.0, s.grid.1, s.block, x.as_ptr(), y.as_mut_ptr(), n) })
    }

    fn activation_bwd(&mut self, act: Activation, x: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
        let kernel = act.bwd_kernel();
        let n = kernels::same_len(kernel, &[("x", x.len()), ("dy", dy.len()), ("dx", dx.len())])?;
        let f: ffi::Binary = match act {
            Activation::Relu => ffi::oxk_emu_relu_bwd_f32,
            Activation::Gelu => ffi::oxk_emu_gelu_bwd_f32,
        };
        let s = self.vec_shape(n, 4);
        // SAFETY: three live slices of n f32; dx is exclusive; indices < n only.
        done(kernel, unsafe { f(s.grid.0, s.grid.1, s.block, x.as_ptr(), dy.as_ptr(), dx.as_mut_ptr(), n) })
    }

    fn adam(&mut self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: &AdamParams) -> Result<()> {
        let kernel = "adam_f32";
        h.check()?;
        let n = kernels::same_len(kernel, &[("p", p.len()), ("g", g.len()), ("m", m.len()), ("v", v.len())])?;
        let (bc1, bc2) = h.bias_corrections();
        let s = self.vec_shape(n, 4);
        // SAFETY: four live, non-overlapping slices of n f32 (three exclusive); indices < n only.
        let code = unsafe {
            ffi::oxk_emu_adam_f32(
                s.grid.0,
                s.grid.1,
                s.block,
                p.as_mut_ptr(),
                g.as_ptr(),
                m.as_mut_ptr(),
                v.as_mut_ptr(),
                n,
                h.lr,
                h.beta1,
                h.beta2,
                h.eps,
                h.weight_decay,
                bc1,
                bc2,
            )
        };
        done(kernel, code)
    }

    fn matmul_f32(&mut self, a: &[f32], b: &[f32], c: &mut [f32], dims: MatDims) -> Result<()> {
        let kernel = "matmul_f32";
        let (m, n, k) = dims.check(kernel, a.len(), b.len(), c.len())?;
        if c.is_empty() {
            return Ok(());
        }
        let s = kernels::matmul_shape(dims.m, dims.n);
        // SAFETY: a, b, c hold m·k, k·n, m·n f32 (checked above); c is exclusive; the kernel
        // bounds-checks every access against m, n, k.
        done(kernel, unsafe {
            ffi::oxk_emu_matmul_f32(s.grid.0, s.grid.1, s.block, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), m, n, k)
        })
    }

    fn matmul_bf16(&mut self, a: &[half::bf16], b: &[half::bf16], c: &mut [f32], dims: MatDims) -> Result<()> {
        let kernel = "matmul_bf16";
        let (m, n, k) = dims.check(kernel, a.len(), b.len(), c.len())?;
        if c.is_empty() {
            return Ok(());
        }
        let s = kernels::matmul_shape(dims.m, dims.n);
        let (a, b): (&[u16], &[u16]) = (bytemuck::cast_slice(a), bytemuck::cast_slice(b));
        // SAFETY: as matmul_f32; bf16 and u16 share size and alignment.
        done(kernel, unsafe {
            ffi::oxk_emu_matmul_bf16(s.grid.0, s.grid.1, s.block, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), m, n, k)
        })
    }

    fn gemm_f32(&mut self, a: &[f32], b: &[f32], c: &mut [f32], g: &Gemm) -> Result<()> {
        let kernel = "gemm_f32";
        let [m, n, k, ta, tb] = g.check(a.len(), b.len(), c.len())?;
        if c.is_empty() {
            return Ok(());
        }
        let s = kernels::gemm_shape(g.m, g.n);
        // SAFETY: a, b, c hold m·k, k·n, m·n f32 (checked above) whatever the transposes; c is
        // exclusive; the kernel bounds-checks every access against m, n, k.
        done(kernel, unsafe {
            ffi::oxk_emu_gemm_f32(
                s.grid.0,
                s.grid.1,
                s.block,
                a.as_ptr(),
                b.as_ptr(),
                c.as_mut_ptr(),
                m,
                n,
                k,
                ta,
                tb,
                g.alpha,
                g.beta,
            )
        })
    }

    fn bias_add_f32(&mut self, y: &mut [f32], b: &[f32], rows: usize, cols: usize) -> Result<()> {
        let kernel = "bias_add_f32";
        let elems = kernels::check_bias(kernel, y.len(), b.len(), rows, cols)?;
        if elems == 0 {
            return Ok(());
        }
        let s = self.vec_shape(elems, 1);
        // SAFETY: y holds rows·cols f32 and is exclusive, b holds cols (checked); the kernel
        // touches y[i] for i < rows·cols and b[i mod cols] only.
        done(kernel, unsafe {
            ffi::oxk_emu_bias_add_f32(s.grid.0, s.grid.1, s.block, y.as_mut_ptr(), b.as_ptr(), rows, cols)
        })
    }

    fn bias_grad_f32(&mut self, dy: &[f32], db: &mut [f32], rows: usize, cols: usize) -> Result<()> {
        let kernel = "bias_grad_f32";
        kernels::check_bias(kernel, dy.len(), db.len(), rows, cols)?;
        if cols == 0 {
            return Ok(());
        }
        let s = kernels::bias_grad_shape(cols);
        // SAFETY: dy holds rows·cols f32, db holds cols and is exclusive (checked); the kernel
        // reads dy[r·cols + c] and writes db[c] for c < cols, r < rows only.
        done(kernel, unsafe {
            ffi::oxk_emu_bias_grad_f32(s.grid.0, s.grid.1, s.block, dy.as_ptr(), db.as_mut_ptr(), rows, cols)
        })
    }

    fn mse_f32(&mut self, p: &[f32], t: &[f32], dp: &mut [f32], partial: &mut [f32], scale: f32) -> Result<()> {
        let kernel = "mse_f32";
        let n = kernels::check_mse(p.len(), t.len(), dp.len(), partial.len())?;
        let s = kernels::mse_shape(n);
        // SAFETY: p, t, dp hold n f32 and partial one per block of the launch (checked); dp and
        // partial are exclusive; the kernel touches indices < n and partial[blockIdx.x] only.
        done(kernel, unsafe {
            ffi::oxk_emu_mse_f32(
                s.grid.0,
                s.grid.1,
                s.block,
                p.as_ptr(),
                t.as_ptr(),
                dp.as_mut_ptr(),
                partial.as_mut_ptr(),
                n,
                scale,
            )
        })
    }

    fn reduce(&mut self, op: ReduceOp, dtype: DType, dst: &mut [u8], a: &[u8], b: &[u8]) -> Result<()> {
        let kernel = kernels::reduce_kernel(op, dtype)?;
        let n = check_reduce_bytes(kernel, dtype, &[("dst", dst), ("a", a), ("b", b)])?;
        let f = ffi::reducer(kernel).ok_or(Error::invalid(kernel, "no emulated entry"))?;
        let s = self.vec_shape(n, 16 / dtype.size());
        // SAFETY: three live buffers of n aligned `dtype` elements; dst is exclusive.
        done(kernel, unsafe {
            f(s.grid.0, s.grid.1, s.block, dst.as_mut_ptr().cast::<c_void>(), a.as_ptr().cast(), b.as_ptr().cast(), n)
        })
    }

    fn reduce_in_place(&mut self, op: ReduceOp, dtype: DType, acc: &mut [u8], b: &[u8]) -> Result<()> {
        let kernel = kernels::reduce_kernel(op, dtype)?;
        let n = check_reduce_bytes(kernel, dtype, &[("acc", acc), ("b", b)])?;
        let f = ffi::reducer(kernel).ok_or(Error::invalid(kernel, "no emulated entry"))?;
        let s = self.vec_shape(n, 16 / dtype.size());
        let d = acc.as_mut_ptr().cast::<c_void>();
        // SAFETY: acc and b are live buffers of n aligned elements; the kernel reads a[i] before
        // writing dst[i] at the same index, so dst = a is allowed.
        done(kernel, unsafe { f(s.grid.0, s.grid.1, s.block, d, d.cast_const(), b.as_ptr().cast(), n) })
    }

    fn reduce_multi(
        &mut self,
        op: ReduceOp,
        dtype: DType,
        srcs: &[&[u8]],
        dsts: &mut [&mut [u8]],
        avg: u32,
    ) -> Result<()> {
        let kernel = kernels::reduce_multi_kernel(op, dtype)?;
        let n = check_multi(kernel, dtype, srcs, dsts)?;
        let src: Vec<*const u8> = srcs.iter().map(|s| s.as_ptr()).collect();
        let dst: Vec<*mut u8> = dsts.iter_mut().map(|d| d.as_mut_ptr()).collect();
        // SAFETY: every pointer addresses n aligned, live `dtype` elements (checked), the
        // destinations are distinct exclusive slices and no source aliases them.
        unsafe { self.reduce_multi_raw(op, dtype, &src, &dst, n, avg) }
    }

    fn avg_div(&mut self, dtype: DType, acc: &mut [u8], world: u32) -> Result<()> {
        let kernel = kernels::avg_kernel(dtype)?;
        let n = check_reduce_bytes(kernel, dtype, &[("acc", acc)])?;
        let f = ffi::avg_div(kernel).ok_or(Error::invalid(kernel, "no emulated entry"))?;
        let s = self.vec_shape(n, 1);
        // SAFETY: acc is a live buffer of n aligned `dtype` elements, written only here.
        done(kernel, unsafe { f(s.grid.0, s.grid.1, s.block, acc.as_mut_ptr().cast::<c_void>(), n, world) })
    }
}

/// The signal kernels of `ptx/kernels/signal.cu` under the emulation, one
/// block of one thread each, on words the caller passes (the tests compare
/// them with the emulated device's own signals).
impl Emu {
    /// `sig_write`: `*word = (*epoch << 32) + offset`.
    pub fn sig_write(
        &mut self,
        word: &std::sync::atomic::AtomicU64,
        epoch: &std::sync::atomic::AtomicU64,
        offset: u64,
    ) -> Result<()> {
        // SAFETY: both point to live 8-byte words; the kernel loads and stores them atomically.
        done(kernels::SIG_WRITE, unsafe { ffi::oxk_emu_sig_write(1, 1, 1, word.as_ptr(), epoch.as_ptr(), offset) })
    }

    /// `sig_wait`: returns once `*word ≥ (*epoch << 32) + offset`, or after
    /// `timeout_ns` having stored `code` into `fault`.
    pub fn sig_wait(
        &mut self,
        word: &std::sync::atomic::AtomicU64,
        epoch: &std::sync::atomic::AtomicU64,
        offset: u64,
        timeout_ns: u64,
        fault: &std::sync::atomic::AtomicU64,
        code: u64,
    ) -> Result<()> {
        // SAFETY: as in `sig_write`.
        done(kernels::SIG_WAIT, unsafe {
            ffi::oxk_emu_sig_wait(1, 1, 1, word.as_ptr(), epoch.as_ptr(), offset, timeout_ns, fault.as_ptr(), code)
        })
    }

    /// `sig_advance`: `*epoch += 1`.
    pub fn sig_advance(&mut self, epoch: &std::sync::atomic::AtomicU64) -> Result<()> {
        // SAFETY: as in `sig_write`.
        done(kernels::SIG_ADVANCE, unsafe { ffi::oxk_emu_sig_advance(1, 1, 1, epoch.as_ptr()) })
    }
}

impl Emu {
    /// The multi-reducer on raw addresses: `n` elements of `dtype` at each
    /// of `srcs` (1 ..= [`kernels::MULTI_MAX`]) combined under `op` in
    /// order, divided by `avg` when it is not 0, written to each of `dsts`
    /// (0 ..= MULTI_MAX). A destination may be a source (every source
    /// element is read before any destination element is written).
    ///
    /// # Safety
    /// Each address holds `n` live, aligned elements; nothing else touches
    /// the destinations while the kernel runs, nor writes the sources.
    pub unsafe fn reduce_multi_raw(
        &self,
        op: ReduceOp,
        dtype: DType,
        srcs: &[*const u8],
        dsts: &[*mut u8],
        n: usize,
        avg: u32,
    ) -> Result<()> {
        let kernel = kernels::reduce_multi_kernel(op, dtype)?;
        if srcs.is_empty() || srcs.len() > kernels::MULTI_MAX || dsts.len() > kernels::MULTI_MAX {
            return Err(Error::invalid(kernel, format!("{} sources and {} destinations", srcs.len(), dsts.len())));
        }
        if n == 0 || dsts.is_empty() {
            return Ok(());
        }
        let f = ffi::multi(kernel).ok_or(Error::invalid(kernel, "no emulated entry"))?;
        let mut p = kernels::MultiPtrs::default();
        srcs.iter().enumerate().for_each(|(i, &s)| p.src[i] = s as u64);
        dsts.iter().enumerate().for_each(|(i, &d)| p.dst[i] = d as u64);
        let s = self.vec_shape(n, 16 / dtype.size());
        let (ns, nd) = (srcs.len() as c_int, dsts.len() as c_int);
        // SAFETY: the caller's contract; the kernel touches indices < n of each pointer only.
        done(kernel, unsafe { f(s.grid.0, s.grid.1, s.block, p, ns, nd, n, avg) })
    }
}

/// Checks the multi-reducer's byte buffers (as [`check_reduce_bytes`], and
/// the counts); the element count.
pub(crate) fn check_multi(kernel: &'static str, dtype: DType, srcs: &[&[u8]], dsts: &[&mut [u8]]) -> Result<usize> {
    if srcs.is_empty() || srcs.len() > kernels::MULTI_MAX || dsts.len() > kernels::MULTI_MAX {
        return Err(Error::invalid(kernel, format!("{} sources and {} destinations", srcs.len(), dsts.len())));
    }
    let all: Vec<(&str, &[u8])> =
        srcs.iter().map(|s| ("src", &s[..])).chain(dsts.iter().map(|d| ("dst", &d[..]))).collect();
    check_reduce_bytes(kernel, dtype, &all)
}

/// Checks of the emulator's own primitives (warp shuffles, conversions),
/// for the tests.
pub mod selftest {
    use std::ffi::{c_int, c_uint};

    use crate::error::{Error, Result};

    extern "C" {
        fn oxk_emu_selftest_shfl(threads: c_uint, out: *mut c_uint) -> c_int;
        fn oxk_emu_selftest_convert(
            f16_to_f32: *mut f32,
            input: *const f32,
            to_f16: *mut u16,
            to_bf16: *mut u16,
            n: usize,
        );
    }

    /// Runs the shuffle self-test kernel on one block of `threads` (a
    /// multiple of 32, ≤ 1024) and returns its 4 results per thread.
    pub fn shuffles(threads: u32) -> Result<Vec<u32>> {
        if threads == 0 || threads % 32 != 0 || threads > 1024 {
            return Err(Error::invalid("selftest_shfl", format!("{threads} threads")));
        }
        let mut out = vec![u32::MAX; 4 * threads as usize];
        // SAFETY: `out` holds 4 words for each of the `threads` threads, which write only those.
        let code = unsafe { oxk_emu_selftest_shfl(threads, out.as_mut_ptr()) };
        if code != 0 {
            return Err(Error::EmuLaunch { kernel: "selftest_shfl", code });
        }
        Ok(out)
    }

    /// The emulator's f16 → f32 for every pattern, and its f32 → f16 and
    /// f32 → bf16 of `input`.
    pub fn conversions(input: &[f32]) -> (Vec<f32>, Vec<u16>, Vec<u16>) {
        let mut widened = vec![0.0f32; 65536];
        let (mut h, mut b) = (vec![0u16; input.len()], vec![0u16; input.len()]);
        // SAFETY: widened holds 65536 floats; h and b hold input.len() elements each.
        unsafe {
            oxk_emu_selftest_convert(widened.as_mut_ptr(), input.as_ptr(), h.as_mut_ptr(), b.as_mut_ptr(), input.len())
        };
        (widened, h, b)
    }
}
