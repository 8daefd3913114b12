//! Modules, libraries, kernels and functions: guest objects around the
//! host's handles.
//!
//! Every `CUmodule`, `CUlibrary`, `CUkernel` and `CUfunction` handed to an
//! application is the address of an object in one registry, tagged with
//! its kind, and is found there before use (an invented or unloaded handle
//! is CUDA_ERROR_INVALID_HANDLE, never a dereference). Kernels and
//! functions share one type, [`Func`], so the one lookup behind every
//! `CUfunction` parameter also accepts a `CUkernel`: cudart 13 launches
//! `(CUfunction)kernel`, as cuda.h allows.
//!
//! A function keeps the parameter layout the host reported with it, so
//! launches are packed, and cuFuncGetParamInfo answered, with no round trip.

use crate::check::{self, reject, INVALID_VALUE};
use crate::contexts::Context;
use crate::driver;
use crate::image::{self, Format, Image};
use cuda_types::cuda::{
    CUdevice, CUdeviceptr, CUdeviceptr_v1, CUfunc_cache, CUfunction, CUfunctionLoadingState,
    CUfunction_attribute, CUjit_option, CUkernel, CUlibrary, CUlibraryOption, CUmodule, CUresult,
};
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use vgpu_guest::ffi::OutPtr;
use vgpu_guest::log::Level;
use vgpu_guest::vlog;
use vgpu_transport::codec::Bytes;
use vgpu_transport::proto::{
    FuncGetAttribute, FuncSetAttribute, FuncSetCacheConfig, FunctionInfo, KernelGetFunction,
    LibraryGetGlobal, LibraryGetKernel, LibraryGetModule, LibraryLoadData, LibraryUnload,
    ModuleGetFunction, ModuleGetGlobal, ModuleLoadData, ModuleUnload,
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
    pub kind: FuncKind,
    pub remote: u64,
    pub name: CString,
    /// (offset, size) of each parameter in the argument buffer, in order.
    pub params: Vec<(u32, u32)>,
    /// The handle of the module (functions) or library (kernels) it came
    /// from: `cuFuncGetModule`, `cuKernelGetLibrary`.
    owner: usize,
    /// Kernels: their function in each context, by context id.
    per_ctx: Mutex<HashMap<u64, Arc<Func>>>,
}

impl Func {
    fn new(kind: FuncKind, info: FunctionInfo, name: CString, owner: usize) -> Func {
        Func {
            kind,
            remote: info.handle,
            name,
            params: info.params,
            owner,
            per_ctx: Mutex::new(HashMap::new()),
        }
    }

    pub fn handle(self: &Arc<Self>) -> CUfunction {
        Arc::as_ptr(self) as CUfunction
    }

    /// Bytes of the packed argument buffer.
    pub fn params_size(&self) -> usize {
        cuda_abi::launch::params_size(&self.params)
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
        let f = Arc::new(Func::new(
            FuncKind::Function,
            info,
            self.name.clone(),
            self.owner,
        ));
        insert(Obj::Func(f.clone()));
        map.insert(ctx.id, f.clone());
        Ok(f)
    }
}

/// The host object behind a guest module or library; with a key, other
/// guest objects may share it (see [`ImageKey`]) and the last one to go
/// unloads it.
#[derive(Clone, Copy)]
struct Shared {
    remote: u64,
    key: Option<ImageKey>,
}

pub struct Module {
    shared: Shared,
    pub ctx: Arc<Context>,
    /// A library's module: it goes with the library, not with cuModuleUnload.
    library: Option<usize>,
    functions: Mutex<HashMap<CString, Arc<Func>>>,
}

impl Module {
    pub fn remote(&self) -> u64 {
        self.shared.remote
    }
    fn handle(self: &Arc<Self>) -> CUmodule {
        Arc::as_ptr(self) as CUmodule
    }
}

pub struct Library {
    shared: Shared,
    kernels: Mutex<HashMap<CString, Arc<Func>>>,
    /// Its module in each context, by context id.
    modules: Mutex<HashMap<u64, Arc<Module>>>,
}

