//! End-to-end graphs, launch attributes, cluster occupancy, graph memory and
//! tensor maps: the real `vgpu` daemon with the software GPU as driver and a
//! `vgpu_transport::Client` as guest, sending the ops the guest shim will
//! send (docs/graphs.md). Expected values are computed on the CPU.

use cuda_types::cuda::{CUdevice_attribute, CUresult};
use vgpu_test_support::Daemon;
use vgpu_transport::codec::{to_bytes, Bytes};
use vgpu_transport::proto::{
    Call, EventCreate, EventDestroy, Flush, FunctionInfo, GetInventory, GraphExecDestroy,
    GraphExecSetEnabled, GraphExecSetNodes, GraphInstantiate, GraphLaunch, GraphMemAlloc,
    GraphMemFree, GraphNode, GraphUpload, LaunchAttr, LaunchKernel, MemAlloc, MemFree, MemcpyDtoH,
    MemcpyHtoD, ModuleGetFunction, ModuleLoadData, ModuleUnload, OccupancyAvailableDynamicSMem,
    OccupancyMaxActiveBlocks, OccupancyMaxActiveClusters, OccupancyMaxPotentialClusterSize,
    PrimaryCtxRetain, StreamCreate, StreamSynchronize, TensorMapEncodeIm2col, TensorMapEncodeTiled,
    TensorMapReplaceAddress, TENSOR_MAP_BYTES,
};
use vgpu_transport::{CallError, Client, Status};

const INVALID_VALUE: Status = Status::Cuda(CUresult::CUDA_ERROR_INVALID_VALUE);
const INVALID_HANDLE: Status = Status::Cuda(CUresult::CUDA_ERROR_INVALID_HANDLE);
const NOT_SUPPORTED: Status = Status::Cuda(CUresult::CUDA_ERROR_NOT_SUPPORTED);
const OUT_OF_MEMORY: Status = Status::Cuda(CUresult::CUDA_ERROR_OUT_OF_MEMORY);

/// p[i] = p[i] * mul + add for i < n (u32, wrapping).
const MUL_ADD: &str = include_str!("../../vgpu-emu/src/tests/mul_add.ptx");

const MIB: u64 = 1 << 20;

fn mul_add(x: u32, mul: u32, add: u32) -> u32 {
    x.wrapping_mul(mul).wrapping_add(add)
}

#[track_caller]
fn status<T: std::fmt::Debug>(r: Result<T, CallError>) -> Status {
    match r {
        Err(CallError::Status(s)) => s,
        other => panic!("expected an error status, got {other:?}"),
    }
}

#[track_caller]
fn ok<T>(r: Result<T, CallError>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e:?}"),
    }
}

/// The status a deferred call failed with (reported by the next Flush).
#[track_caller]
fn deferred<C: Call<Reply = ()>>(c: &mut Client, call: &C) -> Status {
    c.call(call).unwrap();
    status(c.call(&Flush {}))
}

/// Queues a deferred call and requires the next Flush to report nothing.
#[track_caller]
fn run<C: Call<Reply = ()>>(c: &mut Client, call: &C) {
    c.call(call).unwrap();
    ok(c.call(&Flush {}), C::NAME);
}

fn primary(c: &mut Client) -> u64 {
    c.call(&PrimaryCtxRetain { device: 0 }).unwrap()
}

fn alloc(c: &mut Client, ctx: u64, size: u64) -> u64 {
    ok(c.call(&MemAlloc { ctx, size }), "MemAlloc")
}

fn put(c: &mut Client, ctx: u64, dst: u64, v: &[u32]) {
    let data = Bytes(v.iter().flat_map(|x| x.to_le_bytes()).collect());
    ok(c.call(&MemcpyHtoD { ctx, dst, data }), "MemcpyHtoD");
}

fn get(c: &mut Client, ctx: u64, src: u64, n: usize) -> Vec<u32> {
    let b = ok(
        c.call(&MemcpyDtoH {
            ctx,
            src,
            size: 4 * n as u64,
        }),
        "MemcpyDtoH",
    );
    b.0.chunks_exact(4)
        .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
        .collect()
}

