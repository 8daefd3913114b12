//! Graphs, launch attributes, cluster occupancy and tensor maps through the
//! exported entry points, as the host worker calls them. Expected values
//! are computed on the CPU with the same wrapping arithmetic the kernel
//! does.

use super::kernels::{arg, dtoh, get_fn, htod, load_ptx};
use super::{alloc, destroy, new_ctx, OK, SERIAL};
use crate::cuda_exports::*;
use cuda_types::cuda::*;
use std::ffi::{c_int, c_void};
use std::ptr::{null, null_mut};

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;
const NOT_SUPPORTED: CUresult = CUresult::CUDA_ERROR_NOT_SUPPORTED;

/// p[i] = p[i] * mul + add for i < n (u32, wrapping); the host worker's
/// graph tests run it too.
const MUL_ADD: &str = include_str!("mul_add.ptx");

fn mul_add(x: u32, mul: u32, add: u32) -> u32 {
    x.wrapping_mul(mul).wrapping_add(add)
}

fn new_graph() -> CUgraph {
    let mut g = null_mut();
    // SAFETY: a local out-slot.
    assert_eq!(unsafe { cuGraphCreate(&mut g, 0) }, OK);
    g
}

/// Kernel node parameters for `mul_add` on `n` elements at `p`, with the
/// arguments given by `kernelParams` (copied by the driver at once).
fn mul_add_params(f: CUfunction, n: u32) -> CUDA_KERNEL_NODE_PARAMS {
    CUDA_KERNEL_NODE_PARAMS {
        func: f,
        gridDimX: n.div_ceil(64),
        gridDimY: 1,
        gridDimZ: 1,
        blockDimX: 64,
        blockDimY: 1,
        blockDimZ: 1,
        ..Default::default()
    }
}

fn add_mul_add(
    g: CUgraph,
    deps: &[CUgraphNode],
    f: CUfunction,
    p: CUdeviceptr,
    (mul, add): (u32, u32),
    n: u32,
) -> Result<CUgraphNode, CUresult> {
    let (mut p, mut mul, mut add, mut nn) = (p, mul, add, n);
    let mut args = [arg(&mut p), arg(&mut mul), arg(&mut add), arg(&mut nn)];
    let mut params = mul_add_params(f, n);
    params.kernelParams = args.as_mut_ptr();
    let mut node = null_mut();
    // SAFETY: live locals; the arguments are copied during the call.
    let r = unsafe { cuGraphAddKernelNode_v2(&mut node, g, deps.as_ptr(), deps.len(), &params) };
    (r == OK).then_some(node).ok_or(r)
}

fn memset_params(dst: CUdeviceptr, value: u32, elem: u32, width: usize) -> CUDA_MEMSET_NODE_PARAMS {
    CUDA_MEMSET_NODE_PARAMS {
        dst,
        pitch: 0,
        value,
        elementSize: elem,
        width,
        height: 1,
    }
}

fn add_memset(
    g: CUgraph,
    deps: &[CUgraphNode],
    p: CUDA_MEMSET_NODE_PARAMS,
    ctx: CUcontext,
) -> Result<CUgraphNode, CUresult> {
    let mut node = null_mut();
    // SAFETY: live locals.
    let r = unsafe { cuGraphAddMemsetNode(&mut node, g, deps.as_ptr(), deps.len(), &p, ctx) };
    (r == OK).then_some(node).ok_or(r)
}

/// A 1D device-to-device copy descriptor.
fn copy_params(dst: CUdeviceptr, src: CUdeviceptr, bytes: usize) -> CUDA_MEMCPY3D {
    CUDA_MEMCPY3D {
        srcMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
        srcDevice: src,
        dstMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
        dstDevice: dst,
        WidthInBytes: bytes,
        Height: 1,
        Depth: 1,
        ..Default::default()
    }
}

fn add_copy(
    g: CUgraph,
    deps: &[CUgraphNode],
    p: CUDA_MEMCPY3D,
    ctx: CUcontext,
) -> Result<CUgraphNode, CUresult> {
    let mut node = null_mut();
    // SAFETY: live locals.
    let r = unsafe { cuGraphAddMemcpyNode(&mut node, g, deps.as_ptr(), deps.len(), &p, ctx) };
    (r == OK).then_some(node).ok_or(r)
}

fn instantiate(g: CUgraph) -> CUgraphExec {
    let mut e = null_mut();
    // SAFETY: a local out-slot.
    assert_eq!(unsafe { cuGraphInstantiateWithFlags(&mut e, g, 0) }, OK);
    e
}

fn launch(e: CUgraphExec) -> CUresult {
    // SAFETY: handles only.
    unsafe { cuGraphLaunch(e, null_mut()) }
}

