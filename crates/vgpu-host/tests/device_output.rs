//! Device output at the protocol level: the real `vgpu` daemon with the
//! software GPU as driver and a `vgpu_transport::Client` as guest. Kernels
//! that `printf` and fail an assert (hand-written PTX calling the device
//! runtime's `vprintf` and `__assertfail`): their text arrives as
//! `DeviceOutput` notices before the reply of a flushing call and no
//! earlier, on the descriptor a GPU prints it to; a guest that did not ask
//! for device output (`caps::DEVICE_OUTPUT`) gets no notice, and the text
//! never lands in the daemon's log either way.

use cuda_types::cuda::CUresult;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vgpu_test_support::Daemon;
use vgpu_transport::codec::Bytes;
use vgpu_transport::proto::{
    caps, CtxSynchronize, Hello, LaunchKernel, MemAlloc, ModuleGetFunction, ModuleLoadData,
    PrimaryCtxRetain,
};
use vgpu_transport::{CallError, Client, Status};

/// `hello`: every thread prints `dev-out <tid>`; `fail`: thread 1 fails an
/// assert (`x == 1` in `kernel.cu`, line 17, `void fail()`).
const PTX: &str = r#"
.version 7.0
.target sm_80
.address_size 64

.extern .func (.param .b32 func_retval0) vprintf (.param .b64 vprintf_param_0, .param .b64 vprintf_param_1);
.extern .func __assertfail (.param .b64 a, .param .b64 b, .param .b32 c, .param .b64 d, .param .b64 e);

.global .align 1 .b8 fmt[12] = {100, 101, 118, 45, 111, 117, 116, 32, 37, 100, 10, 0};
.global .align 1 .b8 msg[7] = {120, 32, 61, 61, 32, 49, 0};
.global .align 1 .b8 file[10] = {107, 101, 114, 110, 101, 108, 46, 99, 117, 0};
.global .align 1 .b8 func[12] = {118, 111, 105, 100, 32, 102, 97, 105, 108, 40, 41, 0};

.visible .entry hello()
{
	.local .align 8 .b8 depot[8];
	.reg .b32 %r<3>;
	.reg .b64 %rd<4>;

	mov.u64 %rd1, depot;
	cvta.local.u64 %rd2, %rd1;
	mov.u32 %r1, %tid.x;
	st.local.u32 [%rd1], %r1;
	mov.u64 %rd3, fmt;
	cvta.global.u64 %rd3, %rd3;
	{
	.param .b64 param0;
	st.param.b64 [param0], %rd3;
	.param .b64 param1;
	st.param.b64 [param1], %rd2;
	.param .b32 retval0;
	call.uni (retval0), vprintf, (param0, param1);
	ld.param.b32 %r2, [retval0];
	}
	ret;
}

.visible .entry fail()
{
	.reg .pred %p<2>;
	.reg .b32 %r<2>;
	.reg .b64 %rd<4>;

	mov.u32 %r1, %tid.x;
	setp.ne.u32 %p1, %r1, 1;
	@%p1 bra $L_ok;
	mov.u64 %rd1, msg;
	cvta.global.u64 %rd1, %rd1;
	mov.u64 %rd2, file;
	cvta.global.u64 %rd2, %rd2;
	mov.u64 %rd3, func;
	cvta.global.u64 %rd3, %rd3;
	{
	.param .b64 param0;
	st.param.b64 [param0], %rd1;
	.param .b64 param1;
	st.param.b64 [param1], %rd2;
	.param .b32 param2;
	st.param.b32 [param2], 17;
	.param .b64 param3;
	st.param.b64 [param3], %rd3;
	.param .b64 param4;
	st.param.b64 [param4], 1;
	call.uni __assertfail, (param0, param1, param2, param3, param4);
	}
$L_ok:
	ret;
}
"#;

const ASSERT_LINE: &str =
    "kernel.cu:17: void fail(): block: [0,0,0], thread: [1,0,0] Assertion `x == 1` failed.\n";

/// What the client's sink received: (fd, text, dropped) per notice.
type Seen = Arc<Mutex<Vec<(u8, String, u64)>>>;

