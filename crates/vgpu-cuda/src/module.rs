//! Modules, libraries, kernels and functions: guest objects around the
//! host's handles.
//!
//! Every `CUmodule`, `CUlibrary`, `CUkernel` and `CUfunction` handed to an
//! application is a handle minted by its kind's registry, and each handle
//! argument converts to a [`Live`] object of its kind (an invented or
//! unloaded handle is CUDA_ERROR_INVALID_HANDLE, never a dereference).
//! Kernels and functions share one type and one registry, [`Func`]: a
//! `CUfunction` argument accepts either (cudart 13 launches
//! `(CUfunction)kernel`, as cuda.h allows), a `CUkernel` argument only a
//! kernel — so `cuFuncGet*` and `cuKernelGet*` share their bodies and the
//! argument's C type decides what it may name.
//!
//! A function keeps the parameter layout the host reported with it, so
//! launches are packed, and cuFuncGetParamInfo answered, with no round trip.

use crate::args::{self, Live, Word};
use crate::check::{self, reject, INVALID_VALUE};
use crate::context::state::Context;
use crate::driver::{self, Device};
use crate::image::{self, Format, Image};
use cuda_types::cuda::{
    CUdeviceptr, CUfunc_cache, CUfunction, CUfunctionLoadingState, CUfunction_attribute,
    CUjit_option, CUkernel, CUlibrary, CUlibraryOption, CUmodule, CUresult,
};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, OnceLock};
use vgpu_ffi::{FromCuda, Mint, Out, Shared};
use vgpu_guest::log::Level;
use vgpu_guest::vlog;
use vgpu_transport::codec::Bytes;
use vgpu_transport::proto::{
    FuncGetAttribute, FuncSetAttribute, FuncSetCacheConfig, FunctionInfo, KernelGetFunction,
    LibraryGetGlobal, LibraryGetKernel, LibraryGetModule, LibraryLoadData, LibraryLoadStaged,
    LibraryUnload, ModuleGetFunction, ModuleGetGlobal, ModuleLoadData, ModuleLoadStaged,
    ModuleUnload, COPY_CHUNK,
};

const INVALID_HANDLE: CUresult = CUresult::CUDA_ERROR_INVALID_HANDLE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FuncKind {
    /// A `CUfunction`: lives in one context.
    Function,
    /// A `CUkernel`: a library's entry point, context-independent; it
    /// becomes a function per context on first use there.
    Kernel,
}

/// A kernel or a function.
pub struct Func {
    /// The value the application holds.
    handle: u64,
    pub kind: FuncKind,
    pub remote: u64,
    pub name: CString,
    /// (offset, size) of each parameter in the argument buffer, in order;
    /// `None` when the host could not tell (an old host driver and an image
    /// it could not read: its log says why).
    pub params: Option<Vec<(u32, u32)>>,
    /// The handle of the module (functions) or library (kernels) it came
    /// from: `cuFuncGetModule`, `cuKernelGetLibrary`.
    owner: u64,
    /// Kernels: their function in each context, by context id.
    per_ctx: Mutex<HashMap<u64, Arc<Func>>>,
    /// `CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK`, asked once (it is fixed
    /// when the function is made: its registers and `.maxntid`).
    max_threads: OnceLock<u64>,
}

/// Kernels and functions until their module or library is unloaded.
pub(crate) static FUNCTIONS: Shared<Arc<Func>, CUresult> =
    Shared::new("function or kernel", INVALID_HANDLE, Mint::Pointer);
/// Loaded modules, and each library's module in each context.
pub(crate) static MODULES: Shared<Arc<Module>, CUresult> =
    Shared::new("module", INVALID_HANDLE, Mint::Pointer);
pub(crate) static LIBRARIES: Shared<Arc<Library>, CUresult> =
    Shared::new("library", INVALID_HANDLE, Mint::Pointer);

impl Func {
    fn register(kind: FuncKind, info: FunctionInfo, name: CString, owner: u64) -> Arc<Func> {
        args::register(&FUNCTIONS, |handle| Func {
            handle,
            kind,
            remote: info.handle,
            name,
            params: info.params,
            owner,
            per_ctx: Mutex::new(HashMap::new()),
            max_threads: OnceLock::new(),
        })
    }

    /// The most threads a block of this function may have, or `None` when
    /// the host cannot say (then the host's launch decides alone). One
    /// round trip the first time.
    pub fn max_threads(&self) -> Option<u64> {
        if let Some(&n) = self.max_threads.get() {
            return Some(n);
        }
        let n = attribute(
            self,
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK,
        )
        .ok()
        .and_then(|n| u64::try_from(n).ok())
        .filter(|&n| n > 0)?;
        Some(*self.max_threads.get_or_init(|| n))
    }

    pub fn handle(&self) -> CUfunction {
        args::handle(self.handle)
    }

    /// Bytes of the packed argument buffer (0 when the layout is unknown).
    pub fn params_size(&self) -> usize {
        self.params
            .as_deref()
            .map_or(0, cuda_abi::launch::params_size)
    }

