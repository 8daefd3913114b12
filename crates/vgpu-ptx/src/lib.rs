//! PTX parsing and CPU execution for vgpu's software GPU, plus fatbin parsing.
//!
//! The crate is a plain library: no FFI and no CUDA types. A caller (vgpu-emu)
//! turns a `cuModuleLoadData` image into PTX with [`fatbin::extract_ptx`],
//! parses it with [`Module::parse`], allocates device memory for
//! [`Module::globals`], and runs kernels with [`launch`] against its own
//! [`Memory`] implementation.
//!
//! Wiring into a driver (what vgpu-emu needs to do):
//! - `cuModuleLoadData`: `fatbin::extract_ptx(image, 90)` (a
//!   [`fatbin::FatbinError::NoPtx`] is `CUDA_ERROR_NO_BINARY_FOR_GPU`), then
//!   [`Module::parse`] (a [`PtxError`] is `CUDA_ERROR_INVALID_PTX`). For each
//!   [`Module::globals`] entry allocate `size` bytes, copy `init`, then patch
//!   `relocs` with the 64-bit addresses of the named symbols; keep the
//!   name → address map for [`launch`] and `cuModuleGetGlobal`.
//! - `cuFuncGetParamInfo` / attributes: [`Module::entry`].
//! - `cuLaunchKernel`: pack `kernelParams[i]` (size `params[i].size`) at
//!   `params[i].offset` into a buffer of `param_size` bytes, or pass the
//!   `extra` buffer as is; then [`launch_with`] on the stream's thread.
//!   [`ExecError::IllegalAddress`] maps to `CUDA_ERROR_ILLEGAL_ADDRESS`,
//!   `MisalignedAddress` to `CUDA_ERROR_MISALIGNED_ADDRESS`, `Trap` to
//!   `CUDA_ERROR_LAUNCH_FAILED`, [`ExecError::Assert`] to
//!   `CUDA_ERROR_ASSERT` (sticky, like the faults), `Unsupported` to
//!   `CUDA_ERROR_NOT_SUPPORTED` with the message logged.
//! - Device output: [`LaunchOptions::output`] receives `printf` text and
//!   the message of a failed `assert`, block by block; the driver passes it
//!   to the guest's stdout (the assert message to stderr) in order with
//!   stream synchronisation.
//! - `cuLaunchCooperativeKernel` (and the cooperative launch attribute):
//!   set [`LaunchOptions::cooperative`]; every block then runs at once.
//! - Device heap: implement [`Memory::device_alloc`] / [`Memory::device_free`]
//!   on the driver's memory (within `CU_LIMIT_MALLOC_HEAP_SIZE`) for device
//!   `malloc`; without them `malloc` returns NULL.
//! - `vgpu bench`: [`bench::interpreter_throughput`].
//!
//! Execution model: blocks run in parallel on a small pool of OS threads;
//! inside a block each CUDA thread is interpreted on its own until it reaches
//! a synchronisation point (`bar.sync`, or a warp collective such as
//! `shfl.sync`), where the block scheduler lines the participants up. Warp
//! collectives are executed for the lanes of a warp that stand at the same
//! instruction, which is the independent-thread-scheduling model of sm_70+.
//!
//! Layout: `parse/` turns text into the `ir` (resolving names), `ops/` holds
//! one module per instruction family (its decoding and its execution),
//! `exec/` schedules blocks, threads and warps, `runtime.rs` provides the
//! device runtime functions, `num.rs` exact floating-point rounding.

// Safe code throughout, but for the block pool (`exec/pool.rs`), which lends
// a launch's borrowed closure to persistent threads and waits for them before
// the launch returns: that one module allows `unsafe`, nothing else may.
#![deny(unsafe_code)]

pub mod bench;
mod exec;
pub mod fatbin;
pub(crate) mod ir;
mod lexer;
mod memory;
mod num;
mod ops;
mod parse;
mod runtime;

use std::collections::{HashMap, HashSet};
use std::fmt;