fn connect(d: &Daemon, capabilities: u64) -> (Client, Seen) {
    let s = d.unix().connect(Duration::from_secs(5)).unwrap();
    let mut c = Client::handshake(
        s,
        &Hello::new(vgpu_transport::BUILD_ID, capabilities, None),
        Duration::from_secs(10),
    )
    .unwrap();
    c.set_timeout(Some(Duration::from_secs(20))).unwrap();
    assert_ne!(
        c.hello.capabilities & caps::DEVICE_OUTPUT,
        0,
        "the host offers it"
    );
    let seen: Seen = Default::default();
    let sink = seen.clone();
    c.set_output_sink(Box::new(move |o| {
        let text = String::from_utf8(o.data.0).unwrap();
        sink.lock().unwrap().push((o.fd, text, o.dropped));
    }));
    (c, seen)
}

/// (context, hello, fail) in a fresh session.
fn setup(c: &mut Client) -> (u64, u64, u64) {
    let ctx = c.call(&PrimaryCtxRetain { device: 0 }).unwrap();
    let module = c
        .call(&ModuleLoadData {
            ctx,
            image: Bytes(PTX.as_bytes().to_vec()),
        })
        .unwrap();
    let func = |c: &mut Client, name: &str| {
        c.call(&ModuleGetFunction {
            module,
            name: name.into(),
        })
        .unwrap()
        .handle
    };
    (ctx, func(c, "hello"), func(c, "fail"))
}

fn launch(ctx: u64, func: u64, threads: u32) -> LaunchKernel {
    LaunchKernel {
        ctx,
        func,
        grid: [1, 1, 1],
        block: [threads, 1, 1],
        ..Default::default()
    }
}

fn take(seen: &Seen) -> Vec<(u8, String, u64)> {
    std::mem::take(&mut *seen.lock().unwrap())
}

#[test]
fn printf_and_assert_text_arrive_before_the_synchronizations_reply() {
    let d = Daemon::start(&["--driver", "emulated"]);
    let (mut c, seen) = connect(&d, caps::BATCH | caps::DEVICE_OUTPUT);
    let (ctx, hello, fail) = setup(&mut c);
    c.call(&launch(ctx, hello, 3)).unwrap();
    // A reply that is no flush point carries nothing yet.
    c.call(&MemAlloc { ctx, size: 64 }).unwrap();
    assert_eq!(take(&seen), []);
    c.call(&CtxSynchronize { ctx }).unwrap();
    let expected: String = (0..3).map(|t| format!("dev-out {t}\n")).collect();
    assert_eq!(take(&seen), [(1, expected, 0)]);
    // Nothing twice.
    c.call(&CtxSynchronize { ctx }).unwrap();
    assert_eq!(take(&seen), []);
    // The assert: its message on stderr, CUDA_ERROR_ASSERT, sticky.
    c.call(&launch(ctx, fail, 4)).unwrap();
    let assert = Status::Cuda(CUresult::CUDA_ERROR_ASSERT);
    match c.call(&CtxSynchronize { ctx }) {
        Err(CallError::Status(s)) => assert_eq!(s, assert),
        other => panic!("{other:?}"),
    }
    assert_eq!(take(&seen), [(2, ASSERT_LINE.to_string(), 0)]);
    match c.call(&MemAlloc { ctx, size: 64 }) {
        Err(CallError::Status(s)) => assert_eq!(s, assert),
        other => panic!("{other:?}"),
    }
    drop(c);
    d.wait_log(&["session 1:", "released"], Duration::from_secs(10));
    let log = d.logs();
    assert!(
        !log.contains("dev-out") && !log.contains("Assertion"),
        "{log}"
    );
}

#[test]
fn a_guest_that_does_not_ask_gets_no_notices() {
    let d = Daemon::start(&["--driver", "emulated"]);
    let (mut c, seen) = connect(&d, caps::BATCH);
    let (ctx, hello, fail) = setup(&mut c);
    c.call(&launch(ctx, hello, 2)).unwrap();
    c.call(&CtxSynchronize { ctx }).unwrap();
    c.call(&launch(ctx, fail, 2)).unwrap();
    assert!(c.call(&CtxSynchronize { ctx }).is_err());
    assert_eq!(take(&seen), []);
    drop(c);
    d.wait_log(&["session 1:", "released"], Duration::from_secs(10));
    let log = d.logs();
    assert!(
        !log.contains("dev-out") && !log.contains("Assertion"),
        "{log}"
    );
}
