//! End-to-end modules, launches, events, linking and NO_REPLY batching:
//! the real `vgpu` daemon with the software GPU as driver, a
//! `vgpu_transport::Client` as guest, deferred calls queued by
//! `Client::call` (frames with `FLAG_NO_REPLY`) as the shim queues them.
//!
//! Everything here needs the software GPU's module and launch support, which
//! it has: any error, CUDA_ERROR_NOT_SUPPORTED included, fails the test.

use cuda_types::cuda::CUresult;
use std::time::Instant;
use vgpu_test_support::Daemon;
use vgpu_transport::codec::Bytes;
use vgpu_transport::proto::{
    Call, CtxSynchronize, EventCreate, EventDestroy, EventElapsedTime, EventQuery, EventRecord,
    EventSynchronize, Flush, FuncGetAttribute, FuncSetCacheConfig, FunctionInfo, KernelGetFunction,
    LaunchKernel, LibraryGetKernel, LibraryGetModule, LibraryLoadData, LibraryUnload, LinkComplete,
    LinkInput, MemAlloc, MemcpyDtoH, MemcpyHtoD, ModuleGetFunction, ModuleGetGlobal,
    ModuleLoadData, ModuleUnload, OccupancyMaxPotentialBlockSize, PrimaryCtxRetain, StreamCreate,
    StreamSynchronize, StreamWaitEvent,
};
use vgpu_transport::{CallError, Client, Status};

const INVALID_VALUE: Status = Status::Cuda(CUresult::CUDA_ERROR_INVALID_VALUE);
const INVALID_HANDLE: Status = Status::Cuda(CUresult::CUDA_ERROR_INVALID_HANDLE);
const NOT_FOUND: Status = Status::Cuda(CUresult::CUDA_ERROR_NOT_FOUND);
const ILLEGAL_ADDRESS: Status = Status::Cuda(CUresult::CUDA_ERROR_ILLEGAL_ADDRESS);

/// nvcc 13.5's PTX for crates/vgpu-ptx/tests/cuda/kernels.cu (vadd, oob_write ...).
const KERNELS_PTX: &str = include_str!("../../vgpu-ptx/tests/cuda/kernels_sm80.ptx");

/// A module global and a kernel that adds to it.
const GLOBAL_PTX: &str = r#"
.version 7.0
.target sm_80
.address_size 64

.visible .global .align 4 .u32 counter = 5;

.visible .entry bump(
	.param .u32 bump_param_0
)
{
	.reg .b32 	%r<4>;
	.reg .b64 	%rd<2>;

	ld.param.u32 	%r1, [bump_param_0];
	mov.u64 	%rd1, counter;
	ld.global.u32 	%r2, [%rd1];
	add.s32 	%r3, %r2, %r1;
	st.global.u32 	[%rd1], %r3;
	ret;
}
"#;

#[track_caller]
fn status<T: std::fmt::Debug>(r: Result<T, CallError>) -> Status {
    match r {
        Err(CallError::Status(s)) => s,
        other => panic!("expected an error status, got {other:?}"),
    }
}

/// The status a deferred call failed with: it is queued without a reply,
/// and the next `Flush` reports it.
#[track_caller]
fn deferred<C: Call<Reply = ()>>(c: &mut Client, call: &C) -> Status {
    c.call(call).unwrap();
    status(c.call(&Flush {}))
}

/// The value of a call that must succeed; an error names the driver call.
#[track_caller]
fn ok<T>(r: Result<T, CallError>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e:?}"),
    }
}

/// Deferred calls queued the way a guest queues them (frames with
/// FLAG_NO_REPLY, no reply awaited), then written in one go.
struct Batch<'a>(&'a mut Client);

impl Batch<'_> {
    #[track_caller]
    fn push<C: Call<Reply = ()>>(&mut self, call: &C) -> &mut Self {
        assert!(!C::META.answered(), "{} is not a deferred op", C::NAME);
        self.0.call(call).unwrap();
        self
    }

    fn send(&mut self) {
        self.0.flush_queued().unwrap();
    }
}

fn primary(c: &mut Client) -> u64 {
    c.call(&PrimaryCtxRetain { device: 0 }).unwrap()
}

fn alloc_with(c: &mut Client, ctx: u64, data: &[u8]) -> u64 {
    let p = c
        .call(&MemAlloc {
            ctx,
            size: data.len() as u64,
        })
        .unwrap();
    c.call(&MemcpyHtoD {
        ctx,
        dst: p,
        data: Bytes(data.to_vec()),
    })
    .unwrap();
    p
}

