// What every program under tests/cuda/ reports with: a failed runtime call
// or check prints "FAIL: ..." with its line and exits 1 (the Rust tests
// show that line); EXPECT wants one specific error and clears it from
// cudart's last-error slot.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

#define CHECK(call)                                                            \
    do {                                                                       \
        cudaError_t e_ = (call);                                               \
        if (e_ != cudaSuccess) {                                               \
            fprintf(stderr, "FAIL: %s: %d (%s) at line %d\n", #call, (int)e_,  \
                    cudaGetErrorString(e_), __LINE__);                         \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

#define EXPECT(call, want)                                                     \
    do {                                                                       \
        cudaError_t e_ = (call);                                               \
        if (e_ != (want)) {                                                    \
            fprintf(stderr, "FAIL: %s: got %d, want %d at line %d\n", #call,   \
                    (int)e_, (int)(want), __LINE__);                           \
            exit(1);                                                           \
        }                                                                      \
        (void)cudaGetLastError();                                              \
    } while (0)

[[maybe_unused]] static void fail(const char *what) {
    fprintf(stderr, "FAIL: %s\n", what);
    exit(1);
}