    /// The parameter layout, or NOT_SUPPORTED with the reason logged.
    pub fn layout(&self) -> Result<&[(u32, u32)], CUresult> {
        self.params.as_deref().ok_or_else(|| {
            reject(
                CUresult::CUDA_ERROR_NOT_SUPPORTED,
                format_args!(
                    "{:?}: the host cannot tell where its parameters go (its driver has no \
                     cuFuncGetParamInfo and the module image did not say; see the host's log)",
                    self.name
                ),
            )
        })
    }

    /// What a launch in `ctx` runs: a function as it is; a kernel through
    /// its function in that context (one round trip the first time).
    pub fn in_context(self: &Arc<Self>, ctx: &Arc<Context>) -> Result<Arc<Func>, CUresult> {
        if self.kind == FuncKind::Function {
            return Ok(self.clone());
        }
        let mut map = self.per_ctx.lock();
        if let Some(f) = map.get(&ctx.id) {
            return Ok(f.clone());
        }
        let info = check::host(&KernelGetFunction {
            ctx: ctx.remote()?,
            kernel: self.remote,
        })?;
        let f = Func::register(FuncKind::Function, info, self.name.clone(), self.owner);
        map.insert(ctx.id, f.clone());
        Ok(f)
    }

    /// Takes the function out of the registry; a kernel with its function
    /// in each context. (No registry lock is held while `per_ctx` is: a
    /// launch holds `per_ctx` while it registers.)
    fn unregister(&self) {
        let _ = FUNCTIONS.take(self.handle);
        let per_ctx = std::mem::take(&mut *self.per_ctx.lock());
        for f in per_ctx.values() {
            let _ = FUNCTIONS.take(f.handle);
        }
    }
}

/// A `CUfunction` argument: a function or a kernel.
impl FromCuda<CUfunction, CUresult> for Live<Func> {
    unsafe fn from_cuda(h: CUfunction) -> Result<Self, CUresult> {
        Live::find(&FUNCTIONS, h)
    }
}

/// A `CUkernel` argument: a kernel only.
impl FromCuda<CUkernel, CUresult> for Live<Func> {
    unsafe fn from_cuda(h: CUkernel) -> Result<Self, CUresult> {
        match Live::find(&FUNCTIONS, h)? {
            k if k.kind == FuncKind::Kernel => Ok(k),
            _ => Err(reject(
                INVALID_HANDLE,
                format_args!("{h:p} is a function, not a kernel"),
            )),
        }
    }
}

/// The host object behind a guest module or library; with a key, other
/// guest objects may share it (see [`ImageKey`]) and the last one to go
/// unloads it.
#[derive(Clone, Copy)]
struct HostImage {
    remote: u64,
    key: Option<ImageKey>,
}

pub struct Module {
    /// The value the application holds.
    handle: u64,
    image: HostImage,
    pub ctx: Arc<Context>,
    /// A library's module (its library's handle): it goes with the
    /// library, not with cuModuleUnload.
    library: Option<u64>,
    functions: Mutex<HashMap<CString, Arc<Func>>>,
}

impl Module {
    fn register(image: HostImage, ctx: Arc<Context>, library: Option<u64>) -> Arc<Module> {
        args::register(&MODULES, |handle| Module {
            handle,
            image,
            ctx,
            library,
            functions: Mutex::new(HashMap::new()),
        })
    }

    pub fn remote(&self) -> u64 {
        self.image.remote
    }

    fn handle(&self) -> CUmodule {
        args::handle(self.handle)
    }

    /// Takes the module's functions out of the registry.
    fn forget_functions(&self) {
        let functions = std::mem::take(&mut *self.functions.lock());
        for f in functions.values() {
            f.unregister();
        }
    }
}

impl FromCuda<CUmodule, CUresult> for Live<Module> {
    unsafe fn from_cuda(h: CUmodule) -> Result<Self, CUresult> {
        Live::find(&MODULES, h)
    }
}

pub struct Library {
    /// The value the application holds.
    handle: u64,
    image: HostImage,
    kernels: Mutex<HashMap<CString, Arc<Func>>>,
    /// Its module in each context, by context id.
    modules: Mutex<HashMap<u64, Arc<Module>>>,
}

impl Library {
    fn handle(&self) -> CUlibrary {
        args::handle(self.handle)
    }
}

impl FromCuda<CUlibrary, CUresult> for Live<Library> {
    unsafe fn from_cuda(h: CUlibrary) -> Result<Self, CUresult> {
        Live::find(&LIBRARIES, h)
    }
}

// ---- shipping images ----

/// Identifies an image already loaded on the host. Only fatbin *wrappers*
/// are shared: they are cudart's registrations of code in the program's
/// own read-only data, which cudart may hand over more than once. Two loads
/// of one wrapper in one context then share one host module — and its
/// `__device__` variables, which separate loads of other images never do.
/// The hash guards against a library unloaded and another mapped at the
/// same address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ImageKey {
    session: u64,
    ctx: u64,
    library: bool,
    ptr: usize,
    len: usize,
    hash: u64,
}