impl Library {
    fn handle(self: &Arc<Self>) -> CUlibrary {
        Arc::as_ptr(self) as CUlibrary
    }
}

#[derive(Clone)]
enum Obj {
    Module(Arc<Module>),
    Library(Arc<Library>),
    Func(Arc<Func>),
}

impl Obj {
    fn addr(&self) -> usize {
        match self {
            Obj::Module(m) => Arc::as_ptr(m) as usize,
            Obj::Library(l) => Arc::as_ptr(l) as usize,
            Obj::Func(f) => Arc::as_ptr(f) as usize,
        }
    }
}

static LIVE: RwLock<BTreeMap<usize, Obj>> = RwLock::new(BTreeMap::new());

/// Removes live object `h` if `pick` accepts it — in one step, so no other
/// thread ever sees a handle of the wrong kind vanish and come back.
fn take_live(h: usize, pick: impl FnOnce(&Obj) -> bool) -> Option<Obj> {
    let mut live = LIVE.write();
    if live.get(&h).is_some_and(pick) {
        live.remove(&h)
    } else {
        None
    }
}

fn insert(o: Obj) {
    LIVE.write().insert(o.addr(), o);
}

fn find(h: usize) -> Option<Obj> {
    LIVE.read().get(&h).cloned()
}

fn lookup_module(h: CUmodule) -> Result<Arc<Module>, CUresult> {
    match find(h as usize) {
        Some(Obj::Module(m)) => Ok(m),
        _ => Err(reject(
            INVALID_HANDLE,
            format_args!("{h:p} is not a loaded module"),
        )),
    }
}

fn lookup_library(h: CUlibrary) -> Result<Arc<Library>, CUresult> {
    match find(h as usize) {
        Some(Obj::Library(l)) => Ok(l),
        _ => Err(reject(
            INVALID_HANDLE,
            format_args!("{h:p} is not a loaded library"),
        )),
    }
}

/// A `CUfunction` parameter: a function or a kernel.
pub fn lookup_function(h: CUfunction) -> Result<Arc<Func>, CUresult> {
    match find(h as usize) {
        Some(Obj::Func(f)) => Ok(f),
        _ => Err(reject(
            INVALID_HANDLE,
            format_args!("{h:p} is not a function or kernel of a loaded module"),
        )),
    }
}