/// The module's `mul_add` in `ctx`: (module, function).
fn mul_add_fn(c: &mut Client, ctx: u64) -> (u64, FunctionInfo) {
    let module = ok(
        c.call(&ModuleLoadData {
            ctx,
            image: Bytes(MUL_ADD.as_bytes().to_vec()),
        }),
        "ModuleLoadData",
    );
    let f = ok(
        c.call(&ModuleGetFunction {
            module,
            name: "mul_add".into(),
        }),
        "ModuleGetFunction",
    );
    // u64 p, u32 mul, u32 add, u32 n
    assert_eq!(f.params, Some(vec![(0, 8), (8, 4), (12, 4), (16, 4)]));
    (module, f)
}

/// The packed arguments of `mul_add`.
fn args(p: u64, mul: u32, add: u32, n: u32) -> Bytes {
    let mut b = p.to_le_bytes().to_vec();
    for v in [mul, add, n] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    Bytes(b)
}

fn kernel(func: u64, p: u64, (mul, add): (u32, u32), n: u32) -> GraphNode {
    GraphNode::Kernel {
        func,
        grid: [n.div_ceil(64), 1, 1],
        block: [64, 1, 1],
        shared_mem: 0,
        params: args(p, mul, add, n),
        attrs: Vec::new(),
    }
}

fn memset32(dst: u64, value: u32, n: u64) -> GraphNode {
    GraphNode::Memset {
        dst,
        pitch: 0,
        value,
        elem_size: 4,
        width: n,
        height: 1,
    }
}

fn copy(dst: u64, src: u64, bytes: u64) -> GraphNode {
    GraphNode::Memcpy {
        dst,
        dst_pitch: bytes,
        dst_height: 1,
        src,
        src_pitch: bytes,
        src_height: 1,
        width: bytes,
        height: 1,
        depth: 1,
    }
}

fn instantiate(
    c: &mut Client,
    ctx: u64,
    nodes: Vec<GraphNode>,
    edges: Vec<(u32, u32)>,
) -> Result<u64, CallError> {
    c.call(&GraphInstantiate {
        ctx,
        nodes,
        edges,
        flags: 0,
    })
}

#[test]
fn memset_kernel_copy_graph_replayed_updated_and_toggled() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let ctx = primary(&mut c);
    let (_, f) = mul_add_fn(&mut c, ctx);
    let n = 300u32;
    let (x, y) = (alloc(&mut c, ctx, 4 * 300), alloc(&mut c, ctx, 4 * 300));
    // x := 1, x := 3x + 2, y := x. The edges go backwards against the
    // node indices on purpose: the worker must add the nodes in edge order.
    let nodes = vec![
        copy(y, x, 4 * u64::from(n)),
        kernel(f.handle, x, (3, 2), n),
        memset32(x, 1, u64::from(n)),
    ];
    let exec = ok(
        instantiate(&mut c, ctx, nodes, vec![(2, 1), (1, 0)]),
        "GraphInstantiate",
    );
    let stream = ok(
        c.call(&StreamCreate {
            ctx,
            flags: 0,
            priority: 0,
        }),
        "StreamCreate",
    );
    run(&mut c, &GraphUpload { exec, stream });
    for replay in 0..5u32 {
        // Garbage in y between replays: each replay must write it again.
        put(&mut c, ctx, y, &vec![0xdead_0000 + replay; n as usize]);
        run(&mut c, &GraphLaunch { exec, stream });
        ok(c.call(&StreamSynchronize { stream }), "StreamSynchronize");
        assert_eq!(
            get(&mut c, ctx, y, n as usize),
            vec![mul_add(1, 3, 2); n as usize]
        );
    }

    // New kernel arguments and memset value, in one message.
    run(
        &mut c,
        &GraphExecSetNodes {
            exec,
            updates: vec![
                (1, kernel(f.handle, x, (7, 5), n)),
                (2, memset32(x, 4, u64::from(n))),
            ],
        },
    );
    run(&mut c, &GraphLaunch { exec, stream: 0 });
    assert_eq!(
        get(&mut c, ctx, y, n as usize),
        vec![mul_add(4, 7, 5); n as usize]
    );
    // An update must keep each node's kind and a kernel's attributes.
    let kinds = GraphExecSetNodes {
        exec,
        updates: vec![(1, memset32(x, 4, u64::from(n)))],
    };
    assert_eq!(deferred(&mut c, &kinds), INVALID_VALUE);
    let mut with_attr = kernel(f.handle, x, (7, 5), n);
    if let GraphNode::Kernel { attrs, .. } = &mut with_attr {
        attrs.push(LaunchAttr::Priority { priority: -1 });
    }
    let attrs = GraphExecSetNodes {
        exec,
        updates: vec![(1, with_attr)],
    };
    assert_eq!(deferred(&mut c, &attrs), NOT_SUPPORTED);
    let out_of_range = GraphExecSetNodes {
        exec,
        updates: vec![(3, GraphNode::Empty {})],
    };
    assert_eq!(deferred(&mut c, &out_of_range), INVALID_VALUE);

    // The kernel disabled: y is the memset value.
    run(
        &mut c,
        &GraphExecSetEnabled {
            exec,
            index: 1,
            enabled: false,
        },
    );
    run(&mut c, &GraphLaunch { exec, stream: 0 });
    assert_eq!(get(&mut c, ctx, y, n as usize), vec![4; n as usize]);
    run(
        &mut c,
        &GraphExecSetEnabled {
            exec,
            index: 1,
            enabled: true,
        },
    );
    run(&mut c, &GraphLaunch { exec, stream: 0 });
    assert_eq!(
        get(&mut c, ctx, y, n as usize),
        vec![mul_add(4, 7, 5); n as usize]
    );

    ok(c.call(&GraphExecDestroy { exec }), "GraphExecDestroy");
    assert_eq!(status(c.call(&GraphExecDestroy { exec })), INVALID_VALUE);
    assert_eq!(
        deferred(&mut c, &GraphLaunch { exec, stream: 0 }),
        INVALID_VALUE
    );
}