#[test]
fn four_node_graph_replayed_a_hundred_times() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let f = get_fn(load_ptx(MUL_ADD), "mul_add");
    let n = 200usize;
    let (x, y) = (alloc(4 * n), alloc(4 * n));
    let start: Vec<u32> = (0..n as u32).map(|i| i * 7 + 1).collect();
    htod(x, &start);
    htod(y, &vec![0xdead_beefu32; n]);
    // y := 0 and x := 3x + 1 (independent), then y := x, then y := 2y.
    let g = new_graph();
    let zero = add_memset(g, &[], memset_params(y, 0, 4, n), ctx).unwrap();
    let step = add_mul_add(g, &[], f, x, (3, 1), n as u32).unwrap();
    let copy = add_copy(g, &[zero, step], copy_params(y, x, 4 * n), ctx).unwrap();
    add_mul_add(g, &[copy], f, y, (2, 0), n as u32).unwrap();
    let e = instantiate(g);
    let mut want_x = start.clone();
    for replay in 0..100 {
        assert_eq!(launch(e), OK, "replay {replay}");
        for v in &mut want_x {
            *v = mul_add(*v, 3, 1);
        }
        let want_y: Vec<u32> = want_x.iter().map(|&v| mul_add(v, 2, 0)).collect();
        assert_eq!(dtoh::<u32>(y, n), want_y, "replay {replay}");
    }
    assert_eq!(dtoh::<u32>(x, n), want_x);
    // SAFETY: handles only.
    unsafe {
        assert_eq!(cuGraphExecDestroy(e), OK);
        assert_eq!(cuGraphExecDestroy(e), INVALID_VALUE);
        assert_eq!(cuGraphDestroy(g), OK);
        assert_eq!(cuGraphDestroy(g), INVALID_VALUE);
    }
    destroy(ctx);
}

#[test]
fn nodes_run_after_their_dependencies() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let f = get_fn(load_ptx(MUL_ADD), "mul_add");
    let n = 64u32;
    let x = alloc(4 * n as usize);
    // x := 1, then x := 3x, then x := x + 5: 8 (the other order gives 18).
    let g = new_graph();
    let set = add_memset(g, &[], memset_params(x, 1, 4, n as usize), ctx).unwrap();
    let times3 = add_mul_add(g, &[set], f, x, (3, 0), n).unwrap();
    let plus5 = add_mul_add(g, &[times3], f, x, (1, 5), n).unwrap();
    // Two branches from the same root write separate halves of `y`, and a
    // join copies `x` over the second half only after both ran.
    let y = alloc(8 * n as usize);
    let left = add_memset(g, &[set], memset_params(y, 0x11, 4, n as usize), ctx).unwrap();
    let right = add_memset(
        g,
        &[set],
        memset_params(y + 4 * u64::from(n), 0x22, 4, n as usize),
        ctx,
    )
    .unwrap();
    add_copy(
        g,
        &[left, right, plus5],
        copy_params(y + 4 * u64::from(n), x, 4 * n as usize),
        ctx,
    )
    .unwrap();
    let e = instantiate(g);
    for _ in 0..3 {
        assert_eq!(launch(e), OK);
        assert_eq!(dtoh::<u32>(x, n as usize), vec![8; n as usize]);
        let got = dtoh::<u32>(y, 2 * n as usize);
        assert_eq!(got[..n as usize], vec![0x11; n as usize]);
        assert_eq!(got[n as usize..], vec![8; n as usize]);
    }
    destroy(ctx);
}

#[test]
fn exec_kernel_node_params_change_the_exec_only() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let f = get_fn(load_ptx(MUL_ADD), "mul_add");
    let n = 100u32;
    let x = alloc(4 * n as usize);
    let g = new_graph();
    let set = add_memset(g, &[], memset_params(x, 2, 4, n as usize), ctx).unwrap();
    let k = add_mul_add(g, &[set], f, x, (3, 1), n).unwrap();
    let e = instantiate(g);
    assert_eq!(launch(e), OK);
    assert_eq!(dtoh::<u32>(x, n as usize), vec![7; n as usize]);

    // New arguments, through the current and the v1 entry points.
    let (mut p, mut mul, mut add, mut nn) = (x, 10u32, 4u32, n);
    let mut args = [arg(&mut p), arg(&mut mul), arg(&mut add), arg(&mut nn)];
    let mut params = mul_add_params(f, n);
    params.kernelParams = args.as_mut_ptr();
    // SAFETY: live locals; arguments are copied during the call.
    unsafe { assert_eq!(cuGraphExecKernelNodeSetParams_v2(e, k, &params), OK) };
    assert_eq!(launch(e), OK);
    assert_eq!(dtoh::<u32>(x, n as usize), vec![24; n as usize]);
    let mut add9 = 9u32;
    let mut args = [arg(&mut p), arg(&mut mul), arg(&mut add9), arg(&mut nn)];
    let v1 = CUDA_KERNEL_NODE_PARAMS_v1 {
        func: f,
        gridDimX: params.gridDimX,
        gridDimY: 1,
        gridDimZ: 1,
        blockDimX: 64,
        blockDimY: 1,
        blockDimZ: 1,
        kernelParams: args.as_mut_ptr(),
        ..Default::default()
    };
    // SAFETY: as above.
    unsafe { assert_eq!(cuGraphExecKernelNodeSetParams(e, k, &v1), OK) };
    assert_eq!(launch(e), OK);
    assert_eq!(dtoh::<u32>(x, n as usize), vec![29; n as usize]);

    // The graph keeps its own parameters: a second exec runs the old ones.
    let e2 = instantiate(g);
    assert_eq!(launch(e2), OK);
    assert_eq!(dtoh::<u32>(x, n as usize), vec![7; n as usize]);

    // SAFETY: live locals and handles.
    unsafe {
        // A kernel update of a memset node, a node of no graph, a NULL
        // parameter block.
        assert_eq!(
            cuGraphExecKernelNodeSetParams_v2(e, set, &params),
            INVALID_VALUE
        );
        assert_eq!(
            cuGraphExecKernelNodeSetParams_v2(e, 0x1234 as CUgraphNode, &params),
            INVALID_VALUE
        );
        assert_eq!(
            cuGraphExecKernelNodeSetParams_v2(e, k, null()),
            INVALID_VALUE
        );
        // A memset update may change value and address, not the height.
        let y = alloc(4 * n as usize);
        let mut m = memset_params(y, 5, 4, n as usize);
        assert_eq!(cuGraphExecMemsetNodeSetParams(e, set, &m, ctx), OK);
        m.height = 2;
        m.pitch = 4 * n as usize;
        assert_eq!(
            cuGraphExecMemsetNodeSetParams(e, set, &m, ctx),
            INVALID_VALUE
        );
        m = memset_params(y, 5, 4, 0);
        assert_eq!(
            cuGraphExecMemsetNodeSetParams(e, set, &m, ctx),
            INVALID_VALUE
        );
        assert_eq!(launch(e), OK);
        // The memset now fills y; x is no longer reset: the second exec
        // left 7 there, and the kernel's last arguments make it 7 * 10 + 9.
        assert_eq!(dtoh::<u32>(y, n as usize), vec![5; n as usize]);
    }
    assert_eq!(dtoh::<u32>(x, n as usize), vec![79; n as usize]);
    destroy(ctx);
}