type KeyTuple = (u64, u64, bool, usize, usize, u64);

/// Shared host objects: (host handle, how many guest objects hold it).
static SHIPPED: Mutex<BTreeMap<KeyTuple, (u64, usize)>> = Mutex::new(BTreeMap::new());

fn key_tuple(k: &ImageKey) -> KeyTuple {
    (k.session, k.ctx, k.library, k.ptr, k.len, k.hash)
}

/// Ships `img` (or finds it shipped) as a module or library in `ctx`.
fn ship(img: &Image, ctx: u64, library: bool) -> Result<HostImage, CUresult> {
    // SAFETY: `img` was just measured from the caller's live image.
    let bytes = unsafe { img.bytes() };
    let load = |bytes: &[u8]| {
        if bytes.len() as u64 > COPY_CHUNK {
            // Larger than a frame may be: sent in pieces (through shared
            // memory where there is some) and loaded from the host's
            // staged copy (docs/protocol.md, "Bulk transfers").
            vgpu_guest::client::bulk(|c| c.stage_image(bytes)).map_err(driver::to_cuda)?;
            return if library {
                check::host(&LibraryLoadStaged { ctx })
            } else {
                check::host(&ModuleLoadStaged { ctx })
            };
        }
        let image = Bytes(bytes.to_vec());
        if library {
            check::host(&LibraryLoadData { ctx, image })
        } else {
            check::host(&ModuleLoadData { ctx, image })
        }
    };
    if img.format != Format::Wrapper {
        return Ok(HostImage {
            remote: load(bytes)?,
            key: None,
        });
    }
    let key = ImageKey {
        session: driver::get()?.inventory.session,
        ctx,
        library,
        ptr: img.ptr as usize,
        len: img.len,
        hash: image::fnv1a(bytes),
    };
    // Held across the round trip so two threads loading the same wrapper
    // ship it once.
    let mut shipped = SHIPPED.lock();
    if let Some((remote, refs)) = shipped.get_mut(&key_tuple(&key)) {
        vlog!(
            Level::Debug,
            "image at {:p} ({} bytes) already on the host",
            img.ptr,
            img.len
        );
        *refs += 1;
        return Ok(HostImage {
            remote: *remote,
            key: Some(key),
        });
    }
    let remote = load(bytes)?;
    shipped.insert(key_tuple(&key), (remote, 1));
    Ok(HostImage {
        remote,
        key: Some(key),
    })
}

/// A guest module or library gave up its hold on `s`: the host object goes
/// when nobody else holds it. Returns the host's answer to the unload.
fn release(s: HostImage, library: bool) -> Result<(), CUresult> {
    if let Some(k) = &s.key {
        let mut shipped = SHIPPED.lock();
        if let Some((_, refs)) = shipped.get_mut(&key_tuple(k)) {
            *refs -= 1;
            if *refs > 0 {
                return Ok(());
            }
            shipped.remove(&key_tuple(k));
        }
    }
    forget_globals(s.remote);
    if library {
        check::host(&LibraryUnload { library: s.remote })
    } else {
        check::host(&ModuleUnload { module: s.remote })
    }
}

/// The JIT options that are outputs, filled once a load has run as the
/// driver fills them:
/// - `CU_JIT_WALL_TIME`: the slot is overwritten with the milliseconds the
///   load took (a `float`), here the whole round trip to the host, whose
///   driver compiles there.
/// - `CU_JIT_INFO_LOG_BUFFER`: the host's JIT log is not brought back, so
///   it is left an empty string (and its size option says 0 bytes), rather
///   than an application printing whatever the buffer held before.
/// - `CU_JIT_ERROR_LOG_BUFFER`: after a failure, a line naming the error
///   and where the compiler's own message is (the host's log), capped at
///   the buffer's size; empty after a success.
///
/// The inputs (`CU_JIT_MAX_REGISTERS`, optimization level, target ...)
/// are left to the host driver's defaults and logged at debug level.
///
/// # Safety
/// `options`/`values` hold `n` entries (API contract) or are NULL; each log
/// buffer holds at least its size option's bytes.
unsafe fn jit_outputs(
    n: c_uint,
    options: *mut CUjit_option,
    values: *mut *mut c_void,
    outcome: Result<(), CUresult>,
    took: std::time::Duration,
) {
    if n == 0 || options.is_null() || values.is_null() {
        return;
    }
    // SAFETY: the API contract: n entries in both arrays.
    let (opts, vals) = unsafe {
        (
            std::slice::from_raw_parts(options, n as usize),
            std::slice::from_raw_parts_mut(values, n as usize),
        )
    };
    let error = match outcome {
        Ok(()) => String::new(),
        Err(e) => format!(
            "vgpu: the host's driver refused the image (CUresult {}); the host's log has the \
             compiler's message",
            e.0
        ),
    };
    for (buf_opt, size_opt, text) in [
        (
            CUjit_option::CU_JIT_INFO_LOG_BUFFER,
            CUjit_option::CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
            "",
        ),
        (
            CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
            CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
            error.as_str(),
        ),
    ] {
        let buf = opts.iter().position(|&o| o == buf_opt);
        let size = opts.iter().position(|&o| o == size_opt);
        if let (Some(b), Some(s)) = (buf, size) {
            // The size option's value is the size itself, not a pointer.
            let cap = vals[s] as usize;
            let mut written = 0;
            if !vals[b].is_null() && cap > 0 {
                let n = text.len().min(cap - 1);
                // SAFETY: a buffer of at least `cap` bytes (contract), and
                // `n + 1 <= cap`.
                unsafe {
                    std::ptr::copy_nonoverlapping(text.as_ptr(), vals[b].cast::<u8>(), n);
                    *vals[b].cast::<u8>().add(n) = 0;
                }
                // What the buffer holds, its terminator included.
                written = if n > 0 { n + 1 } else { 0 };
            }
            vals[s] = written as *mut c_void;
        }
    }
    if let Some(w) = opts
        .iter()
        .position(|&o| o == CUjit_option::CU_JIT_WALL_TIME)
    {
        // A `float` in the slot's first bytes, as the driver writes it.
        let ms = took.as_secs_f32() * 1000.0;
        vals[w] = ms.to_bits() as usize as *mut c_void;
    }
    vlog!(
        Level::Debug,
        "JIT options {opts:?}: inputs left to the host driver's defaults"
    );
}