fn dtoh(c: &mut Client, ctx: u64, src: u64, size: u64) -> Result<Vec<u8>, CallError> {
    c.call(&MemcpyDtoH { ctx, src, size }).map(|b| b.0)
}

fn floats(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn to_floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Packs arguments at the offsets the host reported.
fn pack(info: &FunctionInfo, args: &[&[u8]]) -> Bytes {
    let params = info.params.as_deref().expect("the host knows the layout");
    assert_eq!(params.len(), args.len(), "layout {params:?}");
    let size = params
        .iter()
        .map(|&(o, s)| (o + s) as usize)
        .max()
        .unwrap_or(0);
    let mut buf = vec![0u8; size];
    for (&(off, sz), a) in params.iter().zip(args) {
        assert_eq!(sz as usize, a.len());
        buf[off as usize..off as usize + a.len()].copy_from_slice(a);
    }
    Bytes(buf)
}

/// The kernels module loaded in `ctx`.
#[track_caller]
fn load(c: &mut Client, ctx: u64, ptx: &str) -> u64 {
    ok(
        c.call(&ModuleLoadData {
            ctx,
            image: Bytes(ptx.as_bytes().to_vec()),
        }),
        "cuModuleLoadData",
    )
}

fn function(c: &mut Client, module: u64, name: &str) -> FunctionInfo {
    c.call(&ModuleGetFunction {
        module,
        name: name.into(),
    })
    .unwrap()
}

fn launch(ctx: u64, func: u64, grid: u32, block: u32, stream: u64, params: Bytes) -> LaunchKernel {
    LaunchKernel {
        ctx,
        func,
        grid: [grid, 1, 1],
        block: [block, 1, 1],
        shared_mem: 0,
        stream,
        params,
        cooperative: false,
        attrs: Vec::new(),
    }
}

/// Inputs and the vadd launch for `n` floats: (a, b, c pointers, launch).
fn vadd_setup(
    c: &mut Client,
    ctx: u64,
    vadd: &FunctionInfo,
    n: usize,
) -> (Vec<f32>, u64, LaunchKernel) {
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..n).map(|i| 0.5 * i as f32 + 1.0).collect();
    let pa = alloc_with(c, ctx, &floats(&a));
    let pb = alloc_with(c, ctx, &floats(&b));
    let pc = alloc_with(c, ctx, &vec![0u8; n * 4]);
    let params = pack(
        vadd,
        &[
            &pa.to_le_bytes(),
            &pb.to_le_bytes(),
            &pc.to_le_bytes(),
            &(n as i32).to_le_bytes(),
        ],
    );
    let want = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    let blocks = n.div_ceil(128) as u32;
    (want, pc, launch(ctx, vadd.handle, blocks, 128, 0, params))
}

#[test]
fn vadd_batched_on_a_stream_then_flush() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let ctx = primary(&mut c);
    let m = load(&mut c, ctx, KERNELS_PTX);
    let vadd = function(&mut c, m, "vadd");
    // const float *a, const float *b, float *c, int n
    assert_eq!(vadd.params, Some(vec![(0, 8), (8, 8), (16, 8), (24, 4)]));
    // Asking again gives the same function.
    assert_eq!(function(&mut c, m, "vadd"), vadd);
    assert_eq!(
        status(c.call(&ModuleGetFunction {
            module: m,
            name: "no_such_kernel".into()
        })),
        NOT_FOUND
    );

    let stream = c
        .call(&StreamCreate {
            ctx,
            flags: 0,
            priority: 0,
        })
        .unwrap();
    let n = 1000;
    let (want, pc, mut l) = vadd_setup(&mut c, ctx, &vadd, n);
    l.stream = stream;
    Batch(&mut c).push(&l).send();
    c.call(&Flush {}).unwrap();
    c.call(&StreamSynchronize { stream }).unwrap();
    assert_eq!(
        to_floats(&dtoh(&mut c, ctx, pc, n as u64 * 4).unwrap()),
        want
    );

    // A launch whose arguments are shorter than the layout never runs.
    let mut short = l.clone();
    short.params.0.truncate(20);
    assert_eq!(deferred(&mut c, &short), INVALID_VALUE);

    c.call(&ModuleUnload { module: m }).unwrap();
    assert_eq!(deferred(&mut c, &l), INVALID_HANDLE);
    assert_eq!(status(c.call(&ModuleUnload { module: m })), INVALID_HANDLE);
}

