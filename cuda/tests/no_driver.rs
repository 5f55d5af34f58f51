//! Without libcuda every entry point fails with a clear error, never a
//! panic; the launchers check their arguments before touching CUDA.

use std::process::Command;

use oxccl_cuda::device::{self, Libraries};
use oxccl_cuda::{Device, Emu, Error, ErrorKind, MatDims, Runner};

#[test]
fn missing_driver_is_a_clear_error() {
    let none = Libraries { driver: false, nvrtc: false, nccl: false };
    let e = none.require_driver().unwrap_err();
    assert!(matches!(e, Error::NoDriver { .. }));
    assert_eq!(e.to_string(), "no CUDA driver found (libcuda.so)");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(none.require_nvrtc().unwrap_err().to_string(), "no NVRTC library found (libnvrtc.so)");
    assert_eq!(none.require_nccl().unwrap_err().to_string(), "no NCCL library found (libnccl.so)");
    let all = Libraries { driver: true, nvrtc: true, nccl: true };
    assert!(all.require_driver().is_ok() && all.require_nvrtc().is_ok() && all.require_nccl().is_ok());
}

/// On this machine: if the driver cannot be loaded, opening a device must
/// return NoDriver (cudarc would panic if we called it). Where a driver is
/// present the probe says so and the device either opens or errors cleanly.
#[test]
fn opening_a_device_never_panics() {
    let probed = Libraries::probe();
    let opened = std::panic::catch_unwind(|| Device::new(0).map(|_| ()));
    let result = opened.expect("Device::new panicked");
    if !probed.driver {
        let e = result.unwrap_err();
        assert_eq!(e.to_string(), "no CUDA driver found (libcuda.so)");
        assert!(matches!(device::device_count(), Err(Error::NoDriver { .. })));
    } else if let Err(e) = result {
        assert_ne!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    }
}

/// NCCL ranks without the driver (or without libnccl): a clear error,
/// never a panic.
#[test]
fn nccl_ranks_never_panic() {
    let made = std::panic::catch_unwind(|| oxccl_cuda::nccl::NcclRank::group(1).map(|_| ()));
    let result = made.expect("NcclRank::group panicked");
    let probed = Libraries::probe();
    if !probed.driver {
        assert_eq!(result.unwrap_err().to_string(), "no CUDA driver found (libcuda.so)");
    } else if !probed.nccl {
        assert_eq!(result.unwrap_err().to_string(), "no NCCL library found (libnccl.so)");
    }
}

/// The stream-ordered calls' GPU device opens as `Device` does: without
/// the driver a clear error, never a panic.
#[test]
fn the_stream_ordered_gpu_device_never_panics() {
    let opened = std::panic::catch_unwind(|| oxccl_cuda::streamed::gpu::GpuDevice::new(0).map(|_| ()));
    let result = opened.expect("GpuDevice::new panicked");
    if !Libraries::probe().driver {
        assert_eq!(result.unwrap_err().to_string(), "no CUDA driver found (libcuda.so)");
    }
}

#[test]
fn gpu_check_binary_exits_cleanly_without_a_gpu() {
    if Libraries::probe().driver {
        eprintln!("a CUDA driver is present; the no-GPU exit path is not exercised here");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_oxccl-gpu-check")).arg("--no-bench").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("no CUDA driver found (libcuda.so)"), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

#[test]
fn launchers_check_lengths_before_running() {
    let mut emu = Emu::default();
    let e = emu.matmul_f32(&[0.0; 6], &[0.0; 5], &mut [0.0; 4], MatDims::new(2, 2, 3)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("B has 5 elements"), "{e}");
    let e = emu.activation_fwd(oxccl_cuda::Activation::Relu, &[1.0; 3], &mut [0.0; 4]).unwrap_err();
    assert!(e.to_string().starts_with("relu_fwd_f32: y has 4 elements"), "{e}");
    let e = emu.reduce(oxccl::ReduceOp::Avg, oxccl::DType::F32, &mut [0; 4], &[0; 4], &[0; 4]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let words = [0u32; 4];
    let bytes: &[u8] = bytemuck::cast_slice(&words);
    let mut out = [0u32; 4];
    let e = emu
        .reduce(
            oxccl::ReduceOp::Sum,
            oxccl::DType::F32,
            &mut bytemuck::cast_slice_mut(&mut out)[1..13],
            &bytes[1..13],
            &bytes[1..13],
        )
        .unwrap_err();
    assert!(e.to_string().contains("not aligned"), "{e}");
    let h = oxccl_cuda::AdamParams { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, step: 0 };
    assert!(emu.adam(&mut [0.0], &[0.0], &mut [0.0], &mut [0.0], &h).is_err());
}
