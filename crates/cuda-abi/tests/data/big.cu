// A parameter too large for EIATTR_KPARAM_INFO's 14-bit size field (16,400
// bytes): ptxas describes the kernel's parameters with
// EIATTR_KPARAM_INFO_V2 instead. Built by make.sh.
struct Big { char b[16400]; };

extern "C" __global__ void big(int a, Big b, short2 s, double *out) {
    out[0] = a + b.b[16399] + s.y;
}