#[test]
fn other_sessions_and_stale_handles_are_refused() {
    let d = Daemon::start(&[]);
    let mut a = d.connect();
    let mut b = d.connect();
    let (ctx_a, ctx_b) = (primary(&mut a), primary(&mut b));
    let (module_a, fa) = mul_add_fn(&mut a, ctx_a);
    let xa = alloc(&mut a, ctx_a, 256);
    let ev_a = ok(
        a.call(&EventCreate {
            ctx: ctx_a,
            flags: 0,
        }),
        "EventCreate",
    );
    let exec_a = ok(
        instantiate(
            &mut a,
            ctx_a,
            vec![kernel(fa.handle, xa, (1, 1), 64)],
            vec![],
        ),
        "GraphInstantiate",
    );
    run(
        &mut a,
        &GraphLaunch {
            exec: exec_a,
            stream: 0,
        },
    );
    assert_eq!(get(&mut a, ctx_a, xa, 1), vec![1]);

    // Session B names A's function, event, memory and exec.
    let xb = alloc(&mut b, ctx_b, 256);
    let foreign = [
        (kernel(fa.handle, xb, (1, 1), 64), INVALID_HANDLE),
        (GraphNode::EventRecord { event: ev_a }, INVALID_HANDLE),
        (memset32(xa, 0, 64), INVALID_VALUE),
        (copy(xb, xa, 256), INVALID_VALUE),
    ];
    for (node, want) in foreign {
        assert_eq!(
            status(instantiate(&mut b, ctx_b, vec![node.clone()], vec![])),
            want,
            "{node:?}"
        );
    }
    assert_eq!(
        deferred(
            &mut b,
            &GraphLaunch {
                exec: exec_a,
                stream: 0
            }
        ),
        INVALID_VALUE
    );
    assert_eq!(
        status(b.call(&GraphExecDestroy { exec: exec_a })),
        INVALID_VALUE
    );
    // A's context handle in B.
    assert_eq!(
        status(instantiate(
            &mut b,
            ctx_a,
            vec![GraphNode::Empty {}],
            vec![]
        )),
        Status::Cuda(CUresult::CUDA_ERROR_INVALID_CONTEXT)
    );

    // In A: an event record node whose event is destroyed, and a kernel
    // node whose module is unloaded, stop the exec from launching.
    let ev_exec = ok(
        instantiate(
            &mut a,
            ctx_a,
            vec![GraphNode::EventRecord { event: ev_a }],
            vec![],
        ),
        "GraphInstantiate",
    );
    run(
        &mut a,
        &GraphLaunch {
            exec: ev_exec,
            stream: 0,
        },
    );
    ok(a.call(&EventDestroy { event: ev_a }), "EventDestroy");
    assert_eq!(
        deferred(
            &mut a,
            &GraphLaunch {
                exec: ev_exec,
                stream: 0
            }
        ),
        INVALID_HANDLE
    );
    ok(a.call(&ModuleUnload { module: module_a }), "ModuleUnload");
    assert_eq!(
        deferred(
            &mut a,
            &GraphLaunch {
                exec: exec_a,
                stream: 0
            }
        ),
        INVALID_HANDLE
    );
    assert_eq!(get(&mut a, ctx_a, xa, 1), vec![1]);
}

