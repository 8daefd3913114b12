//! Instruction coverage over a body of real PTX: every module of a CUDA
//! library (the fatbins embedded in a `.so`, LZ4/ZSTD entries included) or a
//! directory of `.ptx` files must parse, and no instruction may decode as
//! unsupported.
//!
//! Run with `VGPU_PTX_CORPUS=<file.so or dir> cargo test -p vgpu-ptx --test
//! corpus -- --ignored --nocapture`, e.g. on the `libggml-cuda*.so` of the
//! `cyllama-cuda12` wheel or on PTX built from ggml's CUDA sources.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use vgpu_ptx::{fatbin, Module};

/// Every distinct PTX text in a file's embedded fatbin containers.
fn ptx_in_binary(bytes: &[u8]) -> Vec<String> {
    let magic = fatbin::CONTAINER_MAGIC.to_le_bytes();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 4 <= bytes.len() {
        if bytes[i..i + 4] == magic {
            if let Ok(entries) = fatbin::parse_entries(&bytes[i..]) {
                for e in entries.iter().filter(|e| e.is_ptx()) {
                    if let Ok(t) = e.ptx_text() {
                        if seen.insert(t.clone()) {
                            out.push(t);
                        }
                    }
                }
            }
        }
        // Containers are 8-byte aligned.
        i += 8;
    }
    out
}

fn corpus(path: &Path) -> Vec<(String, String)> {
    if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .expect("read corpus directory")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "ptx"))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|p| {
                let t = std::fs::read_to_string(&p).expect("read PTX");
                (p.display().to_string(), t)
            })
            .collect()
    } else {
        let bytes = std::fs::read(path).expect("read corpus file");
        ptx_in_binary(&bytes)
            .into_iter()
            .enumerate()
            .map(|(k, t)| (format!("{}#{k}", path.display()), t))
            .collect()
    }
}

#[test]
#[ignore = "needs VGPU_PTX_CORPUS: a CUDA library or a directory of PTX files"]
fn every_instruction_of_a_corpus_is_supported() {
    let path = std::env::var("VGPU_PTX_CORPUS").expect("VGPU_PTX_CORPUS is not set");
    let modules = corpus(Path::new(&path));
    assert!(!modules.is_empty(), "no PTX found in {path}");
    let mut parse_errors = Vec::new();
    let mut missing: BTreeMap<String, usize> = BTreeMap::new();
    let mut kernels = 0;
    for (name, text) in &modules {
        match Module::parse(text) {
            Ok(m) => {
                kernels += m.kernel_names().count();
                for u in m.unsupported() {
                    *missing.entry(u.inst).or_default() += 1;
                }
            }
            Err(e) => parse_errors.push(format!("{name}: {e}")),
        }
    }
    println!("{} modules, {kernels} kernels", modules.len());
    for e in &parse_errors {
        println!("parse error: {e}");
    }
    for (inst, n) in &missing {
        println!("unsupported: {inst} ({n}x)");
    }
    assert!(
        parse_errors.is_empty() && missing.is_empty(),
        "{} modules fail to parse, {} instruction forms unsupported",
        parse_errors.len(),
        missing.len()
    );
}
