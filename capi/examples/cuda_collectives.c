/* cuda_collectives.c — oxccl's C API on CUDA device memory, as a NCCL
 * program uses it: cudaMalloc'd buffers, calls ordered on a stream.
 *
 *   cargo build --release -p oxccl-capi -p oxccl-tools        (on a Rust machine)
 *   nvcc -O1 capi/examples/cuda_collectives.c -Iinclude -Ltarget/release \
 *        -Wl,-rpath,$PWD/target/release -loxccl -o cuda_collectives
 *   target/release/oxccl run -n 2 -- ./cuda_collectives
 *
 * Every rank uses GPU (local rank mod device count): on a one-GPU machine
 * the ranks share it. Checks all-reduce (out of place and in place, float
 * and int), reduce-scatter, all-gather, broadcast, reduce, all-to-all and a
 * group of sends and receives with every peer, each result copied back and
 * compared with a sequential reduction; then times a float all-reduce of
 * 64 MiB on the stream. Prints "ok" and exits 0 when every check passed. */
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "oxccl.h"

static int rank_, world_, failures;

#define CHECK(call)                                                                                \
  do {                                                                                             \
    oxcclResult_t r_ = (call);                                                                     \
    if (r_ != oxcclSuccess) {                                                                      \
      fprintf(stderr, "rank %d: %s: %s: %s\n", rank_, #call, oxcclGetErrorString(r_),              \
              oxcclGetLastError(NULL));                                                            \
      exit(1);                                                                                     \
    }                                                                                              \
  } while (0)