#[test]
fn nodes_outside_the_session_or_not_a_dag_are_refused_at_instantiate() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let ctx = primary(&mut c);
    let (_, f) = mul_add_fn(&mut c, ctx);
    let x = alloc(&mut c, ctx, 256);
    let refused = [
        // One element past the allocation, memory nobody allocated.
        (vec![memset32(x, 0, 65)], vec![]),
        (vec![memset32(0x1000, 0, 1)], vec![]),
        (vec![copy(x + 4, x, 256)], vec![]),
        (vec![copy(x, x + 1, 256)], vec![]),
        // An element size the driver does not have; rows overlapping.
        (
            vec![GraphNode::Memset {
                dst: x,
                pitch: 0,
                value: 0,
                elem_size: 3,
                width: 4,
                height: 1,
            }],
            vec![],
        ),
        (
            vec![GraphNode::Memset {
                dst: x,
                pitch: 8,
                value: 0,
                elem_size: 4,
                width: 4,
                height: 2,
            }],
            vec![],
        ),
        // Arguments shorter than the kernel's.
        (
            vec![GraphNode::Kernel {
                func: f.handle,
                grid: [1; 3],
                block: [64, 1, 1],
                shared_mem: 0,
                params: Bytes(vec![0; 12]),
                attrs: vec![],
            }],
            vec![],
        ),
        // Edges out of range, looping, repeated, cyclic.
        (vec![GraphNode::Empty {}], vec![(0, 1)]),
        (vec![GraphNode::Empty {}], vec![(0, 0)]),
        (
            vec![GraphNode::Empty {}, GraphNode::Empty {}],
            vec![(0, 1), (0, 1)],
        ),
        (
            vec![
                GraphNode::Empty {},
                GraphNode::Empty {},
                GraphNode::Empty {},
            ],
            vec![(0, 1), (1, 2), (2, 0)],
        ),
    ];
    for (nodes, edges) in refused {
        assert_eq!(
            status(instantiate(&mut c, ctx, nodes.clone(), edges.clone())),
            INVALID_VALUE,
            "{nodes:?} {edges:?}"
        );
    }
    // Memory freed after instantiation: the launch is refused, and the
    // session goes on.
    let exec = ok(
        instantiate(&mut c, ctx, vec![memset32(x, 7, 64)], vec![]),
        "GraphInstantiate",
    );
    run(&mut c, &GraphLaunch { exec, stream: 0 });
    ok(c.call(&MemFree { ctx, ptr: x }), "MemFree");
    assert_eq!(
        deferred(&mut c, &GraphLaunch { exec, stream: 0 }),
        INVALID_VALUE
    );
    // The update path checks ranges too.
    let y = alloc(&mut c, ctx, 256);
    let bad = GraphExecSetNodes {
        exec,
        updates: vec![(0, memset32(y + 4, 7, 64))],
    };
    assert_eq!(deferred(&mut c, &bad), INVALID_VALUE);
    run(
        &mut c,
        &GraphExecSetNodes {
            exec,
            updates: vec![(0, memset32(y, 7, 64))],
        },
    );
    run(&mut c, &GraphLaunch { exec, stream: 0 });
    assert_eq!(get(&mut c, ctx, y, 64), vec![7; 64]);
}