fn lookup_kernel(h: CUkernel) -> Result<Arc<Func>, CUresult> {
    match lookup_function(h as CUfunction)? {
        f if f.kind == FuncKind::Kernel => Ok(f),
        _ => Err(reject(
            INVALID_HANDLE,
            format_args!("{h:p} is not a kernel"),
        )),
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
fn ship(img: &Image, ctx: u64, library: bool) -> Result<Shared, CUresult> {
    // SAFETY: `img` was just measured from the caller's live image.
    let bytes = unsafe { img.bytes() };
    let load = |bytes: &[u8]| {
        let image = Bytes(bytes.to_vec());
        if library {
            check::host(&LibraryLoadData { ctx, image })
        } else {
            check::host(&ModuleLoadData { ctx, image })
        }
    };
    if img.format != Format::Wrapper {
        return Ok(Shared {
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
        return Ok(Shared {
            remote: *remote,
            key: Some(key),
        });
    }
    let remote = load(bytes)?;
    shipped.insert(key_tuple(&key), (remote, 1));
    Ok(Shared {
        remote,
        key: Some(key),
    })
}

/// A guest module or library gave up its hold on `s`: the host object goes
/// when nobody else holds it. Returns the host's answer to the unload.
fn release(s: Shared, library: bool) -> Result<(), CUresult> {
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

/// `CU_JIT_*_LOG_BUFFER` options: the host's JIT log is not brought back,
/// so each log buffer is left an empty string and its size option says 0
/// bytes were written — rather than an application printing whatever the
/// buffer held before.
///
/// # Safety
/// `options`/`values` hold `n` entries (API contract) or are NULL.
unsafe fn empty_jit_logs(n: c_uint, options: *mut CUjit_option, values: *mut *mut c_void) {
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
    for (buf_opt, size_opt) in [
        (
            CUjit_option::CU_JIT_INFO_LOG_BUFFER,
            CUjit_option::CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
        ),
        (
            CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
            CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
        ),
    ] {
        let buf = opts.iter().position(|&o| o == buf_opt);
        let size = opts.iter().position(|&o| o == size_opt);
        if let (Some(b), Some(s)) = (buf, size) {
            // The size option's value is the size itself, not a pointer.
            if !vals[b].is_null() && vals[s] as usize > 0 {
                // SAFETY: a buffer of at least that many bytes (contract).
                unsafe { *(vals[b] as *mut c_char) = 0 };
            }
            vals[s] = std::ptr::null_mut();
        }
    }
    if !opts.is_empty() {
        vlog!(
            Level::Debug,
            "JIT options {opts:?}: left to the host driver's defaults"
        );
    }
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
    let shared = ship(&img, ctx_remote, false)?;
    let m = Arc::new(Module {
        shared,
        ctx,
        library: None,
        functions: Mutex::new(HashMap::new()),
    });
    insert(Obj::Module(m.clone()));
    Ok(m)
}

/// # Safety
/// `out` is NULL or writable; `image` NULL or a valid image.
unsafe fn load_into(out: *mut CUmodule, image: *const c_void) -> Result<(), CUresult> {
    driver::get()?;
    if out.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("module load: NULL out-pointer"),
        ));
    }
    // SAFETY: forwarded.
    let m = unsafe { load(image) }?;
    // SAFETY: checked non-null; writable by contract.
    unsafe { out.write_or(m.handle(), INVALID_VALUE) }
}

/// For the dark API's module loaders (CUDART_INTERFACE slots 1, 6, 8):
/// a module from a fatbin wrapper (or any other image) in the current
/// context, with what cuModuleLoadData would return.
pub fn load_module_from_wrapper(wrapper: *const c_void) -> Result<CUmodule, CUresult> {
    driver::get()?;
    // SAFETY: cudart passes its registered wrapper, valid for the process.
    unsafe { load(wrapper) }.map(|m| m.handle())
}

pub unsafe fn load_data(out: *mut CUmodule, image: *const c_void) -> Result<(), CUresult> {
    // SAFETY: forwarded caller contract.
    unsafe { load_into(out, image) }
}

pub unsafe fn load_data_ex(
    out: *mut CUmodule,
    image: *const c_void,
    n: c_uint,
    options: *mut CUjit_option,
    values: *mut *mut c_void,
) -> Result<(), CUresult> {
    // SAFETY: forwarded caller contract.
    unsafe {
        empty_jit_logs(n, options, values);
        load_into(out, image)
    }
}

pub unsafe fn load_fat_binary(out: *mut CUmodule, fatbin: *const c_void) -> Result<(), CUresult> {
    // SAFETY: forwarded caller contract.
    unsafe { load_into(out, fatbin) }
}

/// A file's bytes, with a NUL added (a PTX file on disk need not end in
/// one) so text measures like an image in memory.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
pub unsafe fn read_image_file(path: *const c_char) -> Result<Vec<u8>, CUresult> {
    if path.is_null() {
        return Err(reject(INVALID_VALUE, format_args!("NULL file name")));
    }
    // SAFETY: a NUL-terminated file name (API contract).
    let name = unsafe { CStr::from_ptr(path) };
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

pub unsafe fn load_file(out: *mut CUmodule, path: *const c_char) -> Result<(), CUresult> {
    driver::get()?;
    // SAFETY: forwarded caller contract.
    let bytes = unsafe { read_image_file(path) }?;
    // SAFETY: a live buffer the call measures and ships before returning.
    unsafe { load_into(out, bytes.as_ptr() as *const c_void) }
}

pub fn unload(h: CUmodule) -> Result<(), CUresult> {
    driver::get()?;
    // A library's module goes with its library, not with cuModuleUnload.
    let Some(Obj::Module(m)) = take_live(
        h as usize,
        |o| matches!(o, Obj::Module(m) if m.library.is_none()),
    ) else {
        return Err(reject(
            INVALID_HANDLE,
            format_args!("cuModuleUnload: {h:p}"),
        ));
    };
    let functions = std::mem::take(&mut *m.functions.lock());
    {
        let mut live = LIVE.write();
        for f in functions.values() {
            live.remove(&(Arc::as_ptr(f) as usize));
        }
    }
    if m.ctx.is_destroyed() {
        // The host dropped it with its context.
        return Ok(());
    }
    release(m.shared, false)
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

fn c_name(name: *const c_char) -> Result<(CString, String), CUresult> {
    if name.is_null() {
        return Err(reject(INVALID_VALUE, format_args!("NULL symbol name")));
    }
    // SAFETY: a NUL-terminated name (API contract).
    let c = unsafe { CStr::from_ptr(name) };
    let s = c.to_str().map_err(|_| {
        reject(
            CUresult::CUDA_ERROR_NOT_FOUND,
            format_args!("non-UTF-8 name {c:?}"),
        )
    })?;
    Ok((c.to_owned(), s.to_owned()))
}

/// A module's function by name; the same name gives the same handle.
fn module_function(m: &Arc<Module>, name: *const c_char) -> Result<Arc<Func>, CUresult> {
    let (cname, name) = c_name(name)?;
    let mut functions = m.functions.lock();
    if let Some(f) = functions.get(&cname) {
        return Ok(f.clone());
    }
    let info = check::host(&ModuleGetFunction {
        module: m.remote(),
        name,
    })?;
    let f = Arc::new(Func::new(
        FuncKind::Function,
        info,
        cname.clone(),
        Arc::as_ptr(m) as usize,
    ));
    insert(Obj::Func(f.clone()));
    functions.insert(cname, f.clone());
    Ok(f)
}

pub unsafe fn get_function(
    out: *mut CUfunction,
    h: CUmodule,
    name: *const c_char,
) -> Result<(), CUresult> {
    driver::get()?;
    if out.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuModuleGetFunction: NULL out-pointer"),
        ));
    }
    let m = lookup_module(h)?;
    let f = module_function(&m, name)?;
    // SAFETY: checked non-null; writable by contract.
    unsafe { out.write_or(f.handle(), INVALID_VALUE) }
}

/// # Safety
/// Each output is NULL or writable.
unsafe fn write_global<P, S>(
    dptr: *mut P,
    bytes: *mut S,
    (ptr, size): (u64, u64),
    conv: impl Fn(u64, u64) -> Option<(P, S)>,
) -> Result<(), CUresult> {
    let (p, s) = conv(ptr, size).ok_or_else(|| {
        reject(
            INVALID_VALUE,
            format_args!(
                "global at {ptr:#x} ({size} bytes) does not fit the legacy 32-bit outputs"
            ),
        )
    })?;
    // SAFETY: the caller's contract; either output may be NULL.
    unsafe {
        if !dptr.is_null() {
            dptr.write_unaligned(p);
        }
        if !bytes.is_null() {
            bytes.write_unaligned(s);
        }
    }
    Ok(())
}

pub unsafe fn get_global_v2(
    dptr: *mut CUdeviceptr,
    bytes: *mut usize,
    h: CUmodule,
    name: *const c_char,
) -> Result<(), CUresult> {
    driver::get()?;
    let m = lookup_module(h)?;
    let (_, name) = c_name(name)?;
    let g = check::host(&ModuleGetGlobal {
        module: m.remote(),
        name,
    })?;
    remember_global(m.remote(), &m.ctx, g);
    // SAFETY: forwarded caller contract.
    unsafe { write_global(dptr, bytes, g, |p, s| Some((p, s as usize))) }
}

pub unsafe fn get_global_v1(
    dptr: *mut CUdeviceptr_v1,
    bytes: *mut c_uint,
    h: CUmodule,
    name: *const c_char,
) -> Result<(), CUresult> {
    driver::get()?;
    let m = lookup_module(h)?;
    let (_, name) = c_name(name)?;
    let g = check::host(&ModuleGetGlobal {
        module: m.remote(),
        name,
    })?;
    remember_global(m.remote(), &m.ctx, g);
    // SAFETY: forwarded caller contract.
    unsafe {
        write_global(dptr, bytes, g, |p, s| {
            Some((u32::try_from(p).ok()?, u32::try_from(s).ok()?))
        })
    }
}

// ---- libraries ----

/// The context a library load runs in: libraries are context-independent
/// in CUDA, but the host loads them through one; cudart always has its
/// primary context current by then.
fn library_ctx() -> Result<u64, CUresult> {
    let (_, remote) = check::current()?;
    Ok(remote)
}

/// # Safety
/// `out` NULL or writable; `image` NULL or a valid image; the option
/// arrays hold their counts of entries.
#[allow(clippy::too_many_arguments)]
unsafe fn library_load(
    out: *mut CUlibrary,
    image: *const c_void,
    n_jit: c_uint,
    jit_options: *mut CUjit_option,
    jit_values: *mut *mut c_void,
    n_lib: c_uint,
    lib_options: *mut CUlibraryOption,
) -> Result<(), CUresult> {
    driver::get()?;
    if out.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuLibraryLoad: NULL out-pointer"),
        ));
    }
    // SAFETY: forwarded caller contract.
    unsafe { empty_jit_logs(n_jit, jit_options, jit_values) };
    if n_lib > 0 && !lib_options.is_null() {
        // SAFETY: n_lib entries (API contract).
        let opts = unsafe { std::slice::from_raw_parts(lib_options, n_lib as usize) };
        // The image is always copied to the host, so "the binary is
        // preserved" needs nothing from us.
        vlog!(Level::Debug, "cuLibraryLoad: library options {opts:?}");
    }
    let ctx = library_ctx()?;
    // SAFETY: forwarded.
    let img = unsafe { image::find(image) }?;
    let shared = ship(&img, ctx, true)?;
    let l = Arc::new(Library {
        shared,
        kernels: Mutex::new(HashMap::new()),
        modules: Mutex::new(HashMap::new()),
    });
    insert(Obj::Library(l.clone()));
    // SAFETY: checked non-null; writable by contract.
    unsafe { out.write_or(l.handle(), INVALID_VALUE) }
}

