//! Typed launchers: each checks its lengths (and, for the reducer,
//! alignment) and then makes the one raw launch this crate allows, with the
//! shape from [`crate::kernels`]. All launches go to the device's stream
//! and are asynchronous; copy back or call [`Device::synchronize`].

use cudarc::driver::{CudaView, CudaViewMut, DevicePtr, LaunchConfig, PushKernelArg};
use oxccl::{DType, ReduceOp};

use crate::device::Device;
use crate::error::{DriverContext, Error, Result};
use crate::kernels::{self, Activation, AdamParams, Gemm, MatDims, Shape};

fn config(s: Shape) -> LaunchConfig {
    LaunchConfig { grid_dim: (s.grid.0, s.grid.1, 1), block_dim: (s.block, 1, 1), shared_mem_bytes: 0 }
}

impl Device {
    fn device_addr<T>(&self, v: &CudaView<'_, T>) -> u64 {
        let (ptr, _sync) = v.device_ptr(self.stream());
        ptr
    }

    /// `y = act(x)`.
    pub fn activation_fwd(&self, act: Activation, x: &CudaView<'_, f32>, y: &mut CudaViewMut<'_, f32>) -> Result<()> {
        let kernel = act.fwd_kernel();
        let n = kernels::same_len(kernel, &[("x", x.len()), ("y", y.len())])?;
        if n == 0 {
            return Ok(());
        }
        let f = self.function(kernel)?;
        let n64 = n as u64;
        let mut launch = self.stream().launch_builder(&f);
        launch.arg(x).arg(y).arg(&n64);
        // SAFETY: relu/gelu_fwd_f32(const float*, float*, size_t) — the arguments match in
        // number and type, both views hold n elements, and the kernel touches indices < n only.
        unsafe { launch.launch(config(kernels::elementwise_shape(n, 4))) }.during(kernel)?;
        Ok(())
    }

    /// `dx = dy · act′(x)`.
    pub fn activation_bwd(
        &self,
        act: Activation,
        x: &CudaView<'_, f32>,
        dy: &CudaView<'_, f32>,
        dx: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        let kernel = act.bwd_kernel();
        let n = kernels::same_len(kernel, &[("x", x.len()), ("dy", dy.len()), ("dx", dx.len())])?;
        if n == 0 {
            return Ok(());
        }
        let f = self.function(kernel)?;
        let n64 = n as u64;
        let mut launch = self.stream().launch_builder(&f);
        launch.arg(x).arg(dy).arg(dx).arg(&n64);
        // SAFETY: relu/gelu_bwd_f32(const float*, const float*, float*, size_t); all three views
        // hold n elements; indices < n only.
        unsafe { launch.launch(config(kernels::elementwise_shape(n, 4))) }.during(kernel)?;
        Ok(())
    }

    /// One AdamW step.
    pub fn adam(
        &self,
        p: &mut CudaViewMut<'_, f32>,
        g: &CudaView<'_, f32>,
        m: &mut CudaViewMut<'_, f32>,
        v: &mut CudaViewMut<'_, f32>,
        h: &AdamParams,
    ) -> Result<()> {
        let kernel = "adam_f32";
        h.check()?;
        let n = kernels::same_len(kernel, &[("p", p.len()), ("g", g.len()), ("m", m.len()), ("v", v.len())])?;
        if n == 0 {
            return Ok(());
        }
        let f = self.function(kernel)?;
        let (bc1, bc2) = h.bias_corrections();
        let n64 = n as u64;
        let mut launch = self.stream().launch_builder(&f);
        launch.arg(p).arg(g).arg(m).arg(v).arg(&n64);
        launch.arg(&h.lr).arg(&h.beta1).arg(&h.beta2).arg(&h.eps).arg(&h.weight_decay).arg(&bc1).arg(&bc2);
        // SAFETY: adam_f32(float*, const float*, float*, float*, size_t, 7 × float) — arguments
        // match; the four views hold n elements; indices < n only.
        unsafe { launch.launch(config(kernels::elementwise_shape(n, 4))) }.during(kernel)?;
        Ok(())
    }

