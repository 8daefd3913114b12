/*
 * A libcuda.so.1 that is not vgpu's: what a leftover driver library or a
 * stub from a CUDA toolkit looks like to the loader. Built as a shared
 * object with -Wl,-soname,libcuda.so.1; every call reports
 * CUDA_ERROR_NO_DEVICE (100).
 */
int cuInit(unsigned int flags) {
    (void)flags;
    return 100;
}

int cuDriverGetVersion(int *version) {
    (void)version;
    return 100;
}

int cuDeviceGetCount(int *count) {
    if (count) *count = 0;
    return 100;
}