#[allow(clippy::too_many_arguments)]
pub unsafe fn library_load_data(
    out: *mut CUlibrary,
    code: *const c_void,
    jit_options: *mut CUjit_option,
    jit_values: *mut *mut c_void,
    n_jit: c_uint,
    lib_options: *mut CUlibraryOption,
    _lib_values: *mut *mut c_void,
    n_lib: c_uint,
) -> Result<(), CUresult> {
    // SAFETY: forwarded caller contract.
    unsafe {
        library_load(
            out,
            code,
            n_jit,
            jit_options,
            jit_values,
            n_lib,
            lib_options,
        )
    }
}

#[allow(clippy::too_many_arguments)]
pub unsafe fn library_load_from_file(
    out: *mut CUlibrary,
    path: *const c_char,
    jit_options: *mut CUjit_option,
    jit_values: *mut *mut c_void,
    n_jit: c_uint,
    lib_options: *mut CUlibraryOption,
    _lib_values: *mut *mut c_void,
    n_lib: c_uint,
) -> Result<(), CUresult> {
    driver::get()?;
    // SAFETY: forwarded caller contract.
    let bytes = unsafe { read_image_file(path) }?;
    // SAFETY: a live buffer the call measures and ships before returning.
    unsafe {
        library_load(
            out,
            bytes.as_ptr() as *const c_void,
            n_jit,
            jit_options,
            jit_values,
            n_lib,
            lib_options,
        )
    }
}

