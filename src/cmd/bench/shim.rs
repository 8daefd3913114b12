//! Work through the CUDA shim exactly as an application does it: the shim
//! is dlopen'ed and called through the driver table (`cuLaunchKernel`,
//! stream capture, `cuGraphLaunch`), on an empty kernel so that what is
//! measured is the cost of getting work to the GPU, not the work.

use crate::cmd::driver::{CudaDriver, Library};
use crate::cmd::libs::find_shims;
use cuda_types::cuda::*;
use std::ffi::{c_char, c_uint, c_void};
use std::time::{Duration, Instant};
use vgpu_transport::codec::to_bytes;
use vgpu_transport::proto::Ping;
use vgpu_transport::Call;

/// A kernel that does nothing: launch cost only.
const NOOP_PTX: &str =
    ".version 7.0\n.target sm_52\n.address_size 64\n.visible .entry noop()\n{\n\tret;\n}\n\0";

macro_rules! cu {
    ($t:expr, $f:ident ( $($a:expr),* )) => {{
        let rc = crate::cmd::driver::driver_call!(
            $t, $f($($a),*), CUresult::CUDA_ERROR_NOT_FOUND
        );
        if rc.0 != 0 {
            return Err(format!("{} returned {}", stringify!($f), rc.0));
        }
    }};
}

/// The shim, a context on device 0 and the empty kernel.
pub struct Shim {
    lib: Library,
    t: CudaDriver,
    ctx: CUcontext,
    module: CUmodule,
    func: CUfunction,
}

impl Shim {
    pub fn open() -> Result<Shim, String> {
        let [cuda, _] = find_shims()?;
        let lib =
            Library::open_any(&cuda.file).map_err(|e| format!("{}: {e}", cuda.file.display()))?;
        let t = lib.cuda();
        let mut dev: CUdevice = 0;
        let mut ctx: CUcontext = std::ptr::null_mut();
        let mut module: CUmodule = std::ptr::null_mut();
        let mut func: CUfunction = std::ptr::null_mut();
        cu!(t, cuInit(0));
        cu!(t, cuDeviceGet(&mut dev, 0));
        cu!(t, cuCtxCreate_v2(&mut ctx, 0, dev));
        cu!(
            t,
            cuModuleLoadData(&mut module, NOOP_PTX.as_ptr() as *const c_void)
        );
        cu!(
            t,
            cuModuleGetFunction(&mut func, module, c"noop".as_ptr() as *const c_char)
        );
        Ok(Shim {
            lib,
            t,
            ctx,
            module,
            func,
        })
    }

    /// One launch of the empty kernel (1 block of 1 thread) on `stream`.
    fn launch(&self, stream: CUstream) -> Result<(), String> {
        cu!(
            self.t,
            cuLaunchKernel(
                self.func,
                1 as c_uint,
                1,
                1,
                1,
                1,
                1,
                0,
                stream,
                std::ptr::null_mut(),
                std::ptr::null_mut()
            )
        );
        Ok(())
    }

    /// What the launching threads of [`threaded`] need, as plain values.
    fn launcher(&self) -> Launcher<'_> {
        Launcher {
            t: &self.t,
            ctx: self.ctx as usize,
            func: self.func as usize,
            call: self.lib.sym(c"vgpu_guest_call_v1") as usize,
        }
    }

    fn ctx_sync(&self) -> Result<(), String> {
        cu!(self.t, cuCtxSynchronize());
        Ok(())
    }

    fn stream_sync(&self, s: CUstream) -> Result<(), String> {
        cu!(self.t, cuStreamSynchronize(s));
        Ok(())
    }

    /// A `Ping` on the shim's own connection, through the export by which
    /// the NVML shim shares it (`vgpu_guest_call_v1`): a message no CUDA
    /// call sends, so it marks a place in the frame stream. Being a round
    /// trip, it also writes out the calls queued before it.
    pub fn marker(&self) -> Result<(), String> {
        self.launcher().ping()
    }
}

