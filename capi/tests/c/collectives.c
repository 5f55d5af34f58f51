/* collectives.c — oxccl's C API from C, built against include/oxccl.h
 * only and linked with liboxccl.so (capi/tests/c_program.rs builds and
 * runs it).
 *
 *   collectives RANK WORLD IDFILE   one rank of WORLD processes: rank 0 makes
 *                                   the unique id and writes it to IDFILE,
 *                                   the others read it; then every collective
 *                                   in and out of place, several types and
 *                                   operators and awkward counts, each element
 *                                   checked against a sequential reduction; a
 *                                   group sending to and receiving from every
 *                                   peer; bad input refused with its code.
 *   collectives all WORLD           WORLD ranks in this process
 *                                   (oxcclCommInitAll), driven by one thread
 *                                   through groups.
 *
 * With OXCCL_DEVICE=emu every buffer comes from oxcclMemAlloc, which then
 * hands out the emulated device's memory: the same checks run through
 * oxccl's GPU collectives (and a call mixing host and device memory must be
 * refused).
 *
 * Prints "ok" and exits 0 when every check passed; else says what failed
 * and exits 1. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "oxccl.h"

static int rank_, world_;
static int failures;
static int on_device; /* OXCCL_DEVICE=emu: buffers are device memory */

#define CHECK(call)                                                                                \
  do {                                                                                             \
    oxcclResult_t r_ = (call);                                                                     \
    if (r_ != oxcclSuccess) {                                                                      \
      fprintf(stderr, "rank %d: %s failed: %s: %s\n", rank_, #call, oxcclGetErrorString(r_),       \
              oxcclGetLastError(NULL));                                                            \
      exit(1);                                                                                     \
    }                                                                                              \
  } while (0)

/* `n` zeroed bytes: device memory on the emulated device, else the host's. */
static void* buf_alloc(size_t n) {
  if (!on_device) return calloc(n ? n : 1, 1);
  void* p = NULL;
  CHECK(oxcclMemAlloc(&p, n));
  return p;
}

static void buf_free(void* p) {
  if (on_device)
    CHECK(oxcclMemFree(p));
  else
    free(p);
}

/* Rank r's input element i: small integers, so every sum is exact. */
static double value(int r, size_t i) { return (double)((r * 7 + (int)i * 3) % 11) - 5.0; }
static double uvalue(int r, size_t i) { return (double)((r * 5 + (int)i) % 7); }

enum { F32, F64, I32, I64, U8, NTYPES };
static const oxcclDataType_t types[NTYPES] = {oxcclFloat32, oxcclFloat64, oxcclInt32, oxcclInt64, oxcclUint8};
static const char* type_names[NTYPES] = {"float32", "float64", "int32", "int64", "uint8"};
static const size_t sizes[NTYPES] = {4, 8, 4, 8, 1};

static double input(int t, int r, size_t i) { return t == U8 ? uvalue(r, i) : value(r, i); }

static void put(int t, void* buf, size_t i, double v) {
  switch (t) {
    case F32: ((float*)buf)[i] = (float)v; break;
    case F64: ((double*)buf)[i] = v; break;
    case I32: ((int32_t*)buf)[i] = (int32_t)v; break;
    case I64: ((int64_t*)buf)[i] = (int64_t)v; break;
    default: ((uint8_t*)buf)[i] = (uint8_t)v; break;
  }
}

static double get(int t, const void* buf, size_t i) {
  switch (t) {
    case F32: return ((const float*)buf)[i];
    case F64: return ((const double*)buf)[i];
    case I32: return ((const int32_t*)buf)[i];
    case I64: return (double)((const int64_t*)buf)[i];
    default: return ((const uint8_t*)buf)[i];
  }
}

/* The ranks' element i combined under op, as the library must (integers:
 * avg truncates toward zero; uint8 wraps). */
static double combine(int t, oxcclRedOp_t op, size_t i) {
  double acc = input(t, 0, i);
  for (int r = 1; r < world_; r++) {
    double v = input(t, r, i);
    switch (op) {
      case oxcclSum: case oxcclAvg: acc += v; break;
      case oxcclProd: acc *= v; break;
      case oxcclMax: acc = v > acc ? v : acc; break;
      default: acc = v < acc ? v : acc; break;
    }
  }
  if (op == oxcclAvg) acc = (t == F32 || t == F64) ? acc / world_ : trunc(acc / world_);
  if (t == U8) acc = fmod(acc, 256.0);
  if (t == F32) acc = (float)acc;
  return acc;
}

static void expect(const char* what, int t, const void* got, size_t i, double want) {
  double g = get(t, got, i);
  if (g != want && failures++ < 10)
    fprintf(stderr, "rank %d: %s %s: element %zu is %g, want %g\n", rank_, what, type_names[t], i, g, want);
}