pub fn library_unload(h: CUlibrary) -> Result<(), CUresult> {
    driver::get()?;
    let Some(Obj::Library(l)) = take_live(h as usize, |o| matches!(o, Obj::Library(_))) else {
        return Err(reject(
            INVALID_HANDLE,
            format_args!("cuLibraryUnload: {h:p}"),
        ));
    };
    let kernels = std::mem::take(&mut *l.kernels.lock());
    let modules = std::mem::take(&mut *l.modules.lock());
    {
        let mut live = LIVE.write();
        for k in kernels.values() {
            live.remove(&(Arc::as_ptr(k) as usize));
            for f in k.per_ctx.lock().values() {
                live.remove(&(Arc::as_ptr(f) as usize));
            }
        }
        for m in modules.values() {
            live.remove(&(Arc::as_ptr(m) as usize));
            for f in m.functions.lock().values() {
                live.remove(&(Arc::as_ptr(f) as usize));
            }
        }
    }
    release(l.shared, true)
}

pub unsafe fn library_get_kernel(
    out: *mut CUkernel,
    h: CUlibrary,
    name: *const c_char,
) -> Result<(), CUresult> {
    driver::get()?;
    if out.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuLibraryGetKernel: NULL out-pointer"),
        ));
    }
    let l = lookup_library(h)?;
    let (cname, name) = c_name(name)?;
    let k = {
        let mut kernels = l.kernels.lock();
        match kernels.get(&cname) {
            Some(k) => k.clone(),
            None => {
                let info = check::host(&LibraryGetKernel {
                    library: l.shared.remote,
                    name,
                })?;
                let k = Arc::new(Func::new(
                    FuncKind::Kernel,
                    info,
                    cname.clone(),
                    Arc::as_ptr(&l) as usize,
                ));
                insert(Obj::Func(k.clone()));
                kernels.insert(cname, k.clone());
                k
            }
        }
    };
    // SAFETY: checked non-null; writable by contract.
    unsafe { out.write_or(k.handle() as CUkernel, INVALID_VALUE) }
}