/// Runs a load and fills the JIT options' outputs ([`jit_outputs`]).
///
/// # Safety
/// As [`jit_outputs`].
pub(crate) unsafe fn with_jit_outputs<T>(
    (n, options, values): JitOptions,
    load: impl FnOnce() -> Result<T, CUresult>,
) -> Result<T, CUresult> {
    let started = std::time::Instant::now();
    let r = load();
    let outcome = r.as_ref().map(drop).map_err(|e| *e);
    // SAFETY: forwarded caller contract.
    unsafe { jit_outputs(n, options, values, outcome, started.elapsed()) };
    r
}

// ---- modules ----

/// A module from an image in the current context.
///
/// # Safety
/// `image` is NULL or a valid image (API contract).
unsafe fn load(image: *const c_void) -> Result<Arc<Module>, CUresult> {
    let (ctx, ctx_remote) = check::current()?;
    // SAFETY: forwarded.
    let img = unsafe { image::find(image) }?;
    let shipped = ship(&img, ctx_remote, false)?;
    Ok(Module::register(shipped, ctx, None))
}

/// For the dark API's module loaders (CUDART_INTERFACE slots 1 and 6, after
/// their `driver::require`): a module from a fatbin wrapper (or any other
/// image) in the current context, with what cuModuleLoadData would return.
pub fn load_module_from_wrapper(wrapper: *const c_void) -> Result<CUmodule, CUresult> {
    // SAFETY: cudart passes its registered wrapper, valid for the process.
    unsafe { load(wrapper) }.map(|m| m.handle())
}

/// `cuModuleLoadDataEx`; `cuModuleLoadData` and `cuModuleLoadFatBinary`
/// with no JIT options.
///
/// # Safety
/// `image` is NULL or a valid image; the option arrays are NULL or hold
/// `n` entries (API contract).
pub unsafe fn load_data(
    out: Out<CUmodule>,
    image: *const c_void,
    n: c_uint,
    options: *mut CUjit_option,
    values: *mut *mut c_void,
) -> Result<(), CUresult> {
    // SAFETY: forwarded caller contract, for the options and the image.
    let m = unsafe { with_jit_outputs((n, options, values), || load(image)) }?;
    out.write(m.handle());
    Ok(())
}

/// A file's bytes, with a NUL added (a PTX file on disk need not end in
/// one) so text measures like an image in memory.
pub fn read_image_file(name: &CStr) -> Result<Vec<u8>, CUresult> {
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(name.to_bytes()));
    let mut bytes = std::fs::read(path).map_err(|e| {
        reject(
            CUresult::CUDA_ERROR_FILE_NOT_FOUND,
            format_args!("{}: {e}", path.display()),
        )
    })?;
    bytes.push(0);
    Ok(bytes)
}

pub fn load_file(out: Out<CUmodule>, path: &CStr) -> Result<(), CUresult> {
    let bytes = read_image_file(path)?;
    // SAFETY: a live buffer the call measures and ships before returning.
    let m = unsafe { load(bytes.as_ptr() as *const c_void) }?;
    out.write(m.handle());
    Ok(())
}

pub fn unload(h: CUmodule) -> Result<(), CUresult> {
    // A library's module goes with its library, not with cuModuleUnload;
    // checked and taken in one step, so racing unloads act once.
    let m = {
        let mut modules = MODULES.write();
        match modules.get(h as u64) {
            Ok(m) if m.library.is_none() => modules.take(h as u64)?,
            _ => {
                return Err(reject(
                    INVALID_HANDLE,
                    format_args!("cuModuleUnload: {h:p} is not a loaded module"),
                ))
            }
        }
    };
    m.forget_functions();
    if m.ctx.is_destroyed() {
        // The host dropped it with its context.
        return Ok(());
    }
    release(m.image, false)
}