    /// `c = a · b`, f32 SIMT.
    pub fn matmul_f32(
        &self,
        a: &CudaView<'_, f32>,
        b: &CudaView<'_, f32>,
        c: &mut CudaViewMut<'_, f32>,
        dims: MatDims,
    ) -> Result<()> {
        let kernel = "matmul_f32";
        let (m, n, k) = dims.check(kernel, a.len(), b.len(), c.len())?;
        if c.is_empty() {
            return Ok(());
        }
        let f = self.function(kernel)?;
        let mut launch = self.stream().launch_builder(&f);
        launch.arg(a).arg(b).arg(c).arg(&m).arg(&n).arg(&k);
        // SAFETY: matmul_f32(const float* A, const float* B, float* C, int M, int N, int K) — the
        // arguments match; A, B, C hold M·K, K·N, M·N elements (checked); the kernel
        // bounds-checks every access.
        unsafe { launch.launch(config(kernels::matmul_shape(dims.m, dims.n))) }.during(kernel)?;
        Ok(())
    }

    /// `c = a · b`, bf16 operands (as u16 bits) on the tensor cores.
    pub fn matmul_bf16(
        &self,
        a: &CudaView<'_, u16>,
        b: &CudaView<'_, u16>,
        c: &mut CudaViewMut<'_, f32>,
        dims: MatDims,
    ) -> Result<()> {
        let kernel = "matmul_bf16";
        let (m, n, k) = dims.check(kernel, a.len(), b.len(), c.len())?;
        if c.is_empty() {
            return Ok(());
        }
        let f = self.function(kernel)?;
        let mut launch = self.stream().launch_builder(&f);
        launch.arg(a).arg(b).arg(c).arg(&m).arg(&n).arg(&k);
        // SAFETY: matmul_bf16(const uint16_t* A, const uint16_t* B, float* C, int M, int N, int K)
        // — the arguments match; A, B, C hold M·K, K·N, M·N elements (checked); the kernel
        // bounds-checks every access.
        unsafe { launch.launch(config(kernels::matmul_shape(dims.m, dims.n))) }.during(kernel)?;
        Ok(())
    }

    /// `c = α·op(a)·op(b) + β·c`, f32 SIMT; β = 0 does not read `c`.
    pub fn gemm_f32(
        &self,
        a: &CudaView<'_, f32>,
        b: &CudaView<'_, f32>,
        c: &mut CudaViewMut<'_, f32>,
        g: &Gemm,
    ) -> Result<()> {
        let kernel = "gemm_f32";
        let [m, n, k, ta, tb] = g.check(a.len(), b.len(), c.len())?;
        if c.is_empty() {
            return Ok(());
        }
        let f = self.function(kernel)?;
        let mut launch = self.stream().launch_builder(&f);
        launch.arg(a).arg(b).arg(c).arg(&m).arg(&n).arg(&k).arg(&ta).arg(&tb).arg(&g.alpha).arg(&g.beta);
        // SAFETY: gemm_f32(const float* A, const float* B, float* C, int M, int N, int K,
        // int trans_a, int trans_b, float alpha, float beta) — the arguments match; A, B, C hold
        // M·K, K·N, M·N elements (checked), whatever the transposes; every access is bounds-checked.
        unsafe { launch.launch(config(kernels::gemm_shape(g.m, g.n))) }.during(kernel)?;
        Ok(())
    }

    /// `y[r·cols + c] += b[c]` for a `rows × cols` y.
    pub fn bias_add_f32(
        &self,
        y: &mut CudaViewMut<'_, f32>,
        b: &CudaView<'_, f32>,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let kernel = "bias_add_f32";
        let elems = kernels::check_bias(kernel, y.len(), b.len(), rows, cols)?;
        if elems == 0 {
            return Ok(());
        }
        let f = self.function(kernel)?;
        let (r64, c64) = (rows as u64, cols as u64);
        let mut launch = self.stream().launch_builder(&f);
        launch.arg(y).arg(b).arg(&r64).arg(&c64);
        // SAFETY: bias_add_f32(float* Y, const float* b, size_t rows, size_t cols) — arguments
        // match; Y holds rows·cols and b cols elements (checked); indices below those only.
        unsafe { launch.launch(config(kernels::elementwise_shape(elems, 1))) }.during(kernel)?;
        Ok(())
    }

    /// `db[c] = Σ_r dy[r·cols + c]` in the kernel's fixed order (no atomics).
    pub fn bias_grad_f32(
        &self,
        dy: &CudaView<'_, f32>,
        db: &mut CudaViewMut<'_, f32>,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let kernel = "bias_grad_f32";
        kernels::check_bias(kernel, dy.len(), db.len(), rows, cols)?;
        if cols == 0 {
            return Ok(());
        }
        let f = self.function(kernel)?;
        let (r64, c64) = (rows as u64, cols as u64);
        let mut launch = self.stream().launch_builder(&f);
        launch.arg(dy).arg(db).arg(&r64).arg(&c64);
        // SAFETY: bias_grad_f32(const float* dY, float* db, size_t rows, size_t cols) — arguments
        // match; dY holds rows·cols and db cols elements (checked); indices below those only.
        unsafe { launch.launch(config(kernels::bias_grad_shape(cols))) }.during(kernel)?;
        Ok(())
    }