#define CUDA(call)                                                                                 \
  do {                                                                                             \
    cudaError_t e_ = (call);                                                                       \
    if (e_ != cudaSuccess) {                                                                       \
      fprintf(stderr, "rank %d: %s: %s\n", rank_, #call, cudaGetErrorString(e_));                  \
      exit(1);                                                                                     \
    }                                                                                              \
  } while (0)

/* Rank r's element i: small integers, so sums are exact in float. */
static float value(int r, size_t i) { return (float)((r * 7 + (int)i * 3) % 11 - 5); }

static float* device_floats(size_t n, int r) {
  float* host = malloc((n ? n : 1) * sizeof(float));
  for (size_t i = 0; i < n; i++) host[i] = r < 0 ? -999.0f : value(r, i);
  float* dev;
  CUDA(cudaMalloc((void**)&dev, (n ? n : 1) * sizeof(float)));
  CUDA(cudaMemcpy(dev, host, n * sizeof(float), cudaMemcpyHostToDevice));
  free(host);
  return dev;
}

static void expect(const char* what, const float* dev, size_t n, cudaStream_t s, float (*want)(size_t)) {
  float* host = malloc((n ? n : 1) * sizeof(float));
  CUDA(cudaStreamSynchronize(s));
  CUDA(cudaMemcpy(host, dev, n * sizeof(float), cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < n; i++)
    if (host[i] != want(i) && failures++ < 10)
      fprintf(stderr, "rank %d: %s: element %zu is %g, want %g\n", rank_, what, i, host[i], want(i));
  free(host);
}

static size_t count_;
static float sum_of(size_t i) {
  float s = 0;
  for (int r = 0; r < world_; r++) s += value(r, i);
  return s;
}
static float my_block_sum(size_t i) { return sum_of((size_t)rank_ * count_ + i); }
static float gathered(size_t j) { return value((int)(j / count_), j % count_); }
static float from_last(size_t i) { return value(world_ - 1, i); }
static float to_me(size_t j) { return value((int)(j / count_), (size_t)rank_ * count_ + j % count_); }

int main(void) {
  oxcclComm_t comm;
  CHECK(oxcclCommInitFromEnv(&comm));
  CHECK(oxcclCommUserRank(comm, &rank_));
  CHECK(oxcclCommCount(comm, &world_));
  int ndev = 0;
  CUDA(cudaGetDeviceCount(&ndev));
  const char* local = getenv("OXCCL_LOCAL_RANK");
  CUDA(cudaSetDevice((local ? atoi(local) : rank_) % ndev));
  cudaStream_t s;
  CUDA(cudaStreamCreate(&s));
  const size_t counts[] = {1, 1031, (1 << 20) + 7};
  for (int c = 0; c < 3; c++) {
    const size_t n = counts[c], w = (size_t)world_;
    count_ = n;
    float* send = device_floats(w * n, rank_);
    float* recv = device_floats(w * n, -1);
    CHECK(oxcclAllReduce(send, recv, n, oxcclFloat32, oxcclSum, comm, s));
    expect("all_reduce", recv, n, s, sum_of);
    CHECK(oxcclAllReduce(send, send, n, oxcclFloat32, oxcclSum, comm, s));
    expect("all_reduce in place", send, n, s, sum_of);
    CUDA(cudaFree(send));
    send = device_floats(w * n, rank_);
    CHECK(oxcclReduceScatter(send, recv, n, oxcclFloat32, oxcclSum, comm, s));
    expect("reduce_scatter", recv, n, s, my_block_sum);
    CHECK(oxcclAllGather(send, recv, n, oxcclFloat32, comm, s));
    expect("all_gather", recv, w * n, s, gathered);
    CHECK(oxcclBroadcast(send, recv, n, oxcclFloat32, world_ - 1, comm, s));
    expect("broadcast", recv, n, s, from_last);
    CHECK(oxcclReduce(send, recv, n, oxcclFloat32, oxcclSum, 0, comm, s));
    if (rank_ == 0) expect("reduce", recv, n, s, sum_of);
    CHECK(oxcclAlltoAll(send, recv, n, oxcclFloat32, comm, s));
    expect("all_to_all", recv, w * n, s, to_me);
    /* Every peer's block of `send` to that peer, one group. */
    CUDA(cudaMemset(recv, 0, w * n * sizeof(float)));
    CHECK(oxcclGroupStart());
    for (int p = 0; p < world_; p++) {
      if (p == rank_) continue;
      CHECK(oxcclSend(send + (size_t)p * n, n, oxcclFloat32, p, comm, s));
      CHECK(oxcclRecv(recv + (size_t)p * n, n, oxcclFloat32, p, comm, s));
    }
    CHECK(oxcclGroupEnd());
    CUDA(cudaMemcpyAsync(recv + (size_t)rank_ * n, send + (size_t)rank_ * n, n * sizeof(float),
                         cudaMemcpyDeviceToDevice, s));
    expect("send/recv", recv, w * n, s, to_me);
    CUDA(cudaFree(send));
    CUDA(cudaFree(recv));
  }
  int dev = -1;
  CHECK(oxcclCommCuDevice(comm, &dev));
  /* 64 MiB of floats, in place, 20 times back to back on the stream. */
  const size_t big = 16u << 20;
  float* buf = device_floats(big, rank_);
  CHECK(oxcclAllReduce(buf, buf, big, oxcclFloat32, oxcclSum, comm, s));
  CUDA(cudaStreamSynchronize(s));
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  const int iters = 20;
  for (int k = 0; k < iters; k++) CHECK(oxcclAllReduce(buf, buf, big, oxcclFloat32, oxcclSum, comm, s));
  CUDA(cudaStreamSynchronize(s));
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double us = ((t1.tv_sec - t0.tv_sec) * 1e6 + (t1.tv_nsec - t0.tv_nsec) / 1e3) / iters;
  oxcclResult_t async;
  CHECK(oxcclCommGetAsyncError(comm, &async));
  if (async != oxcclSuccess) failures++;
  CUDA(cudaFree(buf));
  CHECK(oxcclCommDestroy(comm));
  if (failures) {
    fprintf(stderr, "rank %d: %d wrong\n", rank_, failures);
    return 1;
  }
  printf("rank %d of %d on cuda:%d: ok; all_reduce 64 MiB in place: %.1f us (%.2f GB/s algbw)\n", rank_, world_, dev,
         us, big * 4.0 / us / 1e3);
  return 0;
}