/* One collective, checked: `inplace` uses NCCL's in-place layout. */
static void check_collective(oxcclComm_t comm, const char* name, int t, oxcclRedOp_t op, size_t count, int inplace) {
  const size_t es = sizes[t], n = (size_t)world_;
  const int root = world_ - 1;
  int gather = !strcmp(name, "all_gather"), scatter = !strcmp(name, "reduce_scatter"), a2a = !strcmp(name, "all_to_all");
  size_t in_len = (scatter || a2a) ? n * count : count;
  size_t out_len = (gather || a2a) ? n * count : count;
  size_t whole = in_len > out_len ? in_len : out_len;
  char* send = buf_alloc((whole + 1) * es);
  char* recv = buf_alloc((whole + 1) * es);
  char* in = send;
  char* out = recv;
  if (inplace) {
    /* One array: all-gather's input is its own block; reduce-scatter's output is. */
    in = gather ? recv + (size_t)rank_ * count * es : recv;
    out = recv;
  }
  for (size_t i = 0; i < in_len; i++) put(t, in, i, input(t, rank_, i));
  char label[128];
  snprintf(label, sizeof label, "%s op %d count %zu %s", name, op, count, inplace ? "in place" : "out of place");
  if (!strcmp(name, "all_reduce")) {
    CHECK(oxcclAllReduce(in, out, count, types[t], op, comm, NULL));
    for (size_t i = 0; i < count; i++) expect(label, t, out, i, combine(t, op, i));
  } else if (!strcmp(name, "reduce")) {
    CHECK(oxcclReduce(in, out, count, types[t], op, root, comm, NULL));
    if (rank_ == root)
      for (size_t i = 0; i < count; i++) expect(label, t, out, i, combine(t, op, i));
  } else if (!strcmp(name, "broadcast")) {
    CHECK(oxcclBroadcast(in, out, count, types[t], root, comm, NULL));
    for (size_t i = 0; i < count; i++) expect(label, t, out, i, input(t, root, i));
  } else if (gather) {
    CHECK(oxcclAllGather(in, out, count, types[t], comm, NULL));
    for (size_t j = 0; j < n * count; j++) expect(label, t, out, j, input(t, (int)(j / count), j % count));
  } else if (scatter) {
    char* o = inplace ? recv + (size_t)rank_ * count * es : out;
    CHECK(oxcclReduceScatter(in, o, count, types[t], op, comm, NULL));
    /* Block `rank_` of every rank's input combined: elements rank_*count + i. */
    for (size_t i = 0; i < count; i++) expect(label, t, o, i, combine(t, op, (size_t)rank_ * count + i));
  } else {
    CHECK(oxcclAlltoAll(in, out, count, types[t], comm, NULL));
    for (size_t j = 0; j < n * count; j++)
      expect(label, t, out, j, input(t, (int)(j / count), (size_t)rank_ * count + j % count));
  }
  buf_free(send);
  buf_free(recv);
}

/* Every rank sends a large buffer to every peer and receives one from each,
 * all in one group: sends first everywhere, which one call at a time would
 * deadlock. */
static void check_group_exchange(oxcclComm_t comm) {
  const size_t count = (1 << 18) + 3; /* ~1 MiB of floats per peer */
  float** out = calloc((size_t)world_, sizeof(float*));
  float** in = calloc((size_t)world_, sizeof(float*));
  CHECK(oxcclGroupStart());
  for (int p = 0; p < world_; p++) {
    if (p == rank_) continue;
    out[p] = buf_alloc(count * sizeof(float));
    in[p] = buf_alloc(count * sizeof(float));
    for (size_t i = 0; i < count; i++) out[p][i] = (float)((rank_ * 31 + p * 7 + (int)i) % 1000);
    CHECK(oxcclSend(out[p], count, oxcclFloat32, p, comm, NULL));
  }
  for (int p = 0; p < world_; p++)
    if (p != rank_) CHECK(oxcclRecv(in[p], count, oxcclFloat32, p, comm, NULL));
  CHECK(oxcclGroupEnd());
  for (int p = 0; p < world_; p++) {
    if (p == rank_) continue;
    for (size_t i = 0; i < count; i++) {
      float want = (float)((p * 31 + rank_ * 7 + (int)i) % 1000);
      if (in[p][i] != want && failures++ < 10)
        fprintf(stderr, "rank %d: group: from %d element %zu is %g, want %g\n", rank_, p, i, in[p][i], want);
    }
    buf_free(out[p]);
    buf_free(in[p]);
  }
  free(out);
  free(in);
}

/* Buffers of the communicator's shared memory (peers reach them: the direct algorithm, no
 * copies through the transport), out of place and in place. */