#[test]
fn a_graph_launch_is_one_small_frame_whatever_the_graph_size() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let ctx = primary(&mut c);
    let (_, f) = mul_add_fn(&mut c, ctx);
    let n = 40u32;
    let x = alloc(&mut c, ctx, 4 * 40);
    let start: Vec<u32> = (0..n).map(|i| i * 31 + 7).collect();
    put(&mut c, ctx, x, &start);
    let steps: Vec<(u32, u32)> = (0..256u32).map(|i| (i | 1, 3 * i + 2)).collect();
    let nodes: Vec<GraphNode> = steps.iter().map(|&s| kernel(f.handle, x, s, n)).collect();
    let edges: Vec<(u32, u32)> = (0..255).map(|i| (i, i + 1)).collect();
    let big = ok(instantiate(&mut c, ctx, nodes, edges), "GraphInstantiate");
    let small = ok(
        instantiate(&mut c, ctx, vec![GraphNode::Empty {}], vec![]),
        "GraphInstantiate",
    );
    let launch = |exec| GraphLaunch { exec, stream: 0 };
    assert_eq!(to_bytes(&launch(big)).len(), to_bytes(&launch(small)).len());
    let mut want = start;
    for replay in 0..3 {
        assert_eq!(c.queued_calls(), 0);
        c.call(&launch(big)).unwrap();
        // One frame queued for the whole 256-kernel graph.
        assert_eq!(c.queued_calls(), 1, "replay {replay}");
        ok(c.call(&Flush {}), "Flush");
        for v in &mut want {
            for &(m, a) in &steps {
                *v = mul_add(*v, m, a);
            }
        }
        assert_eq!(get(&mut c, ctx, x, n as usize), want, "replay {replay}");
    }
}

#[test]
fn graph_memory_is_the_sessions_and_counts_in_its_quota() {
    let d = Daemon::start(&["--quota-mib", "64"]);
    let mut c = d.connect();
    let ctx = primary(&mut c);
    assert_eq!(
        status(c.call(&GraphMemAlloc {
            ctx,
            size: 65 * MIB
        })),
        OUT_OF_MEMORY
    );
    let g = ok(
        c.call(&GraphMemAlloc {
            ctx,
            size: 48 * MIB,
        }),
        "GraphMemAlloc",
    );
    // The quota counts it: 32 MiB more do not fit, by either op.
    assert_eq!(
        status(c.call(&MemAlloc {
            ctx,
            size: 32 * MIB
        })),
        OUT_OF_MEMORY
    );
    assert_eq!(
        status(c.call(&GraphMemAlloc {
            ctx,
            size: 32 * MIB
        })),
        OUT_OF_MEMORY
    );
    // Graph memory is range-checked like any allocation.
    let exec = ok(
        instantiate(&mut c, ctx, vec![memset32(g + 4 * MIB, 0x5a5a, 16)], vec![]),
        "GraphInstantiate",
    );
    run(&mut c, &GraphLaunch { exec, stream: 0 });
    assert_eq!(get(&mut c, ctx, g + 4 * MIB, 16), vec![0x5a5a; 16]);
    assert_eq!(
        status(instantiate(
            &mut c,
            ctx,
            vec![memset32(g + 48 * MIB - 4, 0, 2)],
            vec![]
        )),
        INVALID_VALUE
    );
    // Only graph memory is freed by GraphMemFree, once.
    let plain = alloc(&mut c, ctx, MIB);
    assert_eq!(
        status(c.call(&GraphMemFree { ctx, ptr: plain })),
        INVALID_VALUE
    );
    assert_eq!(
        status(c.call(&GraphMemFree { ctx, ptr: g + 1 })),
        INVALID_VALUE
    );
    ok(c.call(&GraphMemFree { ctx, ptr: g }), "GraphMemFree");
    assert_eq!(status(c.call(&GraphMemFree { ctx, ptr: g })), INVALID_VALUE);
    assert_eq!(
        deferred(&mut c, &GraphLaunch { exec, stream: 0 }),
        INVALID_VALUE
    );
    ok(
        c.call(&MemAlloc {
            ctx,
            size: 32 * MIB,
        }),
        "MemAlloc after the free",
    );
}