/// The shim's entry points and the empty kernel, for threads of their own
/// (the handles as integers: only the shim dereferences them).
#[derive(Clone, Copy)]
struct Launcher<'a> {
    t: &'a CudaDriver,
    ctx: usize,
    func: usize,
    /// `vgpu_guest_call_v1`, or 0.
    call: usize,
}

impl Launcher<'_> {
    fn launch(&self, stream: CUstream) -> Result<(), String> {
        cu!(
            self.t,
            cuLaunchKernel(
                self.func as CUfunction,
                1 as c_uint,
                1,
                1,
                1,
                1,
                1,
                0,
                stream,
                std::ptr::null_mut(),
                std::ptr::null_mut()
            )
        );
        Ok(())
    }

    /// A `Ping` round trip through the shim's connection (see
    /// [`Shim::marker`]).
    fn ping(&self) -> Result<(), String> {
        type SharedCall = unsafe extern "C" fn(
            u16,
            u16,
            *const u8,
            usize,
            extern "C" fn(*mut c_void, *const u8, usize),
            *mut c_void,
        ) -> u32;
        extern "C" fn ignore(_: *mut c_void, _: *const u8, _: usize) {}
        if self.call == 0 {
            return Err("the shim does not export vgpu_guest_call_v1".into());
        }
        // SAFETY: the shim exports it with exactly this signature
        // (`vgpu_guest::shim_glue!`).
        let call = unsafe { std::mem::transmute::<usize, SharedCall>(self.call) };
        let payload = to_bytes(&Ping {});
        // SAFETY: the payload is valid for its length for the call; the
        // sink ignores the (empty) reply and never touches `ctx`.
        let st = unsafe {
            call(
                Ping::OP,
                0,
                payload.as_ptr(),
                payload.len(),
                ignore,
                std::ptr::null_mut(),
            )
        };
        if st != 0 {
            return Err(format!("Ping through the shim answered {st:#x}"));
        }
        Ok(())
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        // SAFETY: handles this Shim created and nobody else holds; a
        // failure at teardown changes no figure, so the results are ignored.
        unsafe {
            if let Some(f) = self.t.cuModuleUnload {
                f(self.module);
            }
            if let Some(f) = self.t.cuCtxDestroy_v2 {
                f(self.ctx);
            }
        }
    }
}

/// `n` calls of `cuCtxGetCurrent`, which the shim answers by itself:
/// the cost of entering the shim, the floor a queued launch is priced
/// against.
pub fn local_calls(s: &Shim, n: usize) -> Result<Duration, String> {
    let mut ctx: CUcontext = std::ptr::null_mut();
    let start = Instant::now();
    for _ in 0..n {
        cu!(s.t, cuCtxGetCurrent(&mut ctx));
    }
    Ok(start.elapsed())
}

/// Several application threads at once, each on a stream of its own.
pub struct Threaded {
    pub threads: usize,
    pub launches: usize,
    /// From the common start to the last thread's synchronize returning.
    pub elapsed: Duration,
    /// The launch calls alone, summed over the threads.
    pub submitted: Duration,
    /// Every `Ping` round trip of every thread (`syncs` per thread),
    /// measured while all of them ping at once.
    pub syncs: Vec<Duration>,
}