#[test]
fn illegal_address_is_deferred_then_sticky_while_another_session_works() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let ctx = primary(&mut c);
    let m = load(&mut c, ctx, KERNELS_PTX);
    let oob = function(&mut c, m, "oob_write");
    let out = alloc_with(&mut c, ctx, &[0u8; 256]);
    // out[i + n] with n far past any allocation.
    let params = pack(&oob, &[&out.to_le_bytes(), &(1i32 << 30).to_le_bytes()]);
    Batch(&mut c)
        .push(&launch(ctx, oob.handle, 1, 32, 0, params.clone()))
        .send();
    assert_eq!(status(c.call(&CtxSynchronize { ctx })), ILLEGAL_ADDRESS);
    // The context stays broken, for every kind of call in it ...
    assert_eq!(status(c.call(&CtxSynchronize { ctx })), ILLEGAL_ADDRESS);
    assert_eq!(
        status(c.call(&MemAlloc { ctx, size: 4096 })),
        ILLEGAL_ADDRESS
    );
    assert_eq!(status(dtoh(&mut c, ctx, out, 4)), ILLEGAL_ADDRESS);
    Batch(&mut c)
        .push(&launch(ctx, oob.handle, 1, 32, 0, params))
        .send();
    assert_eq!(status(c.call(&Flush {})), ILLEGAL_ADDRESS);

    // ... while another guest computes as usual.
    let mut c2 = d.connect();
    let ctx2 = primary(&mut c2);
    let m2 = load(&mut c2, ctx2, KERNELS_PTX);
    let vadd = function(&mut c2, m2, "vadd");
    let (want, pc, l) = vadd_setup(&mut c2, ctx2, &vadd, 64);
    Batch(&mut c2).push(&l).send();
    c2.call(&CtxSynchronize { ctx: ctx2 }).unwrap();
    assert_eq!(to_floats(&dtoh(&mut c2, ctx2, pc, 256).unwrap()), want);
}

#[test]
fn a_thousand_batched_launches_and_one_flush() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let ctx = primary(&mut c);
    let m = load(&mut c, ctx, KERNELS_PTX);
    let vadd = function(&mut c, m, "vadd");
    let (want, pc, l) = vadd_setup(&mut c, ctx, &vadd, 32);
    for _ in 0..1000 {
        c.call(&l).unwrap();
    }
    // The Flush goes out in the same write as the queued launches.
    let t = Instant::now();
    c.call(&Flush {}).unwrap();
    let queued = t.elapsed();
    c.call(&CtxSynchronize { ctx }).unwrap();
    let done = t.elapsed();
    eprintln!(
        "1000 NO_REPLY launches: flushed in {queued:?} ({:.0} launches/s), \
         complete in {done:?} ({:.0} launches/s)",
        1000.0 / queued.as_secs_f64(),
        1000.0 / done.as_secs_f64()
    );
    assert_eq!(to_floats(&dtoh(&mut c, ctx, pc, 128).unwrap()), want);

    // The loop's own cost per batched call, with a call the driver does
    // next to nothing for.
    let ev = c.call(&EventCreate { ctx, flags: 0 }).unwrap();
    for _ in 0..10_000 {
        c.call(&EventRecord {
            event: ev,
            stream: 0,
            flags: 0,
        })
        .unwrap();
    }
    let t = Instant::now();
    c.call(&Flush {}).unwrap();
    let el = t.elapsed();
    eprintln!(
        "10000 NO_REPLY event records: {el:?} ({:.0} calls/s)",
        10_000.0 / el.as_secs_f64()
    );
}

#[test]
fn events_time_a_launch_and_order_streams() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let ctx = primary(&mut c);
    let m = load(&mut c, ctx, KERNELS_PTX);
    let vadd = function(&mut c, m, "vadd");
    let s1 = c
        .call(&StreamCreate {
            ctx,
            flags: 0,
            priority: 0,
        })
        .unwrap();
    let s2 = c
        .call(&StreamCreate {
            ctx,
            flags: 0,
            priority: 0,
        })
        .unwrap();
    let start = c.call(&EventCreate { ctx, flags: 0 }).unwrap();
    let end = c.call(&EventCreate { ctx, flags: 0 }).unwrap();
    let (want, pc, mut l) = vadd_setup(&mut c, ctx, &vadd, 4096);
    l.stream = s1;
    Batch(&mut c)
        .push(&EventRecord {
            event: start,
            stream: s1,
            flags: 0,
        })
        .push(&l)
        .push(&EventRecord {
            event: end,
            stream: s1,
            flags: 0,
        })
        .push(&StreamWaitEvent {
            stream: s2,
            event: end,
            flags: 0,
        })
        .send();
    c.call(&EventSynchronize { event: end }).unwrap();
    c.call(&EventQuery { event: end }).unwrap();
    c.call(&StreamSynchronize { stream: s2 }).unwrap();
    let ms = f32::from_bits(c.call(&EventElapsedTime { start, end }).unwrap());
    eprintln!("vadd of 4096 floats: {ms} ms by events");
    assert!(ms >= 0.0 && ms.is_finite(), "{ms}");
    assert_eq!(to_floats(&dtoh(&mut c, ctx, pc, 4096 * 4).unwrap()), want);
    // The built-in streams resolve in the event's context.
    Batch(&mut c)
        .push(&EventRecord {
            event: start,
            stream: 0,
            flags: 0,
        })
        .push(&EventRecord {
            event: start,
            stream: 1,
            flags: 0,
        })
        .send();
    c.call(&Flush {}).unwrap();

    c.call(&EventDestroy { event: start }).unwrap();
    assert_eq!(status(c.call(&EventQuery { event: start })), INVALID_HANDLE);
    assert_eq!(
        status(c.call(&EventElapsedTime { start, end })),
        INVALID_HANDLE
    );
}