#[test]
fn launch_attributes_reach_the_driver() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let ctx = primary(&mut c);
    let (_, f) = mul_add_fn(&mut c, ctx);
    let x = alloc(&mut c, ctx, 4 * 64);
    put(&mut c, ctx, x, &[5; 64]);
    // 2 = CU_EVENT_DISABLE_TIMING, as completion events must be.
    let quiet = ok(c.call(&EventCreate { ctx, flags: 2 }), "EventCreate");
    let timed = ok(c.call(&EventCreate { ctx, flags: 0 }), "EventCreate");
    let launch = |attrs: Vec<LaunchAttr>| LaunchKernel {
        ctx,
        func: f.handle,
        grid: [1, 1, 1],
        block: [64, 1, 1],
        shared_mem: 0,
        stream: 0,
        params: args(x, 3, 1, 64),
        cooperative: false,
        attrs,
    };
    run(
        &mut c,
        &launch(vec![
            LaunchAttr::Priority { priority: -2 },
            LaunchAttr::ClusterDimension { dim: [1, 1, 1] },
            LaunchAttr::ProgrammaticStreamSerialization { allowed: 1 },
            LaunchAttr::LaunchCompletionEvent {
                event: quiet,
                flags: 0,
            },
            LaunchAttr::MemSyncDomain { domain: 1 },
        ]),
    );
    assert_eq!(get(&mut c, ctx, x, 64), vec![16; 64]);
    // Cooperative, through the attribute and through the flag.
    run(&mut c, &launch(vec![LaunchAttr::Cooperative { value: 1 }]));
    let mut flagged = launch(vec![LaunchAttr::Priority { priority: 0 }]);
    flagged.cooperative = true;
    run(&mut c, &flagged);
    assert_eq!(
        get(&mut c, ctx, x, 64),
        vec![mul_add(mul_add(16, 3, 1), 3, 1); 64]
    );
    // What the software GPU refuses reaches it, and comes back.
    let refused = [
        (
            LaunchAttr::ClusterDimension { dim: [2, 1, 1] },
            NOT_SUPPORTED,
        ),
        (
            LaunchAttr::SynchronizationPolicy { policy: 1 },
            INVALID_VALUE,
        ),
        (
            LaunchAttr::LaunchCompletionEvent {
                event: timed,
                flags: 0,
            },
            INVALID_VALUE,
        ),
        // The worker's own refusals: an unknown event, a device-updatable node.
        (
            LaunchAttr::ProgrammaticEvent {
                event: 0x1234,
                flags: 0,
                trigger_at_block_start: 0,
            },
            INVALID_HANDLE,
        ),
        (
            LaunchAttr::DeviceUpdatableKernelNode {
                device_updatable: 1,
            },
            NOT_SUPPORTED,
        ),
    ];
    for (a, want) in refused {
        assert_eq!(deferred(&mut c, &launch(vec![a.clone()])), want, "{a:?}");
    }
    assert_eq!(
        get(&mut c, ctx, x, 64),
        vec![mul_add(mul_add(16, 3, 1), 3, 1); 64]
    );
    // Kernel nodes carry attributes too.
    let mut node = kernel(f.handle, x, (1, 1), 64);
    if let GraphNode::Kernel { attrs, .. } = &mut node {
        attrs.push(LaunchAttr::Priority { priority: -1 });
    }
    let exec = ok(
        instantiate(&mut c, ctx, vec![node.clone()], vec![]),
        "GraphInstantiate",
    );
    run(&mut c, &GraphLaunch { exec, stream: 0 });
    if let GraphNode::Kernel { attrs, .. } = &mut node {
        attrs[0] = LaunchAttr::ClusterDimension { dim: [4, 1, 1] };
    }
    assert_eq!(
        status(instantiate(&mut c, ctx, vec![node], vec![])),
        NOT_SUPPORTED
    );
}

#[test]
fn cluster_and_shared_memory_occupancy() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let ctx = primary(&mut c);
    let (_, f) = mul_add_fn(&mut c, ctx);
    let inv = c.call(&GetInventory {}).unwrap();
    let sms = inv.devices[0]
        .attributes
        .iter()
        .find(|(a, _)| *a == CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT.0 as i32)
        .map(|&(_, v)| v)
        .expect("SM count in the inventory");
    let per_sm = ok(
        c.call(&OccupancyMaxActiveBlocks {
            func: f.handle,
            block_size: 128,
            dynamic_smem: 0,
            flags: 0,
        }),
        "OccupancyMaxActiveBlocks",
    );
    let clusters = |attrs| OccupancyMaxActiveClusters {
        func: f.handle,
        grid: [8, 1, 1],
        block: [128, 1, 1],
        shared_mem: 0,
        attrs,
    };
    let one = vec![LaunchAttr::ClusterDimension { dim: [1, 1, 1] }];
    assert_eq!(ok(c.call(&clusters(one.clone())), "clusters"), per_sm * sms);
    assert_eq!(
        status(c.call(&clusters(vec![]))),
        Status::Cuda(CUresult::CUDA_ERROR_INVALID_CLUSTER_SIZE)
    );
    let size = OccupancyMaxPotentialClusterSize {
        func: f.handle,
        grid: [8, 1, 1],
        block: [128, 1, 1],
        shared_mem: 0,
        attrs: one,
    };
    assert_eq!(ok(c.call(&size), "cluster size"), 1);
    // cuBLAS's question: with 2 blocks of 256 threads per SM, each may have
    // half the SM's 228 KiB less the 1 KiB the driver reserves per block.
    let avail = ok(
        c.call(&OccupancyAvailableDynamicSMem {
            func: f.handle,
            num_blocks: 2,
            block_size: 256,
        }),
        "OccupancyAvailableDynamicSMem",
    );
    assert_eq!(avail, 228 * 1024 / 2 - 1024);
    assert_eq!(
        status(c.call(&OccupancyAvailableDynamicSMem {
            func: 0x77,
            num_blocks: 2,
            block_size: 256,
        })),
        INVALID_HANDLE
    );
}