    /// `dp = 2·scale·(p − t)` and one partial sum of `scale·(p − t)²` per
    /// block into `partial` ([`kernels::mse_partials`]`(n)` elements; the
    /// loss is their sum in index order).
    pub fn mse_f32(
        &self,
        p: &CudaView<'_, f32>,
        t: &CudaView<'_, f32>,
        dp: &mut CudaViewMut<'_, f32>,
        partial: &mut CudaViewMut<'_, f32>,
        scale: f32,
    ) -> Result<()> {
        let kernel = "mse_f32";
        let n = kernels::check_mse(p.len(), t.len(), dp.len(), partial.len())?;
        let f = self.function(kernel)?;
        let n64 = n as u64;
        let mut launch = self.stream().launch_builder(&f);
        launch.arg(p).arg(t).arg(dp).arg(partial).arg(&n64).arg(&scale);
        // SAFETY: mse_f32(const float* P, const float* T, float* dP, float* partial, size_t n,
        // float scale) — arguments match; P, T, dP hold n elements and partial one per block of
        // this shape (checked); indices < n and partial[blockIdx.x] only.
        unsafe { launch.launch(config(kernels::mse_shape(n))) }.during(kernel)?;
        Ok(())
    }

    /// `dst = a ⊕ b` on bytes holding whole, aligned elements of `dtype`.
    pub fn reduce(
        &self,
        op: ReduceOp,
        dtype: DType,
        dst: &mut CudaViewMut<'_, u8>,
        a: &CudaView<'_, u8>,
        b: &CudaView<'_, u8>,
    ) -> Result<()> {
        let kernel = kernels::reduce_kernel(op, dtype)?;
        let n = self.check_reduce(kernel, dtype, &[("dst", &dst.as_view()), ("a", a), ("b", b)])?;
        if n == 0 {
            return Ok(());
        }
        let f = self.function(kernel)?;
        let n64 = n as u64;
        let mut launch = self.stream().launch_builder(&f);
        launch.arg(dst).arg(a).arg(b).arg(&n64);
        // SAFETY: reduce_{op}_{dtype}(T* dst, const T* a, const T* b, size_t n) — the views hold
        // n aligned elements (checked); indices < n only.
        unsafe { launch.launch(config(kernels::elementwise_shape(n, 16 / dtype.size()))) }.during(kernel)?;
        Ok(())
    }

    /// `acc = acc ⊕ b` (the reducer with dst = a).
    pub fn reduce_in_place(
        &self,
        op: ReduceOp,
        dtype: DType,
        acc: &mut CudaViewMut<'_, u8>,
        b: &CudaView<'_, u8>,
    ) -> Result<()> {
        let kernel = kernels::reduce_kernel(op, dtype)?;
        let n = self.check_reduce(kernel, dtype, &[("acc", &acc.as_view()), ("b", b)])?;
        if n == 0 {
            return Ok(());
        }
        let f = self.function(kernel)?;
        let a_addr = self.device_addr(&acc.as_view());
        let n64 = n as u64;
        let mut launch = self.stream().launch_builder(&f);
        launch.arg(acc).arg(&a_addr).arg(b).arg(&n64);
        // SAFETY: as `reduce`, with a = dst passed as the same device address (a 64-bit
        // pointer argument); the kernel reads a[i] before writing dst[i] at the same index.
        unsafe { launch.launch(config(kernels::elementwise_shape(n, 16 / dtype.size()))) }.during(kernel)?;
        Ok(())
    }