/// Device globals handed out per host module or library (its remote
/// handle), so they can leave the device table when it is unloaded.
static GLOBALS: Mutex<BTreeMap<u64, Vec<(u64, u64)>>> = Mutex::new(BTreeMap::new());

/// Makes a global known as device memory: a unified `cuMemcpy` naming it
/// (cudaMemcpyToSymbol with cudaMemcpyDefault) must go to the host, never be
/// read as guest memory.
fn remember_global(owner: u64, ctx: &Arc<Context>, (ptr, size): (u64, u64)) {
    if size == 0 || crate::devmem::find(ptr).is_some() {
        return;
    }
    crate::devmem::record(crate::devmem::Range::new(
        ptr,
        size,
        crate::devmem::Kind::External,
        Some(ctx.clone()),
        ctx.device,
    ));
    GLOBALS.lock().entry(owner).or_default().push((ptr, size));
}

/// Drops the globals of an unloaded module or library from the device table.
fn forget_globals(owner: u64) {
    let gone = GLOBALS.lock().remove(&owner).unwrap_or_default();
    for (ptr, size) in gone {
        crate::devmem::take_within(ptr, ptr + size, |r| r.kind == crate::devmem::Kind::External);
    }
}

fn c_name(name: &CStr) -> Result<(CString, String), CUresult> {
    let s = name.to_str().map_err(|_| {
        reject(
            CUresult::CUDA_ERROR_NOT_FOUND,
            format_args!("non-UTF-8 name {name:?}"),
        )
    })?;
    Ok((name.to_owned(), s.to_owned()))
}

/// Says, once per kernel, why the host found no code of it: typically a
/// kernel compiled to machine code (SASS) only, which the software GPU
/// cannot run (it interprets PTX). The application usually only shows the
/// code (cuBLAS: a failed GEMM), so the name is worth a warning.
fn explain_no_binary(e: CUresult, what: &str, name: &str) -> CUresult {
    static SAID: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    if e == CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU
        && SAID
            .lock()
            .get_or_insert_with(HashSet::new)
            .insert(name.to_owned())
    {
        vlog!(
            Level::Warn,
            "{what}(`{name}`): the host has no code of it for this GPU \
             (CUDA_ERROR_NO_BINARY_FOR_GPU; on the software GPU: the image has no PTX for it, \
             only machine code; the host's log names the image)"
        );
    }
    e
}

/// A module's function by name; the same name gives the same handle.
pub fn get_function(out: Out<CUfunction>, m: Live<Module>, name: &CStr) -> Result<(), CUresult> {
    let (cname, name) = c_name(name)?;
    let f = {
        let mut functions = m.functions.lock();
        match functions.get(&cname) {
            Some(f) => f.clone(),
            None => {
                let info = check::host(&ModuleGetFunction {
                    module: m.remote(),
                    name: name.clone(),
                })
                .map_err(|e| explain_no_binary(e, "cuModuleGetFunction", &name))?;
                let f = Func::register(FuncKind::Function, info, cname.clone(), m.handle);
                functions.insert(cname, f.clone());
                f
            }
        }
    };
    out.write(f.handle());
    Ok(())
}

/// Writes a global's address and size, each where the caller wants it
/// (either may be NULL), at the widths of its entry point; a global the
/// legacy 32-bit outputs cannot hold is INVALID_VALUE.
fn write_global<P: Word, S: Word>(
    dptr: Option<Out<P>>,
    bytes: Option<Out<S>>,
    (ptr, size): (u64, u64),
) -> Result<(), CUresult> {
    let (Some(p), Some(s)) = (P::exact(ptr), S::exact(size)) else {
        return Err(reject(
            INVALID_VALUE,
            format_args!(
                "global at {ptr:#x} ({size} bytes) does not fit the legacy 32-bit outputs"
            ),
        ));
    };
    if let Some(out) = dptr {
        out.write(p);
    }
    if let Some(out) = bytes {
        out.write(s);
    }
    Ok(())
}

/// `cuModuleGetGlobal_v2`, and the 32-bit `cuModuleGetGlobal`.
pub fn get_global<P: Word, S: Word>(
    dptr: Option<Out<P>>,
    bytes: Option<Out<S>>,
    m: Live<Module>,
    name: &CStr,
) -> Result<(), CUresult> {
    let (_, name) = c_name(name)?;
    let g = check::host(&ModuleGetGlobal {
        module: m.remote(),
        name,
    })?;
    remember_global(m.remote(), &m.ctx, g);
    write_global(dptr, bytes, g)
}

// ---- libraries ----

/// The context a library load names to the host: the current one, or 0
/// when there is none — libraries are context-independent in CUDA, and
/// cudart 12+ loads its fatbins with `cuLibraryLoadData` before any context
/// is current when a kernel launch is a program's first CUDA call.
fn library_ctx() -> Result<u64, CUresult> {
    match check::current() {
        Ok((_, remote)) => Ok(remote),
        Err(CUresult::CUDA_ERROR_INVALID_CONTEXT) => Ok(0),
        Err(e) => Err(e),
    }
}