pub use exec::{launch, launch_with, LaunchConfig, LaunchOptions};
pub use ir::Param;
pub use memory::{ArenaMemory, MemError, Memory};
pub use runtime::Builtin;

/// A syntax or semantic error in PTX text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtxError {
    pub line: u32,
    pub msg: String,
}

impl PtxError {
    pub(crate) fn new(line: u32, msg: impl Into<String>) -> Self {
        PtxError {
            line,
            msg: msg.into(),
        }
    }
}

impl fmt::Display for PtxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PTX line {}: {}", self.line, self.msg)
    }
}

impl std::error::Error for PtxError {}

/// Why a launch stopped. Every variant is a kernel-level failure that the
/// caller maps to a CUDA error; none of them leaves the process damaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecError {
    /// An instruction (or type combination) the interpreter doesn't run.
    Unsupported {
        inst: String,
        line: u32,
    },
    IllegalAddress {
        addr: u64,
        line: u32,
    },
    MisalignedAddress {
        addr: u64,
        line: u32,
    },
    /// `trap`, or `brkpt`.
    Trap {
        line: u32,
    },
    /// `.func` recursion deeper than the interpreter's frame limit.
    StackOverflow {
        line: u32,
    },
    UnknownKernel(String),
    /// The packed parameter buffer is shorter than the kernel's parameters.
    BadParams {
        expected: usize,
        got: usize,
    },
    /// A module global the kernel can reach has no address in the map.
    MissingSymbol(String),
    /// Grid/block/shared-memory configuration the launch can't honour.
    InvalidConfig(String),
    /// [`LaunchOptions::cancel`] was raised, or another block failed first.
    Cancelled,
    /// An interpreter bug surfaced as a panic; reported instead of crashing.
    Internal(String),
    /// A device-side `assert` failed (`__assertfail`): the caller reports
    /// `CUDA_ERROR_ASSERT`, sticky. The launch output already holds CUDA's
    /// message for it.
    Assert {
        message: String,
        file: String,
        line: u32,
        function: String,
    },
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::Unsupported { inst, line } => {
                write!(f, "unsupported PTX instruction `{inst}` at line {line}")
            }
            ExecError::IllegalAddress { addr, line } => {
                write!(f, "illegal address {addr:#x} accessed at PTX line {line}")
            }
            ExecError::MisalignedAddress { addr, line } => {
                write!(
                    f,
                    "misaligned address {addr:#x} accessed at PTX line {line}"
                )
            }
            ExecError::Trap { line } => write!(f, "kernel trapped at PTX line {line}"),
            ExecError::StackOverflow { line } => {
                write!(f, "call stack overflow at PTX line {line}")
            }
            ExecError::UnknownKernel(k) => write!(f, "no kernel named `{k}`"),
            ExecError::BadParams { expected, got } => {
                write!(f, "kernel expects {expected} parameter bytes, got {got}")
            }
            ExecError::MissingSymbol(s) => write!(f, "global `{s}` has no device address"),
            ExecError::InvalidConfig(s) => write!(f, "invalid launch configuration: {s}"),
            ExecError::Cancelled => write!(f, "launch cancelled"),
            ExecError::Internal(s) => write!(f, "interpreter internal error: {s}"),
            ExecError::Assert {
                message,
                file,
                line,
                function,
            } => write!(f, "{file}:{line}: {function}: Assertion `{message}` failed"),
        }
    }
}

impl std::error::Error for ExecError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalSpace {
    Global,
    Const,
}

/// A module-scope `.global` or `.const` variable the caller must allocate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    pub name: String,
    pub space: GlobalSpace,
    pub size: u64,
    pub align: u32,
    /// Initial bytes (`size` long), or empty for zero-filled.
    pub init: Vec<u8>,
    /// `(offset, symbol)`: write the symbol's 64-bit address at `offset`
    /// after allocation (initializers such as `{ generic(x) }`).
    pub relocs: Vec<(u64, String)>,
    /// Declared `.extern`: defined by another module (linked code).
    pub is_extern: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SharedVar {
    pub name: String,
    pub size: u64,
    pub align: u32,
    /// `.extern .shared x[]`: dynamic shared memory.
    pub dynamic: bool,
}

