//! The embedded PTX: every kernel the Rust side launches is an `.entry` of
//! its module for both architectures, each module targets its architecture,
//! and `.version` stays ≤ 9.0 (the CUDA 13.0 driver rejects newer PTX).

use oxccl_cuda::kernels::{self, Activation};
use oxccl_cuda::ptx::{self, Arch, MODULES};

#[test]
fn every_launched_kernel_is_an_entry_of_its_module() {
    for arch in [Arch::Sm80, Arch::Sm90] {
        for (kernel, module) in kernels::all_kernels() {
            let m = ptx::module(module).unwrap_or_else(|| panic!("{kernel}: no embedded module {module}"));
            assert!(
                ptx::entries(m.ptx(arch)).contains(&kernel),
                "{kernel} is not an .entry of {module} for {}",
                arch.name()
            );
        }
    }
}

#[test]
fn kernel_list_covers_every_launcher() {
    let names: Vec<&str> = kernels::all_kernels().into_iter().map(|(k, _)| k).collect();
    for act in Activation::ALL {
        assert!(names.contains(&act.fwd_kernel()) && names.contains(&act.bwd_kernel()));
    }
    for (op, dtype) in oxccl_cuda::verify::reduce_pairs() {
        assert!(names.contains(&kernels::reduce_kernel(op, dtype).unwrap()));
    }
    for dtype in oxccl_cuda::kernels::REDUCE_DTYPES {
        assert!(names.contains(&kernels::avg_kernel(dtype).unwrap()));
    }
    for (op, dtype) in oxccl_cuda::verify::reduce_pairs() {
        assert!(names.contains(&kernels::reduce_multi_kernel(op, dtype).unwrap()));
    }
    for k in [
        "adam_f32",
        "matmul_f32",
        "matmul_bf16",
        "gemm_f32",
        "bias_add_f32",
        "bias_grad_f32",
        "mse_f32",
        kernels::SIG_WRITE,
        kernels::SIG_WAIT,
        kernels::SIG_ADVANCE,
    ] {
        assert!(names.contains(&k), "{k}");
    }
    assert_eq!(names.len(), 4 + 1 + 2 + 4 + 40 + 10 + 40 + 3);
}

#[test]
fn every_entry_is_a_kernel_we_know() {
    let known: Vec<&str> = kernels::all_kernels().into_iter().map(|(k, _)| k).collect();
    for m in &MODULES {
        for arch in [Arch::Sm80, Arch::Sm90] {
            for e in ptx::entries(m.ptx(arch)) {
                assert!(known.contains(&e), "{} ({}) has an entry {e} that nothing launches", m.name, arch.name());
                assert_eq!(kernels::module_of(e), Some(m.name));
            }
        }
    }
}

#[test]
fn ptx_version_and_target_fit_the_driver() {
    for m in &MODULES {
        for (arch, target) in [(Arch::Sm80, "sm_80"), (Arch::Sm90, "sm_90")] {
            let text = m.ptx(arch);
            let v = ptx::version(text).unwrap_or_else(|| panic!("{} {target}: no .version", m.name));
            assert!(v <= (9, 0), "{} {target}: .version {}.{} > 9.0", m.name, v.0, v.1);
            assert_eq!(ptx::target(text), Some(target), "{}", m.name);
        }
    }
}

#[test]
fn entry_parser_reads_nvcc_output() {
    let text = ".version 9.0\n.target sm_80\n.visible .entry foo_f32(\n\t.param .u64 a\n)\n.entry bar(\n";
    assert_eq!(ptx::entries(text), ["foo_f32", "bar"]);
    assert_eq!(ptx::version(text), Some((9, 0)));
    assert_eq!(ptx::target(text), Some("sm_80"));
}

#[test]
fn architecture_choice_by_capability() {
    assert_eq!(Arch::for_capability(7, 5), None);
    assert_eq!(Arch::for_capability(8, 0), Some(Arch::Sm80));
    assert_eq!(Arch::for_capability(8, 9), Some(Arch::Sm80));
    assert_eq!(Arch::for_capability(9, 0), Some(Arch::Sm90));
    assert_eq!(Arch::for_capability(10, 0), Some(Arch::Sm90));
}