pub unsafe fn library_get_module(out: *mut CUmodule, h: CUlibrary) -> Result<(), CUresult> {
    driver::get()?;
    if out.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuLibraryGetModule: NULL out-pointer"),
        ));
    }
    let l = lookup_library(h)?;
    let (ctx, ctx_remote) = check::current()?;
    let m = {
        let mut modules = l.modules.lock();
        match modules.get(&ctx.id) {
            Some(m) => m.clone(),
            None => {
                let remote = check::host(&LibraryGetModule {
                    ctx: ctx_remote,
                    library: l.shared.remote,
                })?;
                let m = Arc::new(Module {
                    // The library owns the host module: never unloaded alone.
                    shared: Shared { remote, key: None },
                    ctx: ctx.clone(),
                    library: Some(Arc::as_ptr(&l) as usize),
                    functions: Mutex::new(HashMap::new()),
                });
                insert(Obj::Module(m.clone()));
                modules.insert(ctx.id, m.clone());
                m
            }
        }
    };
    // SAFETY: checked non-null; writable by contract.
    unsafe { out.write_or(m.handle(), INVALID_VALUE) }
}

pub unsafe fn library_get_global(
    dptr: *mut CUdeviceptr,
    bytes: *mut usize,
    h: CUlibrary,
    name: *const c_char,
) -> Result<(), CUresult> {
    driver::get()?;
    let l = lookup_library(h)?;
    let (_, name) = c_name(name)?;
    let (cur, ctx) = check::current()?;
    let g = check::host(&LibraryGetGlobal {
        ctx,
        library: l.shared.remote,
        name,
    })?;
    remember_global(l.shared.remote, &cur, g);
    // SAFETY: forwarded caller contract.
    unsafe { write_global(dptr, bytes, g, |p, s| Some((p, s as usize))) }
}

// ---- kernels and functions ----

pub unsafe fn kernel_get_function(out: *mut CUfunction, h: CUkernel) -> Result<(), CUresult> {
    driver::get()?;
    if out.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuKernelGetFunction: NULL out-pointer"),
        ));
    }
    let k = lookup_kernel(h)?;
    let (ctx, _) = check::current()?;
    let f = k.in_context(&ctx)?;
    // SAFETY: checked non-null; writable by contract.
    unsafe { out.write_or(f.handle(), INVALID_VALUE) }
}

