/* cuBLAS through vgpu: cublasCreate, a 64x64 SGEMM, cublasDestroy.
 *
 *   cublas LIBCUBLAS
 *
 * libcublas.so.12 carries its own (static) CUDA runtime and dlopens
 * libcuda.so.1, which LD_LIBRARY_PATH makes the vgpu shim. Device memory
 * and copies use cuBLAS's own helpers (cublasAlloc, cublasSetMatrix,
 * cublasGetMatrix), so no other CUDA library is involved.
 *
 * Prints one line per step: "create STATUS", "gemm STATUS", "sync STATUS",
 * "result MAXERR" (the largest |C - A*B| against a CPU product, only when
 * the GEMM ran), "destroy STATUS", and "done". */
#include "vgpu_test.h"
#include <math.h>

typedef void *cublasHandle_t;
typedef int cublasStatus_t;
enum { CUBLAS_OP_N = 0 };

#ifndef N
#define N 64
#endif

static float a[N * N], b[N * N], c[N * N], want[N * N];

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    open_test_lib(argv[1]);
    FN(cublasStatus_t, cublasCreate_v2, (cublasHandle_t *));
    FN(cublasStatus_t, cublasDestroy_v2, (cublasHandle_t));
    FN(const char *, cublasGetStatusString, (cublasStatus_t));
    FN(cublasStatus_t, cublasAlloc, (int, int, void **));
    FN(cublasStatus_t, cublasFree, (void *));
    FN(cublasStatus_t, cublasSetMatrix, (int, int, int, const void *, int, void *, int));
    FN(cublasStatus_t, cublasGetMatrix, (int, int, int, const void *, int, void *, int));
    FN(cublasStatus_t, cublasSgemm_v2,
       (cublasHandle_t, int, int, int, int, int, const float *, const float *, int, const float *,
        int, const float *, float *, int));

    /* Small integers: every product and sum is exact in float. */
    for (int i = 0; i < N * N; i++) {
        a[i] = (float)(i % 7) - 3.0f;
        b[i] = (float)(i % 5) - 2.0f;
    }
    /* Column-major, as cuBLAS: C(r, k) = sum_j A(r, j) B(j, k). */
    for (int r = 0; r < N; r++)
        for (int k = 0; k < N; k++) {
            float s = 0;
            for (int j = 0; j < N; j++) s += a[j * N + r] * b[k * N + j];
            want[k * N + r] = s;
        }

    cublasHandle_t h = NULL;
    cublasStatus_t st = cublasCreate_v2(&h);
    printf("create %d %s\n", st, cublasGetStatusString(st));
    fflush(stdout);
    if (st != 0) {
        printf("done\n");
        return 0;
    }
    void *da = NULL, *db = NULL, *dc = NULL;
    st = cublasAlloc(N * N, sizeof(float), &da);
    if (st == 0) st = cublasAlloc(N * N, sizeof(float), &db);
    if (st == 0) st = cublasAlloc(N * N, sizeof(float), &dc);
    if (st == 0) st = cublasSetMatrix(N, N, sizeof(float), a, N, da, N);
    if (st == 0) st = cublasSetMatrix(N, N, sizeof(float), b, N, db, N);
    printf("setup %d %s\n", st, cublasGetStatusString(st));
    fflush(stdout);
    if (st == 0) {
        const float one = 1.0f, zero = 0.0f;
        st = cublasSgemm_v2(h, CUBLAS_OP_N, CUBLAS_OP_N, N, N, N, &one, da, N, db, N, &zero, dc,
                            N);
        printf("gemm %d %s\n", st, cublasGetStatusString(st));
        fflush(stdout);
        /* The launch is asynchronous: its failure surfaces at the copy. */
        cublasStatus_t got = cublasGetMatrix(N, N, sizeof(float), dc, N, c, N);
        printf("sync %d %s\n", got, cublasGetStatusString(got));
        if (st == 0 && got == 0) {
            double err = 0;
            for (int i = 0; i < N * N; i++) err = fmax(err, fabs((double)c[i] - want[i]));
            printf("result %g\n", err);
        }
    }
    if (da) cublasFree(da);
    if (db) cublasFree(db);
    if (dc) cublasFree(dc);
    st = cublasDestroy_v2(h);
    printf("destroy %d %s\n", st, cublasGetStatusString(st));
    printf("done\n");
    return 0;
}