/// JIT options: `(count, options, values)`.
pub(crate) type JitOptions = (c_uint, *mut CUjit_option, *mut *mut c_void);

/// # Safety
/// `image` NULL or a valid image; the option arrays are NULL or hold their
/// counts of entries.
unsafe fn library_load(
    out: Out<CUlibrary>,
    image: *const c_void,
    jit: JitOptions,
    n_lib: c_uint,
    lib_options: *mut CUlibraryOption,
) -> Result<(), CUresult> {
    if n_lib > 0 && !lib_options.is_null() {
        // SAFETY: n_lib entries (API contract).
        let opts = unsafe { std::slice::from_raw_parts(lib_options, n_lib as usize) };
        // The image is always copied to the host, so "the binary is
        // preserved" needs nothing from us.
        vlog!(Level::Debug, "cuLibraryLoad: library options {opts:?}");
    }
    let load = || {
        let ctx = library_ctx()?;
        // SAFETY: forwarded.
        let img = unsafe { image::find(image) }?;
        ship(&img, ctx, true)
    };
    // SAFETY: forwarded caller contract.
    let shipped = unsafe { with_jit_outputs(jit, load) }?;
    let l = args::register(&LIBRARIES, |handle| Library {
        handle,
        image: shipped,
        kernels: Mutex::new(HashMap::new()),
        modules: Mutex::new(HashMap::new()),
    });
    out.write(l.handle());
    Ok(())
}

/// # Safety
/// As [`library_load`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn library_load_data(
    out: Out<CUlibrary>,
    code: *const c_void,
    jit_options: *mut CUjit_option,
    jit_values: *mut *mut c_void,
    n_jit: c_uint,
    lib_options: *mut CUlibraryOption,
    _lib_values: *mut *mut c_void,
    n_lib: c_uint,
) -> Result<(), CUresult> {
    let jit = (n_jit, jit_options, jit_values);
    // SAFETY: forwarded caller contract.
    unsafe { library_load(out, code, jit, n_lib, lib_options) }
}

/// # Safety
/// The option arrays are NULL or hold their counts of entries.
#[allow(clippy::too_many_arguments)]
pub unsafe fn library_load_from_file(
    out: Out<CUlibrary>,
    path: &CStr,
    jit_options: *mut CUjit_option,
    jit_values: *mut *mut c_void,
    n_jit: c_uint,
    lib_options: *mut CUlibraryOption,
    _lib_values: *mut *mut c_void,
    n_lib: c_uint,
) -> Result<(), CUresult> {
    let bytes = read_image_file(path)?;
    let jit = (n_jit, jit_options, jit_values);
    // SAFETY: a live buffer the call measures and ships before returning;
    // the option arrays per the caller.
    unsafe { library_load(out, bytes.as_ptr().cast(), jit, n_lib, lib_options) }
}

pub fn library_unload(h: CUlibrary) -> Result<(), CUresult> {
    let l = LIBRARIES.take(h as u64)?;
    let kernels = std::mem::take(&mut *l.kernels.lock());
    for k in kernels.values() {
        k.unregister();
    }
    let modules = std::mem::take(&mut *l.modules.lock());
    for m in modules.values() {
        let _ = MODULES.take(m.handle);
        m.forget_functions();
    }
    release(l.image, true)
}

pub fn library_get_kernel(
    out: Out<CUkernel>,
    l: Live<Library>,
    name: &CStr,
) -> Result<(), CUresult> {
    let (cname, name) = c_name(name)?;
    let k = {
        let mut kernels = l.kernels.lock();
        match kernels.get(&cname) {
            Some(k) => k.clone(),
            None => {
                let info = check::host(&LibraryGetKernel {
                    library: l.image.remote,
                    name: name.clone(),
                })
                .map_err(|e| explain_no_binary(e, "cuLibraryGetKernel", &name))?;
                let k = Func::register(FuncKind::Kernel, info, cname.clone(), l.handle);
                kernels.insert(cname, k.clone());
                k
            }
        }
    };
    out.write(k.handle() as CUkernel);
    Ok(())
}

pub fn library_get_module(out: Out<CUmodule>, l: Live<Library>) -> Result<(), CUresult> {
    let (ctx, ctx_remote) = check::current()?;
    let m = {
        let mut modules = l.modules.lock();
        match modules.get(&ctx.id) {
            Some(m) => m.clone(),
            None => {
                let remote = check::host(&LibraryGetModule {
                    ctx: ctx_remote,
                    library: l.image.remote,
                })?;
                // The library owns the host module: never unloaded alone.
                let image = HostImage { remote, key: None };
                let m = Module::register(image, ctx.clone(), Some(l.handle));
                modules.insert(ctx.id, m.clone());
                m
            }
        }
    };
    out.write(m.handle());
    Ok(())
}