#[test]
fn unknown_and_foreign_handles_are_invalid() {
    let d = Daemon::start(&[]);
    let mut a = d.connect();
    let ctx = primary(&mut a);
    let m = load(&mut a, ctx, KERNELS_PTX);
    let vadd = function(&mut a, m, "vadd");
    let ev = a.call(&EventCreate { ctx, flags: 0 }).unwrap();

    let bogus = 0x3D12_3456_789A_BCDE;
    assert_eq!(
        status(a.call(&ModuleUnload { module: bogus })),
        INVALID_HANDLE
    );
    assert_eq!(
        status(a.call(&ModuleGetFunction {
            module: bogus,
            name: "vadd".into()
        })),
        INVALID_HANDLE
    );
    assert_eq!(status(a.call(&EventQuery { event: bogus })), INVALID_HANDLE);
    assert_eq!(
        status(a.call(&FuncGetAttribute {
            func: bogus,
            attr: 0
        })),
        INVALID_HANDLE
    );
    // Handles of one kind are not another kind's.
    assert_eq!(
        status(a.call(&ModuleUnload {
            module: vadd.handle
        })),
        INVALID_HANDLE
    );
    assert_eq!(status(a.call(&EventQuery { event: m })), INVALID_HANDLE);
    // A batched launch of a bad function fails at the next collector; a bad
    // stream too. Only the first is reported, once.
    Batch(&mut a)
        .push(&launch(ctx, bogus, 1, 1, 0, Bytes(vec![0; 28])))
        .push(&launch(
            ctx,
            vadd.handle,
            1,
            1,
            0x5700_0000_0000_0001,
            Bytes(vec![0; 28]),
        ))
        .send();
    assert_eq!(status(a.call(&Flush {})), INVALID_HANDLE);
    a.call(&Flush {}).unwrap();

    // Another session's handles, valid there, are nothing here.
    let mut b = d.connect();
    let ctx_b = primary(&mut b);
    assert_eq!(status(b.call(&ModuleUnload { module: m })), INVALID_HANDLE);
    assert_eq!(
        status(b.call(&ModuleGetFunction {
            module: m,
            name: "vadd".into()
        })),
        INVALID_HANDLE
    );
    assert_eq!(status(b.call(&EventQuery { event: ev })), INVALID_HANDLE);
    assert_eq!(
        deferred(
            &mut b,
            &launch(ctx_b, vadd.handle, 1, 1, 0, Bytes(vec![0; 28]))
        ),
        INVALID_HANDLE
    );
    // And they still work where they belong.
    a.call(&EventQuery { event: ev }).unwrap();
    a.call(&FuncGetAttribute {
        func: vadd.handle,
        attr: 0,
    })
    .unwrap();
}

#[test]
fn module_globals_are_addressable_until_unload() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let ctx = primary(&mut c);
    let m = load(&mut c, ctx, GLOBAL_PTX);
    let (ptr, size) = ok(
        c.call(&ModuleGetGlobal {
            module: m,
            name: "counter".into(),
        }),
        "cuModuleGetGlobal",
    );
    assert_eq!(size, 4);
    assert_eq!(dtoh(&mut c, ctx, ptr, 4).unwrap(), 5u32.to_le_bytes());
    let bump = function(&mut c, m, "bump");
    assert_eq!(bump.params, Some(vec![(0, 4)]));
    Batch(&mut c)
        .push(&launch(
            ctx,
            bump.handle,
            1,
            1,
            0,
            pack(&bump, &[&3u32.to_le_bytes()]),
        ))
        .send();
    c.call(&CtxSynchronize { ctx }).unwrap();
    assert_eq!(dtoh(&mut c, ctx, ptr, 4).unwrap(), 8u32.to_le_bytes());
    // One byte past the global is not the guest's.
    assert_eq!(status(dtoh(&mut c, ctx, ptr, 5)), INVALID_VALUE);
    c.call(&ModuleUnload { module: m }).unwrap();
    assert_eq!(status(dtoh(&mut c, ctx, ptr, 4)), INVALID_VALUE);
}