static void check_comm_memory(oxcclComm_t comm) {
  const size_t count = (1 << 20) + 5;
  float *send, *recv;
  CHECK(oxcclCommMemAlloc(comm, (void**)&send, count * sizeof(float)));
  CHECK(oxcclCommMemAlloc(comm, (void**)&recv, count * sizeof(float)));
  for (size_t i = 0; i < count; i++) send[i] = (float)value(rank_, i);
  CHECK(oxcclAllReduce(send, recv, count, oxcclFloat32, oxcclSum, comm, NULL));
  for (size_t i = 0; i < count; i++) expect("shared memory all_reduce", F32, recv, i, combine(F32, oxcclSum, i));
  CHECK(oxcclAllReduce(send, send, count, oxcclFloat32, oxcclMax, comm, NULL));
  for (size_t i = 0; i < count; i++) expect("shared memory all_reduce in place", F32, send, i, combine(F32, oxcclMax, i));
  CHECK(oxcclCommMemFree(comm, send));
  CHECK(oxcclCommMemFree(comm, recv));
  float x[2];
  if (oxcclCommMemFree(comm, x) != oxcclInvalidArgument) failures++;
}

/* Bad input is refused with its code, and the communicator stays usable. */
static void check_bad_input(oxcclComm_t comm) {
  float x[4] = {0};
  oxcclResult_t r = oxcclAllReduce(x, x, 4, 42, oxcclSum, comm, NULL);
  if (r != oxcclInvalidArgument || strlen(oxcclGetLastError(comm)) == 0) {
    fprintf(stderr, "rank %d: a bad data type gave %d (%s)\n", rank_, r, oxcclGetLastError(comm));
    failures++;
  }
  r = oxcclAllReduce(x, x, 4, oxcclFloat32, 17, comm, NULL);
  if (r != oxcclInvalidArgument) failures++;
  r = oxcclBroadcast(x, x, 4, oxcclFloat32, world_, comm, NULL);
  if (r != oxcclInvalidArgument) failures++;
  r = oxcclSend(x, 4, oxcclFloat32, rank_, comm, NULL);
  if (r != oxcclInvalidArgument) failures++;
  if (oxcclGroupEnd() != oxcclInvalidUsage) failures++;
  if (on_device) {
    /* Host and device memory in one call. */
    float* dev = buf_alloc(sizeof x);
    r = oxcclAllReduce(x, dev, 4, oxcclFloat32, oxcclSum, comm, NULL);
    if (r != oxcclInvalidArgument || !strstr(oxcclGetLastError(comm), "host memory")) {
      fprintf(stderr, "rank %d: mixed memory gave %d (%s)\n", rank_, r, oxcclGetLastError(comm));
      failures++;
    }
    buf_free(dev);
  }
  oxcclResult_t async;
  CHECK(oxcclCommGetAsyncError(comm, &async));
  if (async != oxcclSuccess) failures++;
  /* Still usable. */
  check_collective(comm, "all_reduce", F32, oxcclSum, 3, 0);
}

static void run_all_checks(oxcclComm_t comm) {
  static const char* names[] = {"all_reduce", "reduce", "broadcast", "all_gather", "reduce_scatter", "all_to_all"};
  static const size_t counts[] = {1, 7, 1031};
  static const oxcclRedOp_t ops[] = {oxcclSum, oxcclProd, oxcclMax, oxcclMin, oxcclAvg};
  for (int c = 0; c < 6; c++)
    for (int t = 0; t < NTYPES; t++)
      for (int k = 0; k < 3; k++)
        for (int inplace = 0; inplace < 2; inplace++) {
          int reduces = c == 0 || c == 1 || c == 4;
          int nops = reduces ? ((c == 0 && k == 1) ? 5 : 2) : 1;
          for (int o = 0; o < nops; o++) {
            /* Prod of many ranks' values overflows small types: all-reduce's prod on floats only. */
            if (ops[o] == oxcclProd && t != F32 && t != F64) continue;
            check_collective(comm, names[c], t, ops[o], counts[k], inplace);
          }
        }
  check_group_exchange(comm);
  if (!on_device) check_comm_memory(comm);
  check_bad_input(comm);
  if (on_device) {
    /* The calls above made the communicator one of the emulated device. */
    int dev = 0;
    oxcclResult_t r = oxcclCommCuDevice(comm, &dev);
    if (r != oxcclInvalidUsage || dev != -1 || !strstr(oxcclGetLastError(comm), "emulated device")) {
      fprintf(stderr, "rank %d: not a device communicator: %d, %d (%s)\n", rank_, r, dev, oxcclGetLastError(comm));
      failures++;
    }
  }
}

