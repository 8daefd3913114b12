//! The interpreter's throughput on a fixed kernel, for `vgpu bench` and for
//! comparing interpreter changes: instructions executed per second.

use std::collections::HashMap;
use std::time::Instant;

use crate::exec::{LaunchConfig, LaunchOptions};
use crate::memory::ArenaMemory;
use crate::{ExecError, Module};

/// A mix typical of ML kernels: global loads, f32 FMAs, integer address
/// arithmetic, a loop, shared memory with a barrier, and a warp reduction.
const KERNEL: &str = r#"
.version 8.0
.target sm_90
.address_size 64
.visible .entry bench(.param .u64 x, .param .u64 y, .param .u32 n)
{
    .reg .pred %p<4>;
    .reg .b32 %r<16>;
    .reg .f32 %f<16>;
    .reg .b64 %rd<16>;
    .shared .align 4 .f32 part[32];
    ld.param.u64 %rd1, [x];
    ld.param.u64 %rd2, [y];
    ld.param.u32 %r1, [n];
    mov.u32 %r2, %tid.x;
    mov.u32 %r3, %ctaid.x;
    mov.u32 %r4, %ntid.x;
    mad.lo.s32 %r5, %r3, %r4, %r2;
    mov.f32 %f1, 0f00000000;
    mov.u32 %r6, 0;
$L_loop:
    add.s32 %r7, %r5, %r6;
    and.b32 %r7, %r7, 4095;
    mul.wide.u32 %rd3, %r7, 4;
    add.s64 %rd4, %rd1, %rd3;
    ld.global.f32 %f2, [%rd4];
    fma.rn.f32 %f1, %f2, %f2, %f1;
    add.s32 %r6, %r6, 1;
    setp.lt.u32 %p1, %r6, %r1;
    @%p1 bra $L_loop;
    mov.b32 %r8, %f1;
    shfl.sync.bfly.b32 %r9, %r8, 16, 31, -1;
    mov.b32 %f3, %r9;
    add.f32 %f1, %f1, %f3;
    mov.b32 %r8, %f1;
    shfl.sync.bfly.b32 %r9, %r8, 8, 31, -1;
    mov.b32 %f3, %r9;
    add.f32 %f1, %f1, %f3;
    and.b32 %r10, %r2, 31;
    shr.u32 %r11, %r2, 5;
    setp.ne.u32 %p2, %r10, 0;
    mov.u32 %r12, part;
    shl.b32 %r13, %r11, 2;
    add.u32 %r12, %r12, %r13;
    @!%p2 st.shared.f32 [%r12], %f1;
    bar.sync 0;
    setp.ne.u32 %p3, %r2, 0;
    @%p3 bra $L_end;
    ld.shared.f32 %f4, [part];
    mul.wide.u32 %rd5, %r3, 4;
    add.s64 %rd6, %rd2, %rd5;
    st.global.f32 [%rd6], %f4;
$L_end:
    ret;
}
"#;

/// What [`interpreter_throughput`] measured.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub instructions: u64,
    pub seconds: f64,
}

impl Throughput {
    pub fn per_second(&self) -> f64 {
        self.instructions as f64 / self.seconds.max(1e-9)
    }
}

/// Runs the fixed kernel (`blocks` blocks of 256 threads, 64 loop
/// iterations each) on `workers` threads (0: one per CPU) and reports the
/// instructions it executed and the time it took.
pub fn interpreter_throughput(blocks: u32, workers: usize) -> Result<Throughput, ExecError> {
    let m = Module::parse(KERNEL).map_err(|e| ExecError::Internal(e.to_string()))?;
    let mem = ArenaMemory::new();
    let data: Vec<u8> = (0..4096u32)
        .flat_map(|i| ((i % 17) as f32 * 0.25).to_bits().to_le_bytes())
        .collect();
    let x = mem.alloc_init(&data);
    let y = mem.alloc(blocks as usize * 4);
    let mut params = x.to_le_bytes().to_vec();
    params.extend_from_slice(&y.to_le_bytes());
    params.extend_from_slice(&64u32.to_le_bytes());
    let cfg = LaunchConfig {
        grid: [blocks, 1, 1],
        block: [256, 1, 1],
        dynamic_shared: 0,
    };
    let opts = LaunchOptions {
        workers,
        ..Default::default()
    };
    let start = Instant::now();
    let stats =
        crate::exec::launch_counted(&m, "bench", &cfg, &params, &mem, &HashMap::new(), &opts)?;
    Ok(Throughput {
        instructions: stats,
        seconds: start.elapsed().as_secs_f64(),
    })
}
