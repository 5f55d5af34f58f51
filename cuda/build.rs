//! Compiles the kernel sources in ../ptx/kernels for the host through the
//! emulation header (../ptx/emu), so the Rust tests can run them on the CPU.
//! The GPU side needs no build step: the PTX in ../ptx/gen is committed and
//! embedded with `include_str!` (regenerate it with ptx/tools/build-ptx.sh).

use std::path::Path;

fn main() {
    let ptx = Path::new("../ptx");
    for dir in ["emu", "include", "kernels", "gen"] {
        println!("cargo:rerun-if-changed={}", ptx.join(dir).display());
    }
    cc::Build::new()
        .cpp(true)
        .std("c++20")
        .opt_level(2)
        .warnings(true)
        .extra_warnings(true)
        .flag("-fno-fast-math")
        .flag("-ffp-contract=off")
        .flag("-pthread")
        .file(ptx.join("emu/emu.cpp"))
        .file(ptx.join("emu/kernels_host.cpp"))
        .compile("oxk_emu");
    println!("cargo:rustc-link-lib=pthread");
}
