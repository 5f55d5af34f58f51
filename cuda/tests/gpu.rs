//! The verification suite on a real GPU. Always compiled; runs only on
//! request: `OXCCL_TEST_CUDA_DEVICE=0 cargo test -p oxccl-cuda --test gpu -- --ignored`
//! (tools/gpu-check runs the same suite from a release binary).

use oxccl_cuda::rng::Rng;
use oxccl_cuda::{verify, Device, GpuRunner};

#[test]
#[ignore = "needs a GPU: set OXCCL_TEST_CUDA_DEVICE and pass --ignored"]
fn every_kernel_matches_reference_on_the_gpu() {
    let ordinal: usize = std::env::var("OXCCL_TEST_CUDA_DEVICE")
        .expect("set OXCCL_TEST_CUDA_DEVICE to the device ordinal")
        .parse()
        .expect("OXCCL_TEST_CUDA_DEVICE is an ordinal");
    let mut runner = GpuRunner::new(Device::new(ordinal).unwrap());
    let seed = Rng::seed_from_env();
    let mut outcomes = verify::all(&mut runner, seed).unwrap();
    outcomes.extend(verify::large(&mut runner, seed).unwrap());
    let failed: Vec<String> = outcomes.iter().filter(|o| !o.passed()).map(|o| o.to_string()).collect();
    assert!(failed.is_empty(), "seed {seed}:\n{}", failed.join("\n"));
}