/// Per-kernel facts computed once at parse time.
#[derive(Debug, Clone)]
pub(crate) struct KernelMeta {
    pub func: u32,
    /// Offset of each module shared variable in this kernel's static shared
    /// area (`u32::MAX` where the kernel never touches it).
    pub shared_offsets: Vec<u32>,
    pub static_shared: u32,
    /// Where dynamic shared memory starts.
    pub dyn_base: u32,
    /// Globals this kernel (and its callees) reference.
    pub globals_used: Vec<u32>,
    pub local_bytes: u32,
    /// The kernel reads `%reserved_smem_offset_*`: its blocks get the
    /// driver's reserved shared memory after their own.
    pub reserved_smem: bool,
}

/// A parsed PTX module.
#[derive(Debug, Clone)]
pub struct Module {
    pub version: String,
    pub target: String,
    pub(crate) funcs: Vec<ir::Function>,
    pub(crate) func_index: HashMap<String, u32>,
    pub(crate) globals: Vec<Global>,
    pub(crate) global_index: HashMap<String, u32>,
    pub(crate) shared: Vec<SharedVar>,
    pub(crate) shared_index: HashMap<String, u32>,
    pub(crate) kernels: HashMap<String, KernelMeta>,
}

/// What the driver API reports about a kernel.
#[derive(Debug, Clone, Copy)]
pub struct Kernel<'m> {
    pub name: &'m str,
    /// Parameter layout of the packed buffer (docs/call-path.md "Parameter layout from PTX"), for
    /// `cuFuncGetParamInfo`.
    pub params: &'m [Param],
    /// Total bytes of the packed parameter buffer.
    pub param_size: u32,
    /// Static `__shared__` bytes (`CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES`).
    pub static_shared: u32,
    /// Per-thread local memory the kernel frame declares.
    pub local_bytes: u32,
    pub reqntid: Option<[u32; 3]>,
    pub maxntid: Option<[u32; 3]>,
}

/// Instructions the interpreter will reject when reached, for diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedInst {
    pub function: String,
    pub inst: String,
    pub line: u32,
}

impl Module {
    pub fn parse(text: &str) -> Result<Module, PtxError> {
        parse::parse_module(text)
    }

    /// Names of the module's kernels (`.entry` functions with bodies).
    pub fn kernel_names(&self) -> impl Iterator<Item = &str> {
        self.funcs
            .iter()
            .filter(|f| f.is_entry && f.defined)
            .map(|f| f.name.as_str())
    }

    pub fn entry(&self, name: &str) -> Option<Kernel<'_>> {
        let meta = self.kernels.get(name)?;
        let f = &self.funcs[meta.func as usize];
        Some(Kernel {
            name: &f.name,
            params: &f.params,
            param_size: f.params.last().map_or(0, |p| p.offset + p.size),
            static_shared: meta.static_shared,
            local_bytes: meta.local_bytes,
            reqntid: f.reqntid,
            maxntid: f.maxntid,
        })
    }

    /// Module-scope `.global`/`.const` variables, which the caller allocates
    /// in device memory and passes back (name → address) to [`launch`].
    pub fn globals(&self) -> &[Global] {
        &self.globals
    }

    pub fn unsupported(&self) -> Vec<UnsupportedInst> {
        let mut out = Vec::new();
        for f in &self.funcs {
            for i in &f.insts {
                if i.op == ir::Op::Unsupported {
                    out.push(UnsupportedInst {
                        function: f.name.clone(),
                        inst: i.text.to_string(),
                        line: i.line,
                    });
                }
            }
        }
        out
    }
}