pub unsafe fn kernel_get_library(out: *mut CUlibrary, h: CUkernel) -> Result<(), CUresult> {
    driver::get()?;
    let k = lookup_kernel(h)?;
    // SAFETY: writable or NULL by contract.
    unsafe { out.write_or(k.owner as CUlibrary, INVALID_VALUE) }
}

pub unsafe fn func_get_module(out: *mut CUmodule, h: CUfunction) -> Result<(), CUresult> {
    driver::get()?;
    let f = lookup_function(h)?;
    if f.kind == FuncKind::Kernel {
        return Err(reject(
            INVALID_HANDLE,
            format_args!("cuFuncGetModule: {h:p} is a kernel"),
        ));
    }
    // SAFETY: writable or NULL by contract.
    unsafe { out.write_or(f.owner as CUmodule, INVALID_VALUE) }
}

pub unsafe fn func_get_name(out: *mut *const c_char, h: CUfunction) -> Result<(), CUresult> {
    driver::get()?;
    let f = lookup_function(h)?;
    // The name lives as long as the function: until its module unloads.
    // SAFETY: writable or NULL by contract.
    unsafe { out.write_or(f.name.as_ptr(), INVALID_VALUE) }
}

pub unsafe fn kernel_get_name(out: *mut *const c_char, h: CUkernel) -> Result<(), CUresult> {
    driver::get()?;
    let k = lookup_kernel(h)?;
    // SAFETY: writable or NULL by contract.
    unsafe { out.write_or(k.name.as_ptr(), INVALID_VALUE) }
}

/// # Safety
/// Each output is NULL or writable.
unsafe fn param_info(
    f: &Func,
    index: usize,
    offset: *mut usize,
    size: *mut usize,
) -> Result<(), CUresult> {
    let &(o, s) = f.params.get(index).ok_or_else(|| {
        reject(
            INVALID_VALUE,
            format_args!(
                "{:?} has {} parameters, not {}",
                f.name,
                f.params.len(),
                index + 1
            ),
        )
    })?;
    // SAFETY: the caller's contract; either output may be NULL.
    unsafe {
        if !offset.is_null() {
            offset.write_unaligned(o as usize);
        }
        if !size.is_null() {
            size.write_unaligned(s as usize);
        }
    }
    Ok(())
}

pub unsafe fn func_get_param_info(
    h: CUfunction,
    index: usize,
    offset: *mut usize,
    size: *mut usize,
) -> Result<(), CUresult> {
    driver::get()?;
    let f = lookup_function(h)?;
    // SAFETY: forwarded caller contract.
    unsafe { param_info(&f, index, offset, size) }
}

pub unsafe fn kernel_get_param_info(
    h: CUkernel,
    index: usize,
    offset: *mut usize,
    size: *mut usize,
) -> Result<(), CUresult> {
    driver::get()?;
    let k = lookup_kernel(h)?;
    // SAFETY: forwarded caller contract.
    unsafe { param_info(&k, index, offset, size) }
}

pub unsafe fn func_get_param_count(h: CUfunction, out: *mut usize) -> Result<(), CUresult> {
    driver::get()?;
    let f = lookup_function(h)?;
    // SAFETY: writable or NULL by contract.
    unsafe { out.write_or(f.params.len(), INVALID_VALUE) }
}

pub unsafe fn kernel_get_param_count(h: CUkernel, out: *mut usize) -> Result<(), CUresult> {
    driver::get()?;
    let k = lookup_kernel(h)?;
    // SAFETY: writable or NULL by contract.
    unsafe { out.write_or(k.params.len(), INVALID_VALUE) }
}

/// Functions are loaded with their module (no lazy loading on the host
/// side is visible to the guest).
pub unsafe fn func_is_loaded(
    out: *mut CUfunctionLoadingState,
    h: CUfunction,
) -> Result<(), CUresult> {
    driver::get()?;
    lookup_function(h)?;
    // SAFETY: writable or NULL by contract.
    unsafe {
        out.write_or(
            CUfunctionLoadingState::CU_FUNCTION_LOADING_STATE_LOADED,
            INVALID_VALUE,
        )
    }
}

