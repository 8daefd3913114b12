fn main() {
    // The loader matches cudart's dlopen("libnvidia-ml.so.1") against an already loaded
    // object by SONAME, so a preloaded shim is only reused if it carries it.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnvidia-ml.so.1");
}