#[test]
fn tensor_maps_are_encoded_by_the_host_over_the_sessions_memory() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let ctx = primary(&mut c);
    // A 64 x 32 float matrix, rows 256 bytes apart: 32 * 256 bytes.
    let base = alloc(&mut c, ctx, 256 * 32);
    let other = alloc(&mut c, ctx, 256 * 32);
    let tiled = |addr: u64, rows: u64| TensorMapEncodeTiled {
        ctx,
        data_type: 7, // FLOAT32
        rank: 2,
        global_address: addr,
        global_dim: vec![64, rows],
        global_strides: vec![256],
        box_dim: vec![32, 8],
        element_strides: vec![1, 1],
        interleave: 0,
        swizzle: 0,
        l2_promotion: 0,
        oob_fill: 0,
    };
    let map = ok(c.call(&tiled(base, 32)), "TensorMapEncodeTiled");
    assert_eq!(map.0.len(), TENSOR_MAP_BYTES);
    // A tensor reaching one row past the allocation; arrays not matching
    // the rank; the driver's own refusal (a misaligned address).
    assert_eq!(status(c.call(&tiled(base, 33))), INVALID_VALUE);
    let mut short = tiled(base, 32);
    short.box_dim.pop();
    assert_eq!(status(c.call(&short)), INVALID_VALUE);
    assert_eq!(status(c.call(&tiled(base + 4, 31))), INVALID_VALUE);
    // Replacing the address keeps the geometry, so the new place must
    // hold the whole tensor too.
    let moved = ok(
        c.call(&TensorMapReplaceAddress {
            ctx,
            map: map.clone(),
            global_address: other,
        }),
        "TensorMapReplaceAddress",
    );
    assert_eq!(moved.0.len(), TENSOR_MAP_BYTES);
    assert_ne!(moved, map);
    let again = ok(
        c.call(&TensorMapReplaceAddress {
            ctx,
            map: moved,
            global_address: base,
        }),
        "TensorMapReplaceAddress",
    );
    assert_eq!(again, map);
    assert_eq!(
        status(c.call(&TensorMapReplaceAddress {
            ctx,
            map: map.clone(),
            global_address: other + 256,
        })),
        INVALID_VALUE
    );
    // A descriptor the host never encoded, and one of the wrong size.
    for bad in [vec![0x5a; TENSOR_MAP_BYTES], vec![0; 64]] {
        assert_eq!(
            status(c.call(&TensorMapReplaceAddress {
                ctx,
                map: Bytes(bad),
                global_address: base,
            })),
            INVALID_VALUE
        );
    }
    // Im2col: NHWC 2 x 8 x 8 x 16 halves in the first 4 KiB.
    let im2col = TensorMapEncodeIm2col {
        ctx,
        data_type: 6, // FLOAT16
        rank: 4,
        global_address: base,
        global_dim: vec![16, 8, 8, 2],
        global_strides: vec![32, 256, 2048],
        lower_corner: vec![-1, -1],
        upper_corner: vec![-1, -1],
        channels_per_pixel: 16,
        pixels_per_column: 64,
        element_strides: vec![1; 4],
        interleave: 0,
        swizzle: 0,
        l2_promotion: 0,
        oob_fill: 0,
    };
    assert_eq!(
        ok(c.call(&im2col), "TensorMapEncodeIm2col").0.len(),
        TENSOR_MAP_BYTES
    );
    let mut wrong_corners = im2col.clone();
    wrong_corners.upper_corner.push(0);
    assert_eq!(status(c.call(&wrong_corners)), INVALID_VALUE);
    let mut past = im2col;
    past.global_address = base + 256 * 32 - 2048;
    assert_eq!(status(c.call(&past)), INVALID_VALUE);
}