pub fn func_load(h: CUfunction) -> Result<(), CUresult> {
    driver::get()?;
    lookup_function(h).map(|_| ())
}

/// The host accepts a kernel's handle wherever it takes a function's for
/// attributes, so no per-context function is needed for these.
pub unsafe fn func_get_attribute(
    out: *mut c_int,
    attr: CUfunction_attribute,
    h: CUfunction,
) -> Result<(), CUresult> {
    driver::get()?;
    if out.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuFuncGetAttribute: NULL out-pointer"),
        ));
    }
    let f = lookup_function(h)?;
    let v = check::host(&FuncGetAttribute {
        func: f.remote,
        attr: attr.0 as i32,
    })?;
    // SAFETY: checked non-null; writable by contract.
    unsafe { out.write_or(v, INVALID_VALUE) }
}

/// `dev` is accepted as long as it is a device: the kernel's attributes are
/// the same on every device vgpu shows (all come from one host).
pub unsafe fn kernel_get_attribute(
    out: *mut c_int,
    attr: CUfunction_attribute,
    h: CUkernel,
    dev: CUdevice,
) -> Result<(), CUresult> {
    driver::get()?.device(dev)?;
    lookup_kernel(h)?;
    // SAFETY: forwarded caller contract.
    unsafe { func_get_attribute(out, attr, h as CUfunction) }
}

pub fn func_set_attribute(
    h: CUfunction,
    attr: CUfunction_attribute,
    value: c_int,
) -> Result<(), CUresult> {
    driver::get()?;
    let f = lookup_function(h)?;
    check::host(&FuncSetAttribute {
        func: f.remote,
        attr: attr.0 as i32,
        value,
    })
}

pub fn kernel_set_attribute(
    attr: CUfunction_attribute,
    value: c_int,
    h: CUkernel,
    dev: CUdevice,
) -> Result<(), CUresult> {
    driver::get()?.device(dev)?;
    lookup_kernel(h)?;
    func_set_attribute(h as CUfunction, attr, value)
}

pub fn func_set_cache_config(h: CUfunction, config: CUfunc_cache) -> Result<(), CUresult> {
    driver::get()?;
    let f = lookup_function(h)?;
    check::host(&FuncSetCacheConfig {
        func: f.remote,
        config: config.0,
    })
}

pub fn kernel_set_cache_config(
    h: CUkernel,
    config: CUfunc_cache,
    dev: CUdevice,
) -> Result<(), CUresult> {
    driver::get()?.device(dev)?;
    lookup_kernel(h)?;
    func_set_cache_config(h as CUfunction, config)
}

/// What a launch of `h` in the calling context runs, with its layout.
pub fn launchable(h: CUfunction, ctx: &Arc<Context>) -> Result<Arc<Func>, CUresult> {
    lookup_function(h)?.in_context(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_resolve_as_functions_but_not_back() {
        let k = Arc::new(Func::new(
            FuncKind::Kernel,
            FunctionInfo {
                handle: 5,
                params: vec![(0, 8)],
            },
            CString::new("k").unwrap(),
            0,
        ));
        insert(Obj::Func(k.clone()));
        let as_fn = lookup_function(k.handle()).unwrap();
        assert!(Arc::ptr_eq(&as_fn, &k));
        assert!(lookup_kernel(k.handle() as CUkernel).is_ok());
        let f = Arc::new(Func::new(
            FuncKind::Function,
            FunctionInfo::default(),
            CString::new("f").unwrap(),
            0,
        ));
        insert(Obj::Func(f.clone()));
        assert_eq!(
            lookup_kernel(f.handle() as CUkernel).err(),
            Some(INVALID_HANDLE)
        );
        assert_eq!(
            lookup_function(0x1234 as CUfunction).err(),
            Some(INVALID_HANDLE)
        );
        assert_eq!(
            lookup_module(k.handle() as CUmodule).err(),
            Some(INVALID_HANDLE)
        );
    }
}