#[test]
fn disabled_nodes_act_as_empty_nodes() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let f = get_fn(load_ptx(MUL_ADD), "mul_add");
    let n = 32u32;
    let x = alloc(4 * n as usize);
    let g = new_graph();
    let set = add_memset(g, &[], memset_params(x, 1, 4, n as usize), ctx).unwrap();
    let k = add_mul_add(g, &[set], f, x, (1, 100), n).unwrap();
    let mut empty = null_mut();
    // SAFETY: live locals.
    unsafe { assert_eq!(cuGraphAddEmptyNode(&mut empty, g, &k, 1), OK) };
    let e = instantiate(g);
    let mut on = 7;
    // SAFETY: live locals and handles.
    unsafe {
        assert_eq!(cuGraphNodeGetEnabled(e, k, &mut on), OK);
        assert_eq!(on, 1);
        assert_eq!(cuGraphNodeSetEnabled(e, k, 0), OK);
        assert_eq!(cuGraphNodeGetEnabled(e, k, &mut on), OK);
        assert_eq!(on, 0);
    }
    assert_eq!(launch(e), OK);
    assert_eq!(dtoh::<u32>(x, n as usize), vec![1; n as usize]);
    // SAFETY: live locals and handles.
    unsafe {
        assert_eq!(cuGraphNodeSetEnabled(e, k, 1), OK);
        // Empty and event nodes cannot be toggled; a NULL out-pointer.
        assert_eq!(cuGraphNodeSetEnabled(e, empty, 0), INVALID_VALUE);
        assert_eq!(cuGraphNodeGetEnabled(e, empty, &mut on), INVALID_VALUE);
        assert_eq!(cuGraphNodeGetEnabled(e, k, null_mut()), INVALID_VALUE);
    }
    assert_eq!(launch(e), OK);
    assert_eq!(dtoh::<u32>(x, n as usize), vec![101; n as usize]);
    // Disabling the memset too: the kernel now accumulates.
    // SAFETY: handles only.
    unsafe { assert_eq!(cuGraphNodeSetEnabled(e, set, 0), OK) };
    assert_eq!(launch(e), OK);
    assert_eq!(dtoh::<u32>(x, n as usize), vec![201; n as usize]);
    destroy(ctx);
}

#[test]
fn chain_of_256_kernels_replayed_50_times() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let f = get_fn(load_ptx(MUL_ADD), "mul_add");
    let n = 48usize;
    let x = alloc(4 * n);
    let start: Vec<u32> = (0..n as u32)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect();
    htod(x, &start);
    let steps: Vec<(u32, u32)> = (0..256u32).map(|i| (2 * i + 3, i * i + 1)).collect();
    let g = new_graph();
    let mut prev: Vec<CUgraphNode> = Vec::new();
    for &s in &steps {
        prev = vec![add_mul_add(g, &prev, f, x, s, n as u32).unwrap()];
    }
    let e = instantiate(g);
    let mut want = start;
    for replay in 0..50 {
        assert_eq!(launch(e), OK, "replay {replay}");
        for v in &mut want {
            for &(m, a) in &steps {
                *v = mul_add(*v, m, a);
            }
        }
    }
    assert_eq!(dtoh::<u32>(x, n), want);
    destroy(ctx);
}

#[test]
fn event_nodes_record_when_the_graph_runs() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let f = get_fn(load_ptx(MUL_ADD), "mul_add");
    let x = alloc(4 * 64);
    let (mut e1, mut e2) = (null_mut(), null_mut());
    let g = new_graph();
    let mut ms = 0f32;
    // SAFETY: live locals and handles.
    unsafe {
        assert_eq!(cuEventCreate(&mut e1, 0), OK);
        assert_eq!(cuEventCreate(&mut e2, 0), OK);
        let mut r1 = null_mut();
        assert_eq!(cuGraphAddEventRecordNode(&mut r1, g, null(), 0, e1), OK);
        let k = add_mul_add(g, &[r1], f, x, (1, 1), 64).unwrap();
        let mut r2 = null_mut();
        assert_eq!(cuGraphAddEventRecordNode(&mut r2, g, &k, 1, e2), OK);
        let mut w = null_mut();
        assert_eq!(cuGraphAddEventWaitNode(&mut w, g, &r2, 1, e1), OK);
        let exec = instantiate(g);
        // Not recorded until the graph runs.
        assert_eq!(
            cuEventElapsedTime_v2(&mut ms, e1, e2),
            CUresult::CUDA_ERROR_INVALID_HANDLE
        );
        assert_eq!(launch(exec), OK);
        assert_eq!(cuEventElapsedTime_v2(&mut ms, e1, e2), OK);
        assert!(ms >= 0.0);
        // The exec's record node can be pointed at another event.
        assert_eq!(cuGraphExecEventRecordNodeSetEvent(exec, r2, e1), OK);
        assert_eq!(
            cuGraphExecEventRecordNodeSetEvent(exec, k, e1),
            INVALID_VALUE
        );
        assert_eq!(cuGraphExecEventWaitNodeSetEvent(exec, w, e2), OK);
        assert_eq!(
            cuGraphExecEventWaitNodeSetEvent(exec, r2, e2),
            INVALID_VALUE
        );
        assert_eq!(cuGraphUpload(exec, null_mut()), OK);
        assert_eq!(launch(exec), OK);
    }
    destroy(ctx);
}