fn operands_syms(ops: &[ir::Opnd], f: &mut impl FnMut(ir::Sym)) {
    for o in ops {
        match o {
            ir::Opnd::Sym(s) => f(*s),
            ir::Opnd::Addr(b, _) => operands_syms(std::slice::from_ref(b), f),
            ir::Opnd::Vec(v) => operands_syms(v, f),
            _ => {}
        }
    }
}

fn operands_funcs(ops: &[ir::Opnd], f: &mut impl FnMut(u32)) {
    for o in ops {
        match o {
            ir::Opnd::Func(g) => f(*g),
            ir::Opnd::Addr(b, _) => operands_funcs(std::slice::from_ref(b), f),
            ir::Opnd::Vec(v) => operands_funcs(v, f),
            _ => {}
        }
    }
}

fn reads_reserved_smem(ops: &[ir::Opnd]) -> bool {
    use ir::Sreg as S;
    ops.iter().any(|o| match o {
        ir::Opnd::Sreg(
            S::ReservedSmemBegin
            | S::ReservedSmemEnd
            | S::ReservedSmemCap
            | S::ReservedSmemOffset(_),
        ) => true,
        ir::Opnd::Addr(b, _) => reads_reserved_smem(std::slice::from_ref(b)),
        ir::Opnd::Vec(v) => reads_reserved_smem(v),
        _ => false,
    })
}

/// Computes per-kernel layouts after all bodies are decoded.
pub(crate) fn finish_module(m: &mut Module) -> Result<(), PtxError> {
    for (fi, f) in m.funcs.iter().enumerate() {
        if !f.is_entry || !f.defined {
            continue;
        }
        let mut seen = HashSet::new();
        let mut todo = vec![fi as u32];
        let mut shared_used = Vec::new();
        let mut globals_used = Vec::new();
        let mut local_max = 0u32;
        let mut reserved_smem = false;
        while let Some(g) = todo.pop() {
            if !seen.insert(g) {
                continue;
            }
            let func = &m.funcs[g as usize];
            if func.builtin.is_some() {
                continue;
            }
            if !func.defined {
                return Err(PtxError::new(
                    func.line,
                    format!("function `{}` is declared but never defined", func.name),
                ));
            }
            local_max = local_max.max(func.local_frame);
            for i in &func.insts {
                reserved_smem |= reads_reserved_smem(&i.ops);
                operands_syms(&i.ops, &mut |s| match s {
                    ir::Sym::Shared(v) => shared_used.push(v),
                    ir::Sym::Global(v) => globals_used.push(v),
                    _ => {}
                });
                // A function whose address is taken may be called indirectly.
                operands_funcs(&i.ops, &mut |f| todo.push(f));
            }
            for c in &func.calls {
                if let ir::Callee::Direct(f) = c.callee {
                    todo.push(f);
                }
                for o in c.args.iter().chain(&c.rets) {
                    operands_syms(std::slice::from_ref(o), &mut |s| {
                        if let ir::Sym::Global(v) = s {
                            globals_used.push(v)
                        }
                    });
                }
            }
        }
        shared_used.sort_unstable();
        shared_used.dedup();
        globals_used.sort_unstable();
        globals_used.dedup();
        let mut offsets = vec![u32::MAX; m.shared.len()];
        let mut off = 0u64;
        let mut dyn_align = 16u32;
        for &v in &shared_used {
            let sv = &m.shared[v as usize];
            if sv.dynamic {
                dyn_align = dyn_align.max(sv.align);
                continue;
            }
            off = off.next_multiple_of(sv.align as u64);
            offsets[v as usize] = off as u32;
            off += sv.size;
        }
        if off > u32::MAX as u64 / 2 {
            return Err(PtxError::new(f.line, "static shared memory too large"));
        }
        let static_shared = off as u32;
        m.kernels.insert(
            f.name.clone(),
            KernelMeta {
                func: fi as u32,
                shared_offsets: offsets,
                static_shared,
                dyn_base: static_shared.next_multiple_of(dyn_align),
                globals_used,
                local_bytes: local_max,
                reserved_smem,
            },
        );
    }
    Ok(())
}
