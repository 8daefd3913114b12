//! Compiles ../proto/*.proto (with protox, so no protoc) and writes the
//! prost messages and tonic clients and servers, one file per protobuf
//! package, into the directory given as the only argument.
//! scripts/gen-k8s-proto.sh runs it.

use std::path::PathBuf;

fn main() {
    let out: PathBuf = std::env::args_os()
        .nth(1)
        .expect("usage: vgpu-k8s-codegen OUT_DIR")
        .into();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let proto = root.join("proto");
    let files = [
        proto.join("deviceplugin_v1beta1.proto"),
        proto.join("podresources_v1.proto"),
    ];
    let fds = protox::compile(files, [&proto])
        .unwrap_or_else(|e| panic!("compiling the proto: {e:?}"));
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .out_dir(&out)
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("generating Rust: {e}"));
}
