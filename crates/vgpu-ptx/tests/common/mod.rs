#![allow(dead_code)]

use std::collections::HashMap;

use vgpu_ptx::{launch, ArenaMemory, ExecError, LaunchConfig, Module};

pub fn nvcc_module() -> Module {
    Module::parse(include_str!("../cuda/kernels_sm80.ptx")).expect("parse nvcc PTX")
}

/// Packs argument values per the kernel's parameter layout.
pub fn pack(m: &Module, kernel: &str, args: &[&[u8]]) -> Vec<u8> {
    let k = m.entry(kernel).expect("kernel");
    assert_eq!(k.params.len(), args.len(), "argument count for {kernel}");
    let mut buf = vec![0u8; k.param_size as usize];
    for (p, a) in k.params.iter().zip(args) {
        assert_eq!(p.size as usize, a.len(), "size of an argument of {kernel}");
        buf[p.offset as usize..p.offset as usize + a.len()].copy_from_slice(a);
    }
    buf
}

pub fn run(
    m: &Module,
    mem: &ArenaMemory,
    kernel: &str,
    grid: [u32; 3],
    block: [u32; 3],
    dynamic_shared: u32,
    args: &[&[u8]],
) -> Result<(), ExecError> {
    let params = pack(m, kernel, args);
    let cfg = LaunchConfig {
        grid,
        block,
        dynamic_shared,
    };
    launch(m, kernel, &cfg, &params, mem, &HashMap::new())
}

pub fn f32s_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
pub fn i32s_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn close(a: f32, b: f32, rel: f32) -> bool {
    a == b || (a - b).abs() <= rel * b.abs().max(1.0)
}

/// Deterministic pseudo-random numbers (xorshift).
pub struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}