#[test]
fn bad_graph_arguments_are_refused_like_the_driver() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let f = get_fn(load_ptx(MUL_ADD), "mul_add");
    let x = alloc(256);
    let g = new_graph();
    let other = new_graph();
    let a = add_memset(g, &[], memset_params(x, 0, 4, 64), ctx).unwrap();
    let b = add_memset(other, &[], memset_params(x, 0, 4, 64), ctx).unwrap();
    let mut out = null_mut();
    let mut exec = null_mut();
    let mut graph = null_mut();
    // SAFETY: live locals; deliberately bad handles and NULLs, which the
    // library must refuse without dereferencing.
    unsafe {
        assert_eq!(cuGraphCreate(&mut graph, 1), INVALID_VALUE);
        assert_eq!(cuGraphCreate(null_mut(), 0), INVALID_VALUE);
        // Dependencies: NULL with a count, a duplicate, another graph's.
        assert_eq!(cuGraphAddEmptyNode(&mut out, g, null(), 1), INVALID_VALUE);
        let dup = [a, a];
        assert_eq!(
            cuGraphAddEmptyNode(&mut out, g, dup.as_ptr(), 2),
            INVALID_VALUE
        );
        assert_eq!(cuGraphAddEmptyNode(&mut out, g, &b, 1), INVALID_VALUE);
        assert_eq!(cuGraphAddEmptyNode(null_mut(), g, null(), 0), INVALID_VALUE);
        assert_eq!(
            cuGraphAddEmptyNode(&mut out, 0x99 as CUgraph, null(), 0),
            INVALID_VALUE
        );
    }
    // Memsets: element size 3, a range past the allocation, a pitch
    // narrower than a row, memory nobody allocated.
    assert_eq!(
        add_memset(g, &[], memset_params(x, 0, 3, 4), ctx),
        Err(INVALID_VALUE)
    );
    assert_eq!(
        add_memset(g, &[], memset_params(x, 0, 4, 65), ctx),
        Err(INVALID_VALUE)
    );
    let mut two_d = memset_params(x, 0, 4, 8);
    two_d.height = 2;
    two_d.pitch = 16;
    assert_eq!(add_memset(g, &[], two_d, ctx), Err(INVALID_VALUE));
    assert_eq!(
        add_memset(g, &[], memset_params(0x10, 0, 1, 4), ctx),
        Err(INVALID_VALUE)
    );
    // Copies past the source or destination.
    assert_eq!(
        add_copy(g, &[], copy_params(x, x + 128, 256), ctx),
        Err(INVALID_VALUE)
    );
    assert_eq!(
        add_copy(g, &[], copy_params(x + 1, x, 256), ctx),
        Err(INVALID_VALUE)
    );
    // Kernels: a zero grid, both kernelParams and extra.
    let (mut p, mut m, mut ad, mut nn) = (x, 1u32, 1u32, 64u32);
    let mut args = [arg(&mut p), arg(&mut m), arg(&mut ad), arg(&mut nn)];
    let mut buf = [0u8; 24];
    let mut size = buf.len();
    let mut extra = cuda_abi::launch::extra_array(buf.as_mut_ptr().cast(), &mut size);
    let mut kp = mul_add_params(f, 64);
    kp.gridDimX = 0;
    kp.kernelParams = args.as_mut_ptr();
    // SAFETY: live locals.
    unsafe {
        assert_eq!(
            cuGraphAddKernelNode_v2(&mut out, g, null(), 0, &kp),
            INVALID_VALUE
        );
        kp.gridDimX = 1;
        kp.extra = extra.as_mut_ptr();
        assert_eq!(
            cuGraphAddKernelNode_v2(&mut out, g, null(), 0, &kp),
            INVALID_VALUE
        );
        // Through `extra` alone it is fine, but then it cannot become
        // cooperative.
        kp.kernelParams = null_mut();
        let mut k = null_mut();
        assert_eq!(cuGraphAddKernelNode_v2(&mut k, g, null(), 0, &kp), OK);
        let mut v = CUlaunchAttributeValue::default();
        v.cooperative = 1;
        assert_eq!(
            cuGraphKernelNodeSetAttribute(
                k,
                CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_COOPERATIVE,
                &v
            ),
            INVALID_VALUE
        );
        // Attributes valid for streams or launches only, a cluster of two,
        // a device-updatable node, and a node that is not a kernel.
        let node_attr = |id, v: &CUlaunchAttributeValue| cuGraphKernelNodeSetAttribute(k, id, v);
        let zero = CUlaunchAttributeValue::default();
        assert_eq!(
            node_attr(
                CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_SYNCHRONIZATION_POLICY,
                &zero
            ),
            INVALID_VALUE
        );
        assert_eq!(
            node_attr(
                CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
                &zero
            ),
            INVALID_VALUE
        );
        let mut c = CUlaunchAttributeValue::default();
        c.clusterDim.x = 2;
        c.clusterDim.y = 1;
        c.clusterDim.z = 1;
        assert_eq!(
            node_attr(
                CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION,
                &c
            ),
            NOT_SUPPORTED
        );
        c.clusterDim.x = 1;
        assert_eq!(
            node_attr(
                CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION,
                &c
            ),
            OK
        );
        let mut du = CUlaunchAttributeValue::default();
        du.deviceUpdatableKernelNode.deviceUpdatable = 1;
        assert_eq!(
            node_attr(
                CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_DEVICE_UPDATABLE_KERNEL_NODE,
                &du
            ),
            NOT_SUPPORTED
        );
        let mut pr = CUlaunchAttributeValue::default();
        pr.priority = -3;
        assert_eq!(
            node_attr(CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PRIORITY, &pr),
            OK
        );
        assert_eq!(node_attr(CUlaunchAttributeID(15), &zero), INVALID_VALUE);
        assert_eq!(
            cuGraphKernelNodeSetAttribute(
                a,
                CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PRIORITY,
                &pr
            ),
            INVALID_VALUE
        );

        // Instantiation: unknown flags, UPLOAD without a stream, device
        // launch with auto-free.
        assert_eq!(cuGraphInstantiateWithFlags(&mut exec, g, 16), INVALID_VALUE);
        assert_eq!(cuGraphInstantiateWithFlags(&mut exec, g, 2), INVALID_VALUE);
        assert_eq!(
            cuGraphInstantiateWithFlags(&mut exec, g, 4 | 1),
            INVALID_VALUE
        );
        assert_eq!(cuGraphInstantiateWithFlags(null_mut(), g, 0), INVALID_VALUE);
        // WithParams reports its result; UPLOAD needs a valid stream.
        let mut ip = CUDA_GRAPH_INSTANTIATE_PARAMS {
            flags: 2,
            hUploadStream: 0x5555 as CUstream,
            ..Default::default()
        };
        assert_ne!(cuGraphInstantiateWithParams(&mut exec, g, &mut ip), OK);
        assert_eq!(
            ip.result_out,
            CUgraphInstantiateResult::CUDA_GRAPH_INSTANTIATE_ERROR
        );
        ip.hUploadStream = null_mut();
        assert_eq!(cuGraphInstantiateWithParams(&mut exec, g, &mut ip), OK);
        assert_eq!(
            ip.result_out,
            CUgraphInstantiateResult::CUDA_GRAPH_INSTANTIATE_SUCCESS
        );
        assert_eq!(cuGraphExecDestroy(exec), OK);
        let mut log = [1 as std::ffi::c_char; 8];
        assert_eq!(
            cuGraphInstantiate_v2(&mut exec, g, null_mut(), log.as_mut_ptr(), log.len()),
            OK
        );
        assert_eq!(log[0], 0);
        // An exec outlives its graph; a destroyed exec does not launch.
        assert_eq!(cuGraphDestroy(g), OK);
        assert_eq!(launch(exec), OK);
        assert_eq!(cuGraphNodeSetEnabled(exec, a, 0), OK);
        assert_eq!(cuGraphExecDestroy(exec), OK);
        assert_eq!(launch(exec), INVALID_VALUE);
        assert_eq!(cuGraphUpload(exec, null_mut()), INVALID_VALUE);
        // The graph's nodes went with it.
        assert_eq!(
            cuGraphKernelNodeSetAttribute(
                k,
                CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PRIORITY,
                &pr
            ),
            INVALID_VALUE
        );
    }
    destroy(ctx);
}