static int by_rank(int rank, int world, const char* idfile) {
  oxcclUniqueId id;
  if (rank == 0) {
    CHECK(oxcclGetUniqueId(&id));
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", idfile);
    FILE* f = fopen(tmp, "wb");
    if (!f || fwrite(&id, sizeof id, 1, f) != 1 || fclose(f) != 0 || rename(tmp, idfile) != 0) {
      perror("writing the id");
      return 1;
    }
  } else {
    FILE* f = NULL;
    for (int tries = 0; tries < 3000 && !(f = fopen(idfile, "rb")); tries++) usleep(10000);
    if (!f || fread(&id, sizeof id, 1, f) != 1) {
      fprintf(stderr, "rank %d: no id in %s\n", rank, idfile);
      return 1;
    }
    fclose(f);
  }
  oxcclComm_t comm;
  if (rank % 2 == 0) {
    CHECK(oxcclCommInitRank(&comm, world, id, rank));
  } else {
    /* Odd ranks through a configuration in NCCL's non-blocking mode, polled as NCCL programs do. */
    oxcclConfig_t config = OXCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    config.timeoutMs = 60000;
    oxcclResult_t r = oxcclCommInitRankConfig(&comm, world, id, rank, &config);
    if (r != oxcclSuccess && r != oxcclInProgress) CHECK(r);
    oxcclResult_t state;
    do CHECK(oxcclCommGetAsyncError(comm, &state));
    while (state == oxcclInProgress);
    if (state != oxcclSuccess) CHECK(state);
  }
  int n, r;
  CHECK(oxcclCommCount(comm, &n));
  CHECK(oxcclCommUserRank(comm, &r));
  if (n != world || r != rank) {
    fprintf(stderr, "rank %d: count %d, rank %d\n", rank, n, r);
    return 1;
  }
  run_all_checks(comm);
  CHECK(oxcclCommDestroy(comm));
  return 0;
}

/* WORLD ranks in this process, one thread driving all of them through
 * groups: an all-reduce on each, then a ring of sends and receives. */
static int all_in_one(int world) {
  oxcclComm_t* comms = calloc((size_t)world, sizeof(oxcclComm_t));
  CHECK(oxcclCommInitAll(comms, world, NULL));
  const size_t count = 100003;
  float** buf = calloc((size_t)world, sizeof(float*));
  for (int r = 0; r < world; r++) {
    buf[r] = buf_alloc(count * sizeof(float));
    for (size_t i = 0; i < count; i++) buf[r][i] = (float)value(r, i);
  }
  CHECK(oxcclGroupStart());
  for (int r = 0; r < world; r++) CHECK(oxcclAllReduce(buf[r], buf[r], count, oxcclFloat32, oxcclSum, comms[r], NULL));
  CHECK(oxcclGroupEnd());
  for (int r = 0; r < world; r++)
    for (size_t i = 0; i < count; i++) {
      double want = 0;
      for (int p = 0; p < world; p++) want += value(p, i);
      if (buf[r][i] != (float)want && failures++ < 10)
        fprintf(stderr, "all: rank %d element %zu is %g, want %g\n", r, i, buf[r][i], want);
    }
  /* A ring: each rank sends to the next and receives from the previous. */
  float** got = calloc((size_t)world, sizeof(float*));
  CHECK(oxcclGroupStart());
  for (int r = 0; r < world; r++) {
    got[r] = buf_alloc(count * sizeof(float));
    CHECK(oxcclSend(buf[r], count, oxcclFloat32, (r + 1) % world, comms[r], NULL));
    CHECK(oxcclRecv(got[r], count, oxcclFloat32, (r + world - 1) % world, comms[r], NULL));
  }
  CHECK(oxcclGroupEnd());
  for (int r = 0; r < world; r++)
    if (memcmp(got[r], buf[(r + world - 1) % world], count * sizeof(float)) != 0) failures++;
  for (int r = 0; r < world; r++) {
    buf_free(got[r]);
    buf_free(buf[r]);
    CHECK(oxcclCommDestroy(comms[r]));
  }
  free(got);
  free(buf);
  free(comms);
  return 0;
}

int main(int argc, char** argv) {
  const char* device = getenv("OXCCL_DEVICE");
  on_device = device && !strcmp(device, "emu");
  int version;
  CHECK(oxcclGetVersion(&version));
  if (version != OXCCL_VERSION_CODE) {
    fprintf(stderr, "library version %d, header %d\n", version, OXCCL_VERSION_CODE);
    return 1;
  }
  if (argc == 3 && !strcmp(argv[1], "all")) {
    world_ = atoi(argv[2]);
    if (all_in_one(world_)) return 1;
  } else if (argc == 4) {
    rank_ = atoi(argv[1]);
    world_ = atoi(argv[2]);
    if (by_rank(rank_, world_, argv[3])) return 1;
  } else {
    fprintf(stderr, "usage: %s RANK WORLD IDFILE | %s all WORLD\n", argv[0], argv[0]);
    return 2;
  }
  if (failures) {
    fprintf(stderr, "rank %d: %d checks failed\n", rank_, failures);
    return 1;
  }
  printf("ok\n");
  return 0;
}
