/*
 * bench_common.h - small helpers shared by the C and C++ benchmark programs: a monotonic clock,
 * median, the deterministic data every peer uses, memory readings from /proc, and the
 * "RESULT {json}" line the driver (bench/driver.py) parses.
 *
 * Every benchmark program is run as `prog BENCH THREADS REPS` and writes one RESULT line per
 * measured case to stdout; anything else it prints is progress text.
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Seconds on a monotonic clock. */
static inline double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Waits half a second, untimed, after the thread count is set and before anything is measured.
 * OpenBLAS's idle worker threads spin (sched_yield) for a while after the library loads or the
 * thread count changes before they sleep, and on a 2-CPU machine that slows the measuring thread
 * by up to 40%: without this, a short benchmark measures the start-up, not the steady state.
 * Every peer waits the same (bench_common.py's settle() for the Python ones). */
static inline void bench_settle(void) {
    struct timespec ts = {0, 500000000L};
    while (nanosleep(&ts, &ts) != 0) {}
}

/* The deterministic fill used by every peer (see bench/README.md, "Data"):
 * element i = scale * sin(phase + 0.37 * i), computed in double. */
static inline double bench_fill_value(int64_t i, double phase, double scale) {
    return scale * sin(phase + 0.37 * (double)i);
}

static inline void bench_fill_f64(double *out, int64_t n, double phase, double scale) {
    for (int64_t i = 0; i < n; i++) out[i] = bench_fill_value(i, phase, scale);
}

static inline void bench_fill_f32(float *out, int64_t n, double phase, double scale) {
    for (int64_t i = 0; i < n; i++) out[i] = (float)bench_fill_value(i, phase, scale);
}

/* SplitMix64, the stream of B10's tokens and B11's labels (bench_common.py's splitmix64 gives
 * the same numbers): the state advances by 0x9E3779B97F4A7C15 and is mixed into each output. */
static inline uint64_t bench_splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* A kB field ("VmRSS", "VmHWM") of /proc/self/status, in MiB; -1 if it cannot be read. */
static inline double bench_proc_status_mib(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    size_t len = strlen(field);
    double mib = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, field, len) == 0 && line[len] == ':') {
            mib = (double)strtoll(line + len + 1, NULL, 10) / 1024.0;
            break;
        }
    }
    fclose(f);
    return mib;
}

/* Resets the peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0). Returns 0 on success. */
static inline int bench_reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return -1;
    int ok = fputs("5", f) >= 0;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

/* Prints one result line: samples as a JSON array, plus an optional JSON object `info`
 * (a string holding "{...}" or NULL). The driver computes the median itself. */
static inline void bench_result(const char *bench, const char *kase, const char *peer, int threads,
                                const char *metric, const double *samples, int n, const char *info) {
    printf("RESULT {\"bench\": \"%s\", \"case\": \"%s\", \"peer\": \"%s\", \"threads\": %d, "
           "\"metric\": \"%s\", \"samples\": [",
           bench, kase, peer, threads, metric);
    for (int i = 0; i < n; i++) printf("%s%.17g", i ? ", " : "", samples[i]);
    printf("], \"info\": %s}\n", info ? info : "{}");
    fflush(stdout);
}

/* Parses `prog BENCH THREADS REPS`; exits with a usage message on anything else. */
static inline void bench_parse_args(int argc, char **argv, const char **bench, int *threads, int *reps) {
    if (argc != 4 || atoi(argv[2]) < 1 || atoi(argv[3]) < 1) {
        fprintf(stderr, "usage: %s BENCH THREADS REPS   (BENCH e.g. B1, THREADS >= 1, REPS >= 1)\n",
                argv[0]);
        exit(2);
    }
    *bench = argv[1];
    *threads = atoi(argv[2]);
    *reps = atoi(argv[3]);
}

#endif /* BENCH_COMMON_H */