#[test]
fn a_graph_refuses_to_run_memory_freed_since_instantiation() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let x = alloc(256);
    let g = new_graph();
    add_memset(g, &[], memset_params(x, 9, 4, 64), ctx).unwrap();
    let e = instantiate(g);
    assert_eq!(launch(e), OK);
    // SAFETY: a pointer this test allocated.
    unsafe { assert_eq!(cuMemFree_v2(x), OK) };
    assert_eq!(launch(e), INVALID_VALUE);
    destroy(ctx);
}

/// A `cuLaunchKernelEx` configuration of `mul_add` on 64 elements.
fn ex_config(attrs: &mut [CUlaunchAttribute]) -> CUlaunchConfig {
    CUlaunchConfig {
        gridDimX: 1,
        gridDimY: 1,
        gridDimZ: 1,
        blockDimX: 64,
        blockDimY: 1,
        blockDimZ: 1,
        sharedMemBytes: 0,
        hStream: null_mut(),
        attrs: attrs.as_mut_ptr(),
        numAttrs: attrs.len() as u32,
    }
}

fn attr(
    id: CUlaunchAttributeID,
    set: impl FnOnce(&mut CUlaunchAttributeValue),
) -> CUlaunchAttribute {
    let mut a = CUlaunchAttribute {
        id,
        ..Default::default()
    };
    set(&mut a.value);
    a
}

