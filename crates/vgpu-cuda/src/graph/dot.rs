//! `cuGraphDebugDotPrint`: the graph as a Graphviz DOT file, in the shape
//! the driver writes — one cluster per graph (child graphs nested), nodes
//! named `graph_<id>_node_<local id>` and labelled with their local id,
//! type and the kernel name or copy direction; the `VERBOSE` flag (and the
//! per-kind flags) add parameters. Answered from the guest model.

use super::node::Op;
use super::{Body, Graph};
use crate::args::Live;
use crate::check::reject;
use cuda_types::cuda::CUresult;
use std::ffi::{c_uint, CStr};
use std::fmt::Write;
use std::os::unix::ffi::OsStrExt;

/// `CU_GRAPH_DEBUG_DOT_FLAGS_VERBOSE`.
const VERBOSE: u32 = 1 << 0;
/// `..._KERNEL_NODE_PARAMS`, `_MEMCPY_`, `_MEMSET_`, `_HOST_`, `_EVENT_`.
const KERNEL: u32 = 1 << 2;
const MEMCPY: u32 = 1 << 3;
const MEMSET: u32 = 1 << 4;
const HOST: u32 = 1 << 5;
const EVENT: u32 = 1 << 6;

fn label(op: &Op, flags: u32) -> String {
    let all = flags & VERBOSE != 0;
    let want = |bit: u32| all || flags & bit != 0;
    match op {
        Op::Kernel(k) => {
            let mut s = format!("KERNEL\\n{}", k.func.name.to_string_lossy());
            if want(KERNEL) {
                let _ = write!(
                    s,
                    "\\ngrid <<<{},{},{}>>> block <<<{},{},{}>>>\\ndynamic shared {} B, {} B of arguments",
                    k.grid[0], k.grid[1], k.grid[2], k.block[0], k.block[1], k.block[2],
                    k.shared_mem,
                    k.args().len()
                );
            }
            s
        }
        Op::Memcpy(c) => {
            let (src, dst) = c.plan.sides();
            let mut s = format!("MEMCPY\\n({src} to {dst})");
            if want(MEMCPY) {
                let d = &c.desc.0;
                let _ = write!(
                    s,
                    "\\n{} x {} x {} bytes",
                    d.WidthInBytes, d.Height, d.Depth
                );
            }
            s
        }
        Op::Memset(f) => {
            let mut s = "MEMSET".to_string();
            if want(MEMSET) {
                let _ = write!(
                    s,
                    "\\ndst {:#x} value {:#x} elem {} B\\n{} x {} pitch {}",
                    f.dst, f.value, f.elem, f.width, f.height, f.pitch
                );
            }
            s
        }
        Op::Host(h) => {
            let mut s = "HOST".to_string();
            if want(HOST) {
                let _ = write!(s, "\\nfn {:p} data {:#x}", h.func as *const (), h.user);
            }
            s
        }
        Op::Child(_) => "GRAPH".into(),
        Op::Empty => "EMPTY".into(),
        Op::EventRecord(e) | Op::EventWait(e) => {
            let mut s = if matches!(op, Op::EventRecord(_)) {
                "EVENT_RECORD".to_string()
            } else {
                "WAIT_EVENT".to_string()
            };
            if want(EVENT) {
                let _ = write!(s, "\\nevent {:p}", e.handle());
            }
            s
        }
        Op::MemAlloc(a) => format!("MEM_ALLOC\\n{:#x} ({} B)", a.mem.ptr, a.mem.size),
        Op::MemFree(m) => format!("MEM_FREE\\n{:#x}", m.ptr),
    }
}

fn node_name(graph: u32, local: u32) -> String {
    format!("graph_{graph}_node_{local}")
}

/// Writes `g`'s cluster (and its children's) into `out`.
fn cluster(out: &mut String, id: u32, body: &Body, flags: u32) {
    let _ = writeln!(out, "subgraph cluster_{id} {{");
    let _ = writeln!(out, "label=\"graph_{id}\" graph[style=\"dashed\"];");
    for n in &body.nodes {
        let name = node_name(id, n.local);
        let _ = writeln!(
            out,
            "\"{name}\"[style=\"solid\" shape=\"rectangle\" label=\"{}\\n{}\"];",
            n.local,
            label(&n.op, flags)
        );
        if let Op::Child(child) = &n.op {
            let cbody = child.body();
            cluster(out, child.id, &cbody, flags);
            for c in &cbody.nodes {
                let _ = writeln!(
                    out,
                    "\"{name}\" -> \"{}\"[style=\"dotted\"];",
                    node_name(child.id, c.local)
                );
            }
        }
    }
    for &(a, b) in &body.edges {
        if let (Some(a), Some(b)) = (body.entry(a), body.entry(b)) {
            let _ = writeln!(
                out,
                "\"{}\" -> \"{}\";",
                node_name(id, a.local),
                node_name(id, b.local)
            );
        }
    }
    let _ = writeln!(out, "}}");
}

/// The DOT text for `g`.
pub fn render(g: &Graph, flags: u32) -> String {
    let mut out = String::from("digraph dot {\n");
    let body = g.body();
    cluster(&mut out, g.id, &body, flags);
    out.push_str("}\n");
    out
}

/// `cuGraphDebugDotPrint`: CUDA_ERROR_OPERATING_SYSTEM when the file
/// cannot be written.
pub fn debug_dot_print(g: Live<Graph>, path: &CStr, flags: c_uint) -> Result<(), CUresult> {
    let text = render(&g, flags);
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path.to_bytes()));
    std::fs::write(path, text).map_err(|e| {
        reject(
            CUresult::CUDA_ERROR_OPERATING_SYSTEM,
            format_args!("cuGraphDebugDotPrint: {}: {e}", path.display()),
        )
    })
}