    /// The direct step's reducer over device views: `dsts[j] = srcs[0] ⊕
    /// ...` (up to [`kernels::MULTI_MAX`] each), divided by `avg` when it
    /// is not 0; whole, aligned `dtype` elements, equal lengths.
    pub fn reduce_multi(
        &self,
        op: ReduceOp,
        dtype: DType,
        srcs: &[CudaView<'_, u8>],
        dsts: &mut [CudaViewMut<'_, u8>],
        avg: u32,
    ) -> Result<()> {
        let kernel = kernels::reduce_multi_kernel(op, dtype)?;
        if srcs.is_empty() || srcs.len() > kernels::MULTI_MAX || dsts.len() > kernels::MULTI_MAX {
            return Err(Error::invalid(kernel, format!("{} sources and {} destinations", srcs.len(), dsts.len())));
        }
        let mut views: Vec<(&str, CudaView<'_, u8>)> = srcs.iter().map(|s| ("src", s.slice(..))).collect();
        views.extend(dsts.iter().map(|d| ("dst", d.as_view())));
        let refs: Vec<(&str, &CudaView<'_, u8>)> = views.iter().map(|(n, v)| (*n, v)).collect();
        let n = self.check_reduce(kernel, dtype, &refs)?;
        if n == 0 || dsts.is_empty() {
            return Ok(());
        }
        let mut p = kernels::MultiPtrs::default();
        for (i, s) in srcs.iter().enumerate() {
            p.src[i] = self.device_addr(s);
        }
        for (i, d) in dsts.iter().enumerate() {
            p.dst[i] = self.device_addr(&d.as_view());
        }
        let f = self.function(kernel)?;
        let (ns, nd, n64) = (srcs.len() as i32, dsts.len() as i32, n as u64);
        let mut launch = self.stream().launch_builder(&f);
        launch.arg(&p).arg(&ns).arg(&nd).arg(&n64).arg(&avg);
        // SAFETY: reduce_multi_{op}_{dtype}(OxkMultiPtrs p, int nsrc, int ndst, size_t n,
        // uint32_t avg) — p holds nsrc and ndst device addresses of n aligned elements each
        // (checked), the views are borrowed for the launch; indices < n only.
        unsafe { launch.launch(config(kernels::elementwise_shape(n, 16 / dtype.size()))) }.during(kernel)?;
        Ok(())
    }

    /// One signal kernel on `words` = [word, epoch, fault] (three
    /// consecutive u64, 8-byte aligned), one thread.
    pub fn signal(&self, sig: crate::runner::Signal, words: &mut CudaViewMut<'_, u64>) -> Result<()> {
        use crate::runner::Signal;
        let kernel = match sig {
            Signal::Write { .. } => kernels::SIG_WRITE,
            Signal::Wait { .. } => kernels::SIG_WAIT,
            Signal::Advance => kernels::SIG_ADVANCE,
        };
        if words.len() != 3 {
            return Err(Error::invalid(kernel, format!("{} words (need word, epoch, fault)", words.len())));
        }
        let f = self.function(kernel)?;
        let (base, _sync) = words.device_ptr(self.stream());
        let (word, epoch, fault) = (base, base + 8, base + 16);
        let mut launch = self.stream().launch_builder(&f);
        match &sig {
            Signal::Write { offset } => launch.arg(&word).arg(&epoch).arg(offset),
            Signal::Wait { offset, timeout_ns, code } => {
                launch.arg(&word).arg(&epoch).arg(offset).arg(timeout_ns).arg(&fault).arg(code)
            }
            Signal::Advance => launch.arg(&epoch),
        };
        let one = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: the kernels' parameters (ptx/kernels/signal.cu): device addresses of the three
        // words of `words` (length checked), held for the launch, and plain integers.
        unsafe { launch.launch(one) }.during(kernel)?;
        Ok(())
    }

    /// `acc = acc / world` (avg's final step) on whole, aligned `dtype` elements.
    pub fn avg_div(&self, dtype: DType, acc: &mut CudaViewMut<'_, u8>, world: u32) -> Result<()> {
        let kernel = kernels::avg_kernel(dtype)?;
        let n = self.check_reduce(kernel, dtype, &[("acc", &acc.as_view())])?;
        if n == 0 {
            return Ok(());
        }
        let f = self.function(kernel)?;
        let n64 = n as u64;
        let mut launch = self.stream().launch_builder(&f);
        launch.arg(acc).arg(&n64).arg(&world);
        // SAFETY: avg_div_{dtype}(T* d, size_t n, uint32_t world) — the view holds n aligned
        // elements (checked); indices < n only.
        unsafe { launch.launch(config(kernels::elementwise_shape(n, 1))) }.during(kernel)?;
        Ok(())
    }

    fn check_reduce(&self, kernel: &'static str, dtype: DType, bufs: &[(&str, &CudaView<'_, u8>)]) -> Result<usize> {
        let size = dtype.size();
        let len = bufs[0].1.len();
        for (name, v) in bufs {
            if v.len() != len || len % size != 0 {
                return Err(Error::invalid(
                    kernel,
                    format!("{name} has {} bytes; need {len}, whole {dtype} elements", v.len()),
                ));
            }
            if self.device_addr(v) % size as u64 != 0 {
                return Err(Error::invalid(kernel, format!("{name} is not aligned for {dtype}")));
            }
        }
        Ok(len / size)
    }
}