pub fn library_get_global(
    dptr: Option<Out<CUdeviceptr>>,
    bytes: Option<Out<usize>>,
    l: Live<Library>,
    name: &CStr,
) -> Result<(), CUresult> {
    let (_, name) = c_name(name)?;
    let (cur, ctx) = check::current()?;
    let g = check::host(&LibraryGetGlobal {
        ctx,
        library: l.image.remote,
        name,
    })?;
    remember_global(l.image.remote, &cur, g);
    write_global(dptr, bytes, g)
}

// ---- kernels and functions ----
//
// A body taking `Live<Func>` serves `cuFunc*` (any function or kernel) and
// `cuKernel*` (kernels only) alike: the conversion of the export's handle
// type decides what the handle may name.

pub fn kernel_get_function(out: Out<CUfunction>, k: Live<Func>) -> Result<(), CUresult> {
    let (ctx, _) = check::current()?;
    out.write(k.in_context(&ctx)?.handle());
    Ok(())
}

pub fn kernel_get_library(out: Out<CUlibrary>, k: Live<Func>) -> Result<(), CUresult> {
    out.write(args::handle(k.owner));
    Ok(())
}

pub fn func_get_module(out: Out<CUmodule>, f: Live<Func>) -> Result<(), CUresult> {
    if f.kind == FuncKind::Kernel {
        return Err(reject(
            INVALID_HANDLE,
            format_args!("cuFuncGetModule: {:p} is a kernel", f.handle()),
        ));
    }
    out.write(args::handle(f.owner));
    Ok(())
}

/// `cuFuncGetName`, `cuKernelGetName`. The name lives as long as the
/// function: until its module unloads.
pub fn get_name(out: Out<*const c_char>, f: Live<Func>) -> Result<(), CUresult> {
    out.write(f.name.as_ptr());
    Ok(())
}

/// `cuFuncGetParamInfo`, `cuKernelGetParamInfo`; either output may be NULL.
pub fn get_param_info(
    f: Live<Func>,
    index: usize,
    offset: Option<Out<usize>>,
    size: Option<Out<usize>>,
) -> Result<(), CUresult> {
    let params = f.layout()?;
    let &(o, s) = params.get(index).ok_or_else(|| {
        reject(
            INVALID_VALUE,
            format_args!(
                "{:?} has {} parameters, not {}",
                f.name,
                params.len(),
                index + 1
            ),
        )
    })?;
    if let Some(out) = offset {
        out.write(o as usize);
    }
    if let Some(out) = size {
        out.write(s as usize);
    }
    Ok(())
}

/// `cuFuncGetParamCount`, `cuKernelGetParamCount`.
pub fn get_param_count(f: Live<Func>, out: Out<usize>) -> Result<(), CUresult> {
    out.write(f.layout()?.len());
    Ok(())
}

/// Functions are loaded with their module (no lazy loading on the host
/// side is visible to the guest).
pub fn func_is_loaded(out: Out<CUfunctionLoadingState>, _f: Live<Func>) -> Result<(), CUresult> {
    out.write(CUfunctionLoadingState::CU_FUNCTION_LOADING_STATE_LOADED);
    Ok(())
}

pub fn func_load(_f: Live<Func>) -> Result<(), CUresult> {
    Ok(())
}

/// One attribute, from the host. The host accepts a kernel's handle
/// wherever it takes a function's for attributes, so no per-context
/// function is needed for these.
pub fn attribute(f: &Func, attr: CUfunction_attribute) -> Result<c_int, CUresult> {
    check::host(&FuncGetAttribute {
        func: f.remote,
        attr: attr.0 as i32,
    })
}

pub fn func_get_attribute(
    out: Out<c_int>,
    attr: CUfunction_attribute,
    f: Live<Func>,
) -> Result<(), CUresult> {
    out.write(attribute(&f, attr)?);
    Ok(())
}

// The `cuKernel*` forms that name a device: `dev` is accepted as long as
// it is one (its conversion checks that), the kernel's attributes being
// the same on every device vgpu shows (all come from one host).

pub fn kernel_get_attribute(
    out: Out<c_int>,
    attr: CUfunction_attribute,
    k: Live<Func>,
    _dev: Device,
) -> Result<(), CUresult> {
    func_get_attribute(out, attr, k)
}

pub fn kernel_set_attribute(
    attr: CUfunction_attribute,
    value: c_int,
    k: Live<Func>,
    _dev: Device,
) -> Result<(), CUresult> {
    func_set_attribute(k, attr, value)
}

pub fn kernel_set_cache_config(
    k: Live<Func>,
    config: CUfunc_cache,
    _dev: Device,
) -> Result<(), CUresult> {
    func_set_cache_config(k, config)
}

pub fn func_set_attribute(
    f: Live<Func>,
    attr: CUfunction_attribute,
    value: c_int,
) -> Result<(), CUresult> {
    check::host(&FuncSetAttribute {
        func: f.remote,
        attr: attr.0 as i32,
        value,
    })
}