/// `threads` threads each create a non-blocking stream, launch `n`
/// empty kernels on it and synchronize it; then each makes `syncs`
/// synchronous calls at the same time as the others.
pub fn threaded(s: &Shim, threads: usize, n: usize, syncs: usize) -> Result<Threaded, String> {
    let l = s.launcher();
    let go = std::sync::Barrier::new(threads + 1);
    let ping_go = std::sync::Barrier::new(threads + 1);
    let per_thread = |l: Launcher<'_>| -> Result<(Duration, Vec<Duration>), String> {
        let result = (|| {
            cu!(l.t, cuCtxSetCurrent(l.ctx as CUcontext));
            let mut stream: CUstream = std::ptr::null_mut();
            cu!(
                l.t,
                cuStreamCreate(&mut stream, CUstream_flags::CU_STREAM_NON_BLOCKING.0)
            );
            l.launch(stream)?;
            cu!(l.t, cuStreamSynchronize(stream));
            Ok(stream)
        })();
        // Whatever happened, the others are not left waiting.
        go.wait();
        let launched = result.and_then(|stream| {
            let t = Instant::now();
            for _ in 0..n {
                l.launch(stream)?;
            }
            let submitted = t.elapsed();
            cu!(l.t, cuStreamSynchronize(stream));
            cu!(l.t, cuStreamDestroy_v2(stream));
            Ok(submitted)
        });
        ping_go.wait();
        let submitted = launched?;
        let mut samples = Vec::with_capacity(syncs);
        for _ in 0..syncs {
            let t = Instant::now();
            l.ping()?;
            samples.push(t.elapsed());
        }
        Ok((submitted, samples))
    };
    let (elapsed, results) = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|_| sc.spawn(move || per_thread(l)))
            .collect();
        go.wait();
        let start = Instant::now();
        ping_go.wait();
        let elapsed = start.elapsed();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect();
        (elapsed, results)
    });
    let mut out = Threaded {
        threads,
        launches: threads * n,
        elapsed,
        submitted: Duration::ZERO,
        syncs: Vec::new(),
    };
    for r in results {
        let (submitted, samples) = r?;
        out.submitted += submitted;
        out.syncs.extend(samples);
    }
    Ok(out)
}

/// Launches in one [`enqueue_bursts`] burst: well below what makes the
/// guest write its queue out, so a burst measures appending to the queue
/// and nothing else.
pub const BURST: usize = 256;

/// `bursts` times: [`BURST`] launches timed, then a synchronize not
/// timed. Per launch, for each burst: what the application thread pays to
/// enqueue a launch while the host keeps up (the batched figures include
/// the waits for a host that does not).
pub fn enqueue_bursts(s: &Shim, bursts: usize) -> Result<Vec<Duration>, String> {
    let null = std::ptr::null_mut();
    s.launch(null)?;
    s.ctx_sync()?;
    let mut out = Vec::with_capacity(bursts);
    for _ in 0..bursts {
        let t = Instant::now();
        for _ in 0..BURST {
            s.launch(null)?;
        }
        out.push(t.elapsed() / BURST as u32);
        s.ctx_sync()?;
    }
    Ok(out)
}

pub struct Launches {
    /// The launch calls alone: what the application thread pays.
    pub submitted: Duration,
    /// Those launches and the synchronize that waits for all of them.
    pub batched: Duration,
    pub synced: Duration,
    pub n_synced: usize,
}

/// `n` launches then one synchronize, and `n / 10` launches each followed
/// by a synchronize, on the legacy stream.
pub fn launches(s: &Shim, n: usize) -> Result<Launches, String> {
    let null = std::ptr::null_mut();
    // Warm up (the first launch may load the module on the host).
    s.launch(null)?;
    s.ctx_sync()?;

    let start = Instant::now();
    for _ in 0..n {
        s.launch(null)?;
    }
    let submitted = start.elapsed();
    s.ctx_sync()?;
    let batched = start.elapsed();

    let n_synced = (n / 10).max(1);
    let start = Instant::now();
    for _ in 0..n_synced {
        s.launch(null)?;
        s.ctx_sync()?;
    }
    let synced = start.elapsed();
    Ok(Launches {
        submitted,
        batched,
        synced,
        n_synced,
    })
}

/// A graph of `kernels` empty-kernel launches captured from a stream,
/// instantiated, and the stream it runs on.
pub struct Graph<'a> {
    shim: &'a Shim,
    pub stream: CUstream,
    graph: CUgraph,
    exec: CUgraphExec,
    pub kernels: usize,
}