#[test]
fn libraries_kernels_attributes_and_occupancy() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let ctx = primary(&mut c);
    let lib = ok(
        c.call(&LibraryLoadData {
            ctx,
            image: Bytes(KERNELS_PTX.as_bytes().to_vec()),
        }),
        "cuLibraryLoadData",
    );
    let k = c
        .call(&LibraryGetKernel {
            library: lib,
            name: "vadd".into(),
        })
        .unwrap();
    assert_eq!(k.params, Some(vec![(0, 8), (8, 8), (16, 8), (24, 4)]));
    let f = c
        .call(&KernelGetFunction {
            ctx,
            kernel: k.handle,
        })
        .unwrap();
    assert_eq!(f.params, k.params);
    assert_ne!(f.handle, k.handle);
    // Attributes answer for a kernel handle and a function handle alike.
    let max_threads_attr = 0;
    for h in [k.handle, f.handle] {
        let v = c
            .call(&FuncGetAttribute {
                func: h,
                attr: max_threads_attr,
            })
            .unwrap();
        assert!(v > 0, "{v}");
        c.call(&FuncSetCacheConfig { func: h, config: 1 }).unwrap();
    }
    let (grid, block) = ok(
        c.call(&OccupancyMaxPotentialBlockSize {
            func: k.handle,
            dynamic_smem: 0,
            block_size_limit: 0,
            flags: 0,
        }),
        "cuOccupancyMaxPotentialBlockSize",
    );
    assert!(grid > 0 && block > 0, "{grid} {block}");
    let module = c.call(&LibraryGetModule { ctx, library: lib }).unwrap();
    assert_eq!(
        c.call(&LibraryGetModule { ctx, library: lib }).unwrap(),
        module
    );
    // Launch through the kernel handle itself.
    let (want, pc, mut l) = vadd_setup(&mut c, ctx, &k, 300);
    l.func = k.handle;
    Batch(&mut c).push(&l).send();
    c.call(&CtxSynchronize { ctx }).unwrap();
    assert_eq!(to_floats(&dtoh(&mut c, ctx, pc, 1200).unwrap()), want);

    c.call(&LibraryUnload { library: lib }).unwrap();
    assert_eq!(deferred(&mut c, &l), INVALID_HANDLE);
    assert_eq!(
        status(c.call(&ModuleGetFunction {
            module,
            name: "vadd".into()
        })),
        INVALID_HANDLE
    );
}

#[test]
fn link_returns_a_loadable_image() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let ctx = primary(&mut c);
    let cu_jit_input_ptx = 1;
    let image = ok(
        c.call(&LinkComplete {
            ctx,
            inputs: vec![LinkInput {
                input_type: cu_jit_input_ptx,
                name: "kernels.ptx".into(),
                data: Bytes(KERNELS_PTX.as_bytes().to_vec()),
            }],
        }),
        "cuLinkComplete",
    );
    assert!(!image.0.is_empty());
    let m = c.call(&ModuleLoadData { ctx, image }).unwrap();
    let vadd = function(&mut c, m, "vadd");
    assert_eq!(vadd.params.as_ref().map(Vec::len), Some(4));
    // A bad input type never reaches the driver.
    assert_eq!(
        status(c.call(&LinkComplete {
            ctx,
            inputs: vec![LinkInput {
                input_type: 99,
                name: "x".into(),
                data: Bytes(vec![1]),
            }],
        })),
        INVALID_VALUE
    );
}

#[test]
fn disconnect_unloads_modules() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let ctx = primary(&mut c);
    let _m = load(&mut c, ctx, KERNELS_PTX);
    load(&mut c, ctx, GLOBAL_PTX);
    c.call(&EventCreate { ctx, flags: 0 }).unwrap();
    let session = c.hello.session;
    drop(c);
    d.wait_log(
        &[
            &format!("session {session}:"),
            "destroyed 1 event(s), unloaded 2 module(s)",
        ],
        std::time::Duration::from_secs(10),
    );
}