pub fn func_set_cache_config(f: Live<Func>, config: CUfunc_cache) -> Result<(), CUresult> {
    check::host(&FuncSetCacheConfig {
        func: f.remote,
        config: config.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vgpu_ffi::from_cuda;

    fn as_function(h: CUfunction) -> Result<Live<Func>, CUresult> {
        // SAFETY: a plain handle value; nothing is dereferenced.
        unsafe { from_cuda::<_, Live<Func>, CUresult>(h) }
    }

    fn as_kernel(h: CUkernel) -> Result<Live<Func>, CUresult> {
        // SAFETY: as above.
        unsafe { from_cuda::<_, Live<Func>, CUresult>(h) }
    }

    /// The outputs among the JIT options are written as the driver writes
    /// them: wall time as a float in the slot, logs NUL-terminated within
    /// their size, sizes replaced by what was written.
    #[test]
    fn jit_option_outputs() {
        use CUjit_option as O;
        let run = |outcome: Result<(), CUresult>, cap: usize| {
            let mut info = [b'x'; 64];
            let mut error = vec![b'x'; cap.max(1)];
            let mut opts = [
                O::CU_JIT_MAX_REGISTERS,
                O::CU_JIT_WALL_TIME,
                O::CU_JIT_INFO_LOG_BUFFER,
                O::CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
                O::CU_JIT_ERROR_LOG_BUFFER,
                O::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
            ];
            let mut vals: [*mut c_void; 6] = [
                32 as *mut c_void,
                std::ptr::null_mut(),
                info.as_mut_ptr().cast(),
                info.len() as *mut c_void,
                error.as_mut_ptr().cast(),
                cap as *mut c_void,
            ];
            let took = std::time::Duration::from_micros(2500);
            // SAFETY: six entries in both arrays; each buffer is at least
            // its size option's bytes.
            unsafe { jit_outputs(6, opts.as_mut_ptr(), vals.as_mut_ptr(), outcome, took) };
            let error_text = CStr::from_bytes_until_nul(&error)
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "<no NUL>".into());
            (vals, info[0], error_text)
        };
        let (vals, info0, error) = run(Ok(()), 64);
        assert_eq!(vals[0] as usize, 32, "inputs are left alone");
        assert_eq!(f32::from_bits(vals[1] as usize as u32), 2.5);
        assert_eq!((info0, vals[3] as usize), (0, 0));
        assert_eq!((error.as_str(), vals[5] as usize), ("", 0));

        let (vals, _, error) = run(Err(CUresult::CUDA_ERROR_INVALID_PTX), 256);
        assert!(error.contains("CUresult 218"), "{error}");
        assert_eq!(vals[5] as usize, error.len() + 1);
        // Capped at the buffer's size, terminator included.
        let (vals, _, error) = run(Err(CUresult::CUDA_ERROR_INVALID_PTX), 8);
        assert_eq!((error.len(), vals[5] as usize), (7, 8));
    }

    #[test]
    fn kernels_resolve_as_functions_but_not_back() {
        let info = FunctionInfo {
            handle: 5,
            params: Some(vec![(0, 8)]),
        };
        let k = Func::register(FuncKind::Kernel, info, CString::new("k").unwrap(), 0);
        assert!(Arc::ptr_eq(&as_function(k.handle()).unwrap(), &k));
        assert!(as_kernel(k.handle() as CUkernel).is_ok());
        let f = Func::register(
            FuncKind::Function,
            FunctionInfo::default(),
            CString::new("f").unwrap(),
            0,
        );
        assert_eq!(
            as_kernel(f.handle() as CUkernel).err(),
            Some(INVALID_HANDLE)
        );
        assert_eq!(
            as_function(0x1234 as CUfunction).err(),
            Some(INVALID_HANDLE)
        );
        // SAFETY: as above.
        let as_module = unsafe { from_cuda::<_, Live<Module>, CUresult>(k.handle() as CUmodule) };
        assert_eq!(as_module.err(), Some(INVALID_HANDLE));
        k.unregister();
        assert_eq!(as_function(k.handle()).err(), Some(INVALID_HANDLE));
    }

    fn out<T>(p: &mut T) -> Option<Out<'_, T>> {
        // SAFETY: a live local.
        unsafe { from_cuda::<_, Option<Out<T>>, CUresult>(p as *mut T) }.unwrap()
    }

    #[test]
    fn global_widths() {
        let (mut p64, mut s64, mut p32, mut s32) = (0u64, 0usize, 0u32, 0u32);
        assert_eq!(
            write_global(out(&mut p64), out(&mut s64), (1 << 40, 8)),
            Ok(())
        );
        assert_eq!((p64, s64), (1 << 40, 8));
        assert_eq!(
            write_global(out(&mut p32), out(&mut s32), (1 << 40, 8)),
            Err(INVALID_VALUE)
        );
        assert_eq!((p32, s32), (0, 0), "nothing written when one does not fit");
        assert_eq!(
            write_global::<u32, u32>(None, out(&mut s32), (0x1000, 8)),
            Ok(())
        );
        assert_eq!(s32, 8);
    }
}