#[test]
fn launch_attributes_are_honoured_accepted_or_refused() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let f = get_fn(load_ptx(MUL_ADD), "mul_add");
    let x = alloc(4 * 64);
    htod(x, &[1u32; 64]);
    let (mut p, mut m, mut a, mut n) = (x, 2u32, 1u32, 64u32);
    let mut args = [arg(&mut p), arg(&mut m), arg(&mut a), arg(&mut n)];
    let (mut quiet, mut timed) = (null_mut(), null_mut());
    // SAFETY: local out-slots. 2 = CU_EVENT_DISABLE_TIMING.
    unsafe {
        assert_eq!(cuEventCreate(&mut quiet, 2), OK);
        assert_eq!(cuEventCreate(&mut timed, 0), OK);
    }
    type Id = CUlaunchAttributeID;
    let run = |attrs: &mut [CUlaunchAttribute], args: &mut [*mut c_void]| {
        let cfg = ex_config(attrs);
        // SAFETY: a live config, attribute array and argument list.
        unsafe { cuLaunchKernelEx(&cfg, f, args.as_mut_ptr(), null_mut()) }
    };
    // Accepted: every hint, priority, serialization, completion events of a
    // non-timing event, a cluster of one block.
    let mut ok = [
        attr(Id::CU_LAUNCH_ATTRIBUTE_IGNORE, |_| {}),
        attr(Id::CU_LAUNCH_ATTRIBUTE_PRIORITY, |v| v.priority = -5),
        attr(
            Id::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
            |v| v.programmaticStreamSerializationAllowed = 1,
        ),
        attr(Id::CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT, |v| {
            v.launchCompletionEvent.event = quiet
        }),
        attr(Id::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT, |v| {
            v.programmaticEvent.event = quiet;
            v.programmaticEvent.triggerAtBlockStart = 1;
        }),
        attr(Id::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION, |v| {
            v.clusterDim.x = 1;
            v.clusterDim.y = 1;
            v.clusterDim.z = 1;
        }),
        attr(Id::CU_LAUNCH_ATTRIBUTE_PREFERRED_CLUSTER_DIMENSION, |v| {
            v.preferredClusterDim.x = 2;
            v.preferredClusterDim.y = 1;
            v.preferredClusterDim.z = 1;
        }),
        attr(Id::CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW, |v| {
            v.accessPolicyWindow.base_ptr = x as *mut c_void;
            v.accessPolicyWindow.num_bytes = 256;
            v.accessPolicyWindow.hitRatio = 0.5;
        }),
        attr(Id::CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN, |v| {
            v.memSyncDomain.0 = 1
        }),
        attr(Id::CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN_MAP, |v| {
            v.memSyncDomainMap.remote = 1
        }),
        attr(
            Id::CU_LAUNCH_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
            |v| v.sharedMemCarveout = 50,
        ),
        attr(
            Id::CU_LAUNCH_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE,
            |v| v.clusterSchedulingPolicyPreference.0 = 1,
        ),
        attr(
            Id::CU_LAUNCH_ATTRIBUTE_NVLINK_UTIL_CENTRIC_SCHEDULING,
            |v| v.nvlinkUtilCentricScheduling = 1,
        ),
        attr(Id::CU_LAUNCH_ATTRIBUTE_PORTABLE_CLUSTER_SIZE_MODE, |v| {
            v.portableClusterSizeMode.0 = 2
        }),
        attr(Id::CU_LAUNCH_ATTRIBUTE_SHARED_MEMORY_MODE, |v| {
            v.sharedMemoryMode.0 = 1
        }),
    ];
    assert_eq!(run(&mut ok, &mut args), OK);
    assert_eq!(dtoh::<u32>(x, 64), vec![3; 64]);
    // Refused, each alone; none of them runs the kernel.
    let refused: Vec<(CUlaunchAttribute, CUresult)> = vec![
        (
            attr(Id::CU_LAUNCH_ATTRIBUTE_SYNCHRONIZATION_POLICY, |v| {
                v.syncPolicy.0 = 1
            }),
            INVALID_VALUE,
        ),
        (
            attr(Id::CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT, |v| {
                v.launchCompletionEvent.event = timed
            }),
            INVALID_VALUE,
        ),
        (
            attr(Id::CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT, |v| {
                v.launchCompletionEvent.event = quiet;
                v.launchCompletionEvent.flags = 1;
            }),
            INVALID_VALUE,
        ),
        (
            attr(Id::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT, |v| {
                v.programmaticEvent.event = 0x77 as CUevent
            }),
            CUresult::CUDA_ERROR_INVALID_HANDLE,
        ),
        (
            attr(Id::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION, |v| {
                v.clusterDim.x = 1;
                v.clusterDim.y = 2;
                v.clusterDim.z = 1;
            }),
            NOT_SUPPORTED,
        ),
        (
            attr(Id::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION, |_| {}),
            INVALID_VALUE,
        ),
        (
            attr(Id::CU_LAUNCH_ATTRIBUTE_DEVICE_UPDATABLE_KERNEL_NODE, |v| {
                v.deviceUpdatableKernelNode.deviceUpdatable = 1
            }),
            INVALID_VALUE,
        ),
        (
            attr(Id::CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN, |v| {
                v.memSyncDomain.0 = 2
            }),
            INVALID_VALUE,
        ),
        (
            attr(Id::CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN_MAP, |v| {
                v.memSyncDomainMap.default_ = 4
            }),
            INVALID_VALUE,
        ),
        (
            attr(Id::CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW, |v| {
                v.accessPolicyWindow.hitRatio = 1.5
            }),
            INVALID_VALUE,
        ),
        (
            attr(
                Id::CU_LAUNCH_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
                |v| v.sharedMemCarveout = 101,
            ),
            INVALID_VALUE,
        ),
        (
            attr(Id::CU_LAUNCH_ATTRIBUTE_PORTABLE_CLUSTER_SIZE_MODE, |v| {
                v.portableClusterSizeMode.0 = 3
            }),
            INVALID_VALUE,
        ),
        (
            attr(Id::CU_LAUNCH_ATTRIBUTE_SHARED_MEMORY_MODE, |v| {
                v.sharedMemoryMode.0 = 5
            }),
            INVALID_VALUE,
        ),
        (attr(CUlaunchAttributeID(15), |_| {}), INVALID_VALUE),
        (attr(Id::CU_LAUNCH_ATTRIBUTE_MAX, |_| {}), INVALID_VALUE),
    ];
    for (a, want) in refused {
        assert_eq!(run(&mut [a], &mut args), want, "attribute {}", a.id.0);
    }
    assert_eq!(dtoh::<u32>(x, 64), vec![3; 64]);
    destroy(ctx);
}