impl<'a> Graph<'a> {
    /// Captures `kernels` launches on a new non-blocking stream (the legacy
    /// stream cannot capture), checks the graph holds that many nodes,
    /// instantiates and uploads it, and runs it once (warm-up).
    pub fn capture(shim: &'a Shim, kernels: usize) -> Result<Graph<'a>, String> {
        let t = &shim.t;
        let mut g = Graph {
            shim,
            stream: std::ptr::null_mut(),
            graph: std::ptr::null_mut(),
            exec: std::ptr::null_mut(),
            kernels,
        };
        cu!(
            t,
            cuStreamCreate(&mut g.stream, CUstream_flags::CU_STREAM_NON_BLOCKING.0)
        );
        cu!(
            t,
            cuStreamBeginCapture_v2(g.stream, CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL)
        );
        for _ in 0..kernels {
            // A failed capture must still be ended, or the stream stays in it.
            if let Err(e) = shim.launch(g.stream) {
                let mut dropped: CUgraph = std::ptr::null_mut();
                if let Some(f) = t.cuStreamEndCapture {
                    // SAFETY: ends the capture this function began on a
                    // stream it owns; the graph out-pointer is ours.
                    unsafe { f(g.stream, &mut dropped) };
                }
                return Err(format!("during capture: {e}"));
            }
        }
        cu!(t, cuStreamEndCapture(g.stream, &mut g.graph));
        let mut nodes: usize = 0;
        cu!(
            t,
            cuGraphGetNodes(g.graph, std::ptr::null_mut(), &mut nodes)
        );
        if nodes != kernels {
            return Err(format!(
                "captured {kernels} launches, the graph has {nodes} nodes"
            ));
        }
        cu!(t, cuGraphInstantiateWithFlags(&mut g.exec, g.graph, 0));
        cu!(t, cuGraphUpload(g.exec, g.stream));
        g.launch()?;
        shim.stream_sync(g.stream)?;
        Ok(g)
    }

    pub fn launch(&self) -> Result<(), String> {
        cu!(self.shim.t, cuGraphLaunch(self.exec, self.stream));
        Ok(())
    }

    /// The same kernels launched one by one on the graph's stream.
    pub fn launch_one_by_one(&self) -> Result<(), String> {
        for _ in 0..self.kernels {
            self.shim.launch(self.stream)?;
        }
        Ok(())
    }

    pub fn sync(&self) -> Result<(), String> {
        self.shim.stream_sync(self.stream)
    }
}

impl Drop for Graph<'_> {
    fn drop(&mut self) {
        let t = &self.shim.t;
        // SAFETY: handles this Graph created (null ones are skipped); the
        // results are ignored as in `Shim::drop`.
        unsafe {
            if let (false, Some(f)) = (self.exec.is_null(), t.cuGraphExecDestroy) {
                f(self.exec);
            }
            if let (false, Some(f)) = (self.graph.is_null(), t.cuGraphDestroy) {
                f(self.graph);
            }
            if let (false, Some(f)) = (self.stream.is_null(), t.cuStreamDestroy_v2) {
                f(self.stream);
            }
        }
    }
}

/// Per repetition: the call alone (guest side) and the call plus the
/// stream synchronize (end to end), for the graph and for its kernels one
/// by one.
pub struct GraphTimes {
    pub graph_call: Vec<Duration>,
    pub graph_e2e: Vec<Duration>,
    pub each_call: Vec<Duration>,
    pub each_e2e: Vec<Duration>,
}

/// `reps` repetitions, the two ways alternating so that a burst of other
/// work on a shared machine hits both alike.
pub fn graph_times(g: &Graph, reps: usize) -> Result<GraphTimes, String> {
    let mut out = GraphTimes {
        graph_call: Vec::with_capacity(reps),
        graph_e2e: Vec::with_capacity(reps),
        each_call: Vec::with_capacity(reps),
        each_e2e: Vec::with_capacity(reps),
    };
    // One warm-up of the one-by-one way too.
    g.launch_one_by_one()?;
    g.sync()?;
    for _ in 0..reps {
        let t = Instant::now();
        g.launch()?;
        out.graph_call.push(t.elapsed());
        g.sync()?;
        out.graph_e2e.push(t.elapsed());

        let t = Instant::now();
        g.launch_one_by_one()?;
        out.each_call.push(t.elapsed());
        g.sync()?;
        out.each_e2e.push(t.elapsed());
    }
    Ok(out)
}
