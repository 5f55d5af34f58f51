/*
 * MPI_Allreduce timing harness: float sum, out of place, one line per size.
 *
 *   mpirun -n N allreduce [-b MINBYTES] [-e MAXBYTES] [-f FACTOR] [-r REPS] [-i]
 *
 * Sizes go from MINBYTES to MAXBYTES, multiplied by FACTOR each step (sizes
 * take K, M, G suffixes, 1K = 1024; a size is rounded down to whole floats).
 * Per size: ITERS = clamp(64 MiB / size, 2, 1000) calls make one repetition;
 * one repetition of warm-up, then REPS (default 5) timed ones. A
 * repetition's time per call is the slowest rank's (MPI_MAX over ranks);
 * the line shows the median over repetitions, as in nccl-tests:
 *
 *   algbw = size / time, busbw = algbw * 2 (n - 1) / n, in GB/s (1e9 B/s).
 *
 * Every rank sends rank + 1 in every element, so every result must be
 * n (n + 1) / 2 exactly; #wrong counts the elements that are not, over all
 * ranks, after the last timed call.
 *
 * -i: in place (MPI_IN_PLACE, one buffer). The buffer then accumulates over
 * the timed calls (the time of a float sum does not depend on the values),
 * so it is refilled and reduced once more after them for #wrong.
 *
 * Output: comment lines start with '#'; data lines are
 *   size count time_us algbw busbw wrong
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t parse_size(const char *s) {
    char *end;
    double v = strtod(s, &end);
    switch (*end) {
    case 'k': case 'K': v *= 1024.0; break;
    case 'm': case 'M': v *= 1024.0 * 1024.0; break;
    case 'g': case 'G': v *= 1024.0 * 1024.0 * 1024.0; break;
    case '\0': break;
    default:
        fprintf(stderr, "allreduce: bad size '%s'\n", s);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    if (v < 4.0) {
        fprintf(stderr, "allreduce: size '%s' is under one float\n", s);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return (size_t)v;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, n;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &n);

    size_t min_bytes = 8, max_bytes = 256u << 20;
    long factor = 2, reps = 5;
    int in_place = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-i")) {
            in_place = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "allreduce: %s needs a value\n", argv[i]);
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
        if (!strcmp(argv[i], "-b")) min_bytes = parse_size(argv[++i]);
        else if (!strcmp(argv[i], "-e")) max_bytes = parse_size(argv[++i]);
        else if (!strcmp(argv[i], "-f")) factor = atol(argv[++i]);
        else if (!strcmp(argv[i], "-r")) reps = atol(argv[++i]);
        else {
            fprintf(stderr, "usage: allreduce [-b MINBYTES] [-e MAXBYTES] [-f FACTOR] [-r REPS] [-i]\n");
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
    }
    if (factor < 2 || reps < 1 || min_bytes > max_bytes) {
        fprintf(stderr, "allreduce: need -f >= 2, -r >= 1 and -b <= -e\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }

    size_t max_count = max_bytes / sizeof(float);
    float *send = malloc(max_count * sizeof(float));
    float *recv = malloc(max_count * sizeof(float));
    double *times = malloc((size_t)reps * sizeof(double));
    if (!send || !recv || !times) {
        fprintf(stderr, "allreduce: rank %d: out of memory for %zu bytes\n", rank, max_bytes);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    /* Touch every page now so the timed calls see no first-touch faults in these buffers. */
    for (size_t i = 0; i < max_count; i++) {
        send[i] = (float)(rank + 1);
        recv[i] = 0.0f;
    }
    const float expected = (float)n * (float)(n + 1) / 2.0f;

    if (rank == 0) {
        char version[MPI_MAX_LIBRARY_VERSION_STRING];
        int len;
        MPI_Get_library_version(version, &len);
        char *nl = strchr(version, '\n');
        if (nl) *nl = '\0';
        printf("# MPI_Allreduce float sum, %s, %d ranks, %ld reps (median), %s\n",
               in_place ? "in place" : "out of place", n, reps, version);
        printf("# %10s %12s %10s %8s %8s %7s\n", "size(B)", "count", "time(us)", "algbw", "busbw", "#wrong");
        fflush(stdout);
    }

    for (size_t bytes = min_bytes; bytes <= max_bytes; bytes *= (size_t)factor) {
        size_t count = bytes / sizeof(float);
        long iters = (long)((64u << 20) / bytes);
        if (iters < 2) iters = 2;
        if (iters > 1000) iters = 1000;
        for (long r = -1; r < reps; r++) { /* r = -1: warm-up */
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            for (long i = 0; i < iters; i++)
                MPI_Allreduce(in_place ? MPI_IN_PLACE : send, recv, (int)count, MPI_FLOAT, MPI_SUM,
                              MPI_COMM_WORLD);
            double mine = (MPI_Wtime() - t0) / (double)iters, slowest;
            MPI_Allreduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
            if (r >= 0) times[r] = slowest;
        }
        if (in_place) {
            for (size_t i = 0; i < count; i++) recv[i] = (float)(rank + 1);
            MPI_Allreduce(MPI_IN_PLACE, recv, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        }
        long wrong = 0, all_wrong = 0;
        for (size_t i = 0; i < count; i++) wrong += recv[i] != expected;
        MPI_Reduce(&wrong, &all_wrong, 1, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
        qsort(times, (size_t)reps, sizeof(double), cmp_double);
        double t = reps % 2 ? times[reps / 2] : (times[reps / 2 - 1] + times[reps / 2]) / 2.0;
        double algbw = (double)(count * sizeof(float)) / t / 1e9;
        double busbw = algbw * 2.0 * (double)(n - 1) / (double)n;
        if (rank == 0) {
            printf("%12zu %12zu %10.2f %8.3f %8.3f %7ld\n", count * sizeof(float), count, t * 1e6, algbw, busbw,
                   all_wrong);
            fflush(stdout);
        }
        if (bytes > max_bytes / (size_t)factor) break; /* the next step would pass max_bytes (or overflow) */
    }
    free(send);
    free(recv);
    free(times);
    MPI_Finalize();
    return 0;
}