#[test]
fn cluster_occupancy_for_clusters_of_one_block() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    let f = get_fn(load_ptx(MUL_ADD), "mul_add");
    let (mut per_sm, mut sms, mut clusters, mut size) = (0, 0, -1, -1);
    let one = attr(
        CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION,
        |v| {
            v.clusterDim.x = 1;
            v.clusterDim.y = 1;
            v.clusterDim.z = 1;
        },
    );
    let mut two = one;
    two.value.clusterDim.x = 2;
    // SAFETY: live locals.
    unsafe {
        assert_eq!(
            cuOccupancyMaxActiveBlocksPerMultiprocessor(&mut per_sm, f, 64, 0),
            OK
        );
        assert_eq!(
            cuDeviceGetAttribute(
                &mut sms,
                CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
                0
            ),
            OK
        );
        let mut attrs = [one];
        let cfg = ex_config(&mut attrs);
        assert_eq!(cuOccupancyMaxActiveClusters(&mut clusters, f, &cfg), OK);
        assert_eq!(clusters, per_sm * sms);
        assert!(clusters > 0);
        // Larger clusters never fit; no cluster size at all is an error.
        let mut attrs = [two];
        let cfg = ex_config(&mut attrs);
        assert_eq!(cuOccupancyMaxActiveClusters(&mut clusters, f, &cfg), OK);
        assert_eq!(clusters, 0);
        let cfg = ex_config(&mut []);
        assert_eq!(
            cuOccupancyMaxActiveClusters(&mut clusters, f, &cfg),
            CUresult::CUDA_ERROR_INVALID_CLUSTER_SIZE
        );
        // The function's required cluster size answers when the config
        // has none, and must agree when it has one.
        let req = |a, v: c_int| cuFuncSetAttribute(f, a, v);
        assert_eq!(
            req(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_WIDTH,
                1
            ),
            OK
        );
        assert_eq!(
            req(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_HEIGHT,
                1
            ),
            OK
        );
        assert_eq!(
            req(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_DEPTH,
                1
            ),
            OK
        );
        assert_eq!(cuOccupancyMaxActiveClusters(&mut clusters, f, &cfg), OK);
        assert_eq!(clusters, per_sm * sms);
        let mut attrs = [two];
        let cfg = ex_config(&mut attrs);
        assert_eq!(
            cuOccupancyMaxActiveClusters(&mut clusters, f, &cfg),
            CUresult::CUDA_ERROR_INVALID_CLUSTER_SIZE
        );
        // The potential cluster size ignores the config's clusters.
        assert_eq!(cuOccupancyMaxPotentialClusterSize(&mut size, f, &cfg), OK);
        assert_eq!(size, 1);
        assert_eq!(
            cuOccupancyMaxPotentialClusterSize(null_mut(), f, &cfg),
            INVALID_VALUE
        );
        assert_eq!(
            cuOccupancyMaxPotentialClusterSize(&mut size, f, null()),
            INVALID_VALUE
        );
    }
    destroy(ctx);
}

/// A 128-byte, 128-aligned descriptor slot.
fn map_slot() -> Box<CUtensorMap> {
    Box::default()
}

