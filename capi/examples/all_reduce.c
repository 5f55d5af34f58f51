/* all_reduce.c — the smallest oxccl program in C.
 *
 *   cargo build --release -p oxccl-capi -p oxccl-tools
 *   cc capi/examples/all_reduce.c -Iinclude -Ltarget/release -Wl,-rpath,$PWD/target/release -loxccl -o all_reduce
 *   target/release/oxccl run -n 4 -- ./all_reduce
 *
 * Each rank makes its communicator from the launcher's environment (oxccl
 * run; mpirun, srun and torchrun work too), sums a buffer over the ranks,
 * and checks it. */
#include <stdio.h>
#include <stdlib.h>

#include "oxccl.h"

#define CHECK(call)                                                                                  \
  do {                                                                                               \
    oxcclResult_t r = (call);                                                                        \
    if (r != oxcclSuccess) {                                                                         \
      fprintf(stderr, "%s: %s: %s\n", #call, oxcclGetErrorString(r), oxcclGetLastError(NULL));       \
      return 1;                                                                                      \
    }                                                                                                \
  } while (0)

int main(void) {
  oxcclComm_t comm;
  CHECK(oxcclCommInitFromEnv(&comm));
  int rank, nranks;
  CHECK(oxcclCommUserRank(comm, &rank));
  CHECK(oxcclCommCount(comm, &nranks));
  const size_t count = 1 << 20;
  float* buf = malloc(count * sizeof(float));
  for (size_t i = 0; i < count; i++) buf[i] = (float)(rank + 1);
  CHECK(oxcclAllReduce(buf, buf, count, oxcclFloat32, oxcclSum, comm, NULL)); /* in place */
  const float want = (float)nranks * (nranks + 1) / 2;
  for (size_t i = 0; i < count; i++)
    if (buf[i] != want) {
      fprintf(stderr, "rank %d: element %zu is %g, want %g\n", rank, i, buf[i], want);
      return 1;
    }
  printf("rank %d of %d: %zu sums of %g\n", rank, nranks, count, want);
  free(buf);
  CHECK(oxcclCommDestroy(comm));
  return 0;
}