#[test]
fn tensor_maps_are_validated_like_the_driver() {
    let _g = SERIAL.lock();
    let ctx = new_ctx();
    // A 64 x 32 float matrix, rows 256 bytes apart.
    let base = alloc(256 * 32);
    let dims = [64u64, 32];
    let strides = [256u64];
    let boxes = [32u32, 8];
    let estr = [1u32, 1];
    type T = CUtensorMapDataType;
    type I = CUtensorMapInterleave;
    type S = CUtensorMapSwizzle;
    type L = CUtensorMapL2promotion;
    type O = CUtensorMapFloatOOBfill;
    let tiled = |map: *mut CUtensorMap,
                 dt: T,
                 addr: CUdeviceptr,
                 strides: &[u64],
                 boxes: &[u32],
                 sw: S,
                 oob: O| {
        // SAFETY: live arrays of the rank's length and a writable slot
        // (or a deliberately misaligned one inside a larger buffer).
        unsafe {
            cuTensorMapEncodeTiled(
                map,
                dt,
                2,
                addr as *mut c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                boxes.as_ptr(),
                estr.as_ptr(),
                I::CU_TENSOR_MAP_INTERLEAVE_NONE,
                sw,
                L::CU_TENSOR_MAP_L2_PROMOTION_NONE,
                oob,
            )
        }
    };
    let f32t = T::CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
    let none = S::CU_TENSOR_MAP_SWIZZLE_NONE;
    let zero_fill = O::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE;
    let mut m = map_slot();
    assert_eq!(
        tiled(&mut *m, f32t, base, &strides, &boxes, none, zero_fill),
        OK
    );
    let encoded = m.opaque;
    assert_eq!(encoded[1], base);
    assert_eq!(&encoded[2..4], &dims);
    // The NaN fill is for floats only.
    let nan = O::CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA;
    assert_eq!(tiled(&mut *m, f32t, base, &strides, &boxes, none, nan), OK);
    assert_eq!(
        tiled(
            &mut *m,
            T::CU_TENSOR_MAP_DATA_TYPE_INT32,
            base,
            &strides,
            &boxes,
            none,
            nan
        ),
        INVALID_VALUE
    );
    // Address not 16-aligned; stride not a multiple of 16; box over 256 or
    // its inner bytes not a multiple of 16; a 32-byte swizzle with 128-byte
    // rows; an unknown type.
    assert_eq!(
        tiled(&mut *m, f32t, base + 8, &strides, &boxes, none, zero_fill),
        INVALID_VALUE
    );
    assert_eq!(
        tiled(&mut *m, f32t, base, &[260], &boxes, none, zero_fill),
        INVALID_VALUE
    );
    assert_eq!(
        tiled(&mut *m, f32t, base, &strides, &[257, 8], none, zero_fill),
        INVALID_VALUE
    );
    assert_eq!(
        tiled(&mut *m, f32t, base, &strides, &[2, 8], none, zero_fill),
        INVALID_VALUE
    );
    assert_eq!(
        tiled(
            &mut *m,
            f32t,
            base,
            &strides,
            &boxes,
            S::CU_TENSOR_MAP_SWIZZLE_32B,
            zero_fill
        ),
        INVALID_VALUE
    );
    assert_eq!(
        tiled(
            &mut *m,
            f32t,
            base,
            &strides,
            &[8, 8],
            S::CU_TENSOR_MAP_SWIZZLE_32B,
            zero_fill
        ),
        OK
    );
    assert_eq!(
        tiled(
            &mut *m,
            CUtensorMapDataType(16),
            base,
            &strides,
            &boxes,
            none,
            zero_fill
        ),
        INVALID_VALUE
    );
    // A descriptor slot that is not 64-byte aligned.
    let mut big = [CUtensorMap::default(); 2];
    let unaligned = (big.as_mut_ptr() as usize + 32) as *mut CUtensorMap;
    assert_eq!(
        tiled(unaligned, f32t, base, &strides, &boxes, none, zero_fill),
        INVALID_VALUE
    );
    // SAFETY: live slots and arrays.
    unsafe {
        // Rank 0 and 6.
        assert_eq!(
            cuTensorMapEncodeTiled(
                &mut *m,
                f32t,
                0,
                base as *mut c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                boxes.as_ptr(),
                estr.as_ptr(),
                I::CU_TENSOR_MAP_INTERLEAVE_NONE,
                none,
                L::CU_TENSOR_MAP_L2_PROMOTION_NONE,
                zero_fill,
            ),
            INVALID_VALUE
        );
        // Replacing the address: kept alignment only, and only in a
        // descriptor this library made.
        m.opaque = encoded;
        assert_eq!(
            cuTensorMapReplaceAddress(&mut *m, (base + 256) as *mut c_void),
            OK
        );
        assert_eq!(m.opaque[1], base + 256);
        assert_eq!(m.opaque[2..], encoded[2..]);
        assert_eq!(
            cuTensorMapReplaceAddress(&mut *m, (base + 4) as *mut c_void),
            INVALID_VALUE
        );
        let mut garbage = map_slot();
        garbage.opaque = [0x5a; 16];
        assert_eq!(
            cuTensorMapReplaceAddress(&mut *garbage, base as *mut c_void),
            INVALID_VALUE
        );

        // Im2col: NHWC 4D, 2 x 8 x 8 x 16 halves.
        let dims4 = [16u64, 8, 8, 2];
        let strides4 = [32u64, 256, 2048];
        let estr4 = [1u32; 4];
        let im2col =
            |lower: [c_int; 2], upper: [c_int; 2], channels: u32, map: &mut CUtensorMap| {
                cuTensorMapEncodeIm2col(
                    map,
                    T::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
                    4,
                    base as *mut c_void,
                    dims4.as_ptr(),
                    strides4.as_ptr(),
                    lower.as_ptr(),
                    upper.as_ptr(),
                    channels,
                    64,
                    estr4.as_ptr(),
                    I::CU_TENSOR_MAP_INTERLEAVE_NONE,
                    none,
                    L::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                    zero_fill,
                )
            };
        assert_eq!(im2col([-1, -1], [-1, -1], 16, &mut m), OK);
        // Corners out of the 8-bit range of a 4D tensor; an empty box;
        // too many channels.
        assert_eq!(im2col([-129, 0], [0, 0], 16, &mut m), INVALID_VALUE);
        assert_eq!(im2col([0, 0], [-8, 0], 16, &mut m), INVALID_VALUE);
        assert_eq!(im2col([0, 0], [0, 0], 257, &mut m), INVALID_VALUE);
    }
    destroy(ctx);
}
