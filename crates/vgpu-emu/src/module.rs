//! Modules, libraries, functions and kernels.
//!
//! Every handle is minted by one registry (`OBJECTS`) and looked up there,
//! never dereferenced, so a stale or forged handle is an error code. One
//! registry for all four kinds is what lets a `CUkernel` stand in for a
//! `CUfunction` (cudart 13 launches `(CUfunction)kernel`): the registry says
//! which one a value names, and a kernel resolves to its library's module in
//! the calling thread's current context. The conversions into
//! [`Live`]`<LoadedModule | Function | Library | Kernel>` do that lookup at
//! the boundary.
//!
//! A module belongs to the context current when it was loaded: its `.global`
//! and `.const` variables live in one device allocation of that context, and
//! the module dies with the context. A library is context-free PTX, parsed
//! once; it gets a module in each context that uses it, on first use.

use crate::context::current;
use crate::device::Device;
use crate::ffi::Live;
use crate::memory;
use cuda_abi::image::{self, ImageBytes, ImageKind, RawImage, Wrapper};
use cuda_types::cuda::{
    CUdeviceptr, CUfunc_cache, CUfunction, CUfunctionLoadingState, CUfunction_attribute,
    CUjit_option, CUkernel, CUlibrary, CUlibraryOption, CUmodule, CUmoduleLoadingMode, CUresult,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::sync::{Arc, OnceLock};
use vgpu_ffi::{FromCuda, In, Mint, Out, Shared};
use vgpu_ptx::fatbin::{self, FatbinError};
use vgpu_ptx::Memory;

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;
const INVALID_HANDLE: CUresult = CUresult::CUDA_ERROR_INVALID_HANDLE;
const NOT_FOUND: CUresult = CUresult::CUDA_ERROR_NOT_FOUND;
const INVALID_IMAGE: CUresult = CUresult::CUDA_ERROR_INVALID_IMAGE;
const NO_BINARY: CUresult = CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU;

/// The compute capability PTX is chosen for (H100).
const SM: u32 = 90;
/// A corrupt container header must not make us read gigabytes of memory.
const MAX_IMAGE: u64 = 1 << 32;
/// Default per-launch dynamic shared memory without opting in.
pub(crate) const SHARED_DEFAULT: u32 = 48 * 1024;
/// `CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN`.
pub(crate) const SHARED_OPTIN: u32 = 227 * 1024;
/// What `CU_FUNC_ATTRIBUTE_NUM_REGS` reports: the interpreter has no register
/// allocation, and 32 keeps occupancy at the hardware's thread limit.
pub(crate) const REGS_PER_THREAD: u32 = 32;

/// Diagnostics a user needs to understand a failure (no PTX, bad PTX, an
/// instruction the interpreter lacks, a kernel fault) always go to stderr:
/// the software GPU has no other way to explain them.
pub(crate) fn warn(msg: std::fmt::Arguments<'_>) {
    eprintln!("vgpu-emu: {msg}");
}

fn verbose() -> bool {
    std::env::var_os("VGPU_LOG").is_some()
}

/// Settable per-function attributes. Shared between a `CUkernel` and the
/// functions it becomes in each context, so cuKernelSetAttribute and
/// cuFuncSetAttribute on `(CUfunction)kernel` agree.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FuncAttrs {
    pub max_dynamic_shared: u32,
    pub carveout: c_int,
    pub cache_config: c_uint,
    pub non_portable_cluster: c_int,
    pub cluster_policy: c_int,
    pub required_cluster: [c_int; 3],
}

impl FuncAttrs {
    fn new(static_shared: u32) -> Self {
        FuncAttrs {
            max_dynamic_shared: SHARED_DEFAULT.saturating_sub(static_shared),
            carveout: -1,
            cache_config: 0,
            non_portable_cluster: 0,
            cluster_policy: 0,
            required_cluster: [0; 3],
        }
    }
}

pub(crate) struct LoadedModule {
    handle: u64,
    pub ctx: u64,
    pub ptx: Arc<vgpu_ptx::Module>,
    /// Device address of each allocated module variable, for launches.
    pub symbols: HashMap<String, u64>,
    sizes: HashMap<String, usize>,
    /// The one allocation holding every variable.
    block: Option<CUdeviceptr>,
    /// Kernel name → function handle, in the module's order. Set once,
    /// right after the module is registered (a function's handle exists
    /// only once its module does), before anyone can look the module up.
    functions: OnceLock<Vec<(String, u64)>>,
    /// Made from an image with no PTX (see [`Library::no_code`]).
    no_code: bool,
}

pub(crate) struct Function {
    handle: u64,
    pub module: Arc<LoadedModule>,
    pub name: CString,
    pub attrs: Arc<Mutex<FuncAttrs>>,
}

pub(crate) struct Library {
    handle: u64,
    ptx: Arc<vgpu_ptx::Module>,
    /// Set once, right after the library is registered (see
    /// [`LoadedModule::functions`]).
    kernels: OnceLock<Vec<Arc<Kernel>>>,
    /// The image had only cubins. nvcc 13 emits a second, PTX-less fatbin
    /// per program that cudart loads eagerly under CUDA_MODULE_LOADING=EAGER;
    /// failing that load would fail the program, so the library loads empty
    /// and only looking a kernel up in it fails (NO_BINARY_FOR_GPU).
    no_code: bool,
    /// Context id → the library's module there.
    modules: Mutex<HashMap<u64, u64>>,
}

pub(crate) struct Kernel {
    handle: u64,
    library: u64,
    name: CString,
    attrs: Arc<Mutex<FuncAttrs>>,
}

#[derive(Clone)]
enum Object {
    Module(Arc<LoadedModule>),
    Function(Arc<Function>),
    Library(Arc<Library>),
    Kernel(Arc<Kernel>),
}

static OBJECTS: Shared<Object, CUresult> =
    Shared::new("module object", INVALID_HANDLE, Mint::Pointer);

impl Function {
    /// Whether its module is still loaded: a graph's kernel node keeps the
    /// function, and may outlive an unload or its context.
    pub(crate) fn is_loaded(&self) -> bool {
        OBJECTS.contains(self.handle)
    }
}

impl LoadedModule {
    fn functions(&self) -> &[(String, u64)] {
        self.functions.get().map_or(&[], Vec::as_slice)
    }
}

impl Library {
    fn kernels(&self) -> &[Arc<Kernel>] {
        self.kernels.get().map_or(&[], Vec::as_slice)
    }
}

impl FromCuda<CUmodule, CUresult> for Live<LoadedModule> {
    unsafe fn from_cuda(h: CUmodule) -> Result<Self, CUresult> {
        match OBJECTS.get(h as u64)? {
            Object::Module(m) => Ok(Live(m)),
            _ => Err(INVALID_HANDLE),
        }
    }
}

impl FromCuda<CUlibrary, CUresult> for Live<Library> {
    unsafe fn from_cuda(h: CUlibrary) -> Result<Self, CUresult> {
        library(h as u64).map(Live)
    }
}

impl FromCuda<CUkernel, CUresult> for Live<Kernel> {
    unsafe fn from_cuda(h: CUkernel) -> Result<Self, CUresult> {
        match OBJECTS.get(h as u64)? {
            Object::Kernel(k) => Ok(Live(k)),
            _ => Err(INVALID_HANDLE),
        }
    }
}

/// A `CUfunction` argument, which may also be a `CUkernel`: that one is
/// resolved in the current context (loading the library's module there).
impl FromCuda<CUfunction, CUresult> for Live<Function> {
    unsafe fn from_cuda(h: CUfunction) -> Result<Self, CUresult> {
        match OBJECTS.get(h as u64)? {
            Object::Function(f) => Ok(Live(f)),
            Object::Kernel(k) => kernel_function(&k).map(Live),
            _ => Err(INVALID_HANDLE),
        }
    }
}

fn library(h: u64) -> Result<Arc<Library>, CUresult> {
    match OBJECTS.get(h)? {
        Object::Library(l) => Ok(l),
        _ => Err(INVALID_HANDLE),
    }
}

fn function_in(m: &LoadedModule, name: &str) -> Result<Arc<Function>, CUresult> {
    let h = m
        .functions()
        .iter()
        .find(|(n, _)| n == name)
        .ok_or_else(|| not_found(m.no_code, name))?
        .1;
    match OBJECTS.get(h)? {
        Object::Function(f) => Ok(f),
        _ => Err(INVALID_HANDLE),
    }
}

fn not_found(no_code: bool, name: &str) -> CUresult {
    if no_code {
        warn(format_args!(
            "`{name}` is in a fatbin without PTX; the software GPU runs PTX only"
        ));
        NO_BINARY
    } else {
        NOT_FOUND
    }
}

fn kernel_function(k: &Kernel) -> Result<Arc<Function>, CUresult> {
    let lib = library(k.library)?;
    let m = library_module(&lib)?;
    function_in(&m, k.name.to_str().map_err(|_| INVALID_HANDLE)?)
}

/// The library's module in the current context, loaded on first use.
fn library_module(lib: &Library) -> Result<Arc<LoadedModule>, CUresult> {
    let ctx = current()?;
    // Held across the load so two threads can't load it twice.
    let mut mods = lib.modules.lock();
    if let Some(&h) = mods.get(&ctx.id) {
        match OBJECTS.get(h) {
            // A context's modules die with it; the primary context keeps its
            // id across reset, hence the second check.
            Ok(Object::Module(m)) if m.ctx == ctx.id => return Ok(m),
            _ => {
                mods.remove(&ctx.id);
            }
        }
    }
    let attrs: HashMap<&str, Arc<Mutex<FuncAttrs>>> = lib
        .kernels()
        .iter()
        .map(|k| (k.name.to_str().unwrap_or(""), k.attrs.clone()))
        .collect();
    let m = instantiate(lib.ptx.clone(), lib.no_code, |name| {
        attrs.get(name).cloned()
    })?;
    mods.insert(ctx.id, m.handle);
    Ok(m)
}

// ---- images -------------------------------------------------------------------

fn fatbin_error(e: FatbinError) -> CUresult {
    match e {
        FatbinError::NoPtx => NO_BINARY,
        e => {
            warn(format_args!("cannot read the fatbin: {e}"));
            INVALID_IMAGE
        }
    }
}

/// # Safety
/// `p` is non-NULL and holds an image as [`RawImage::new`] requires.
unsafe fn raw(p: *const u8) -> RawImage {
    // SAFETY: forwarded; the cap keeps a corrupt header from making us read
    // gigabytes.
    unsafe { RawImage::new(p, MAX_IMAGE as usize) }
}

/// The PTX text of an image handed to cuModuleLoadData and friends: a fatbin
/// wrapper, a fatbin container, a cubin ELF or PTX text. An image without
/// PTX is NO_BINARY_FOR_GPU, which the caller explains (see [`no_ptx`]).
///
/// # Safety
/// `image` must point to a complete image of one of those formats (what the
/// real driver requires too): the headers say how many bytes are read.
pub(crate) unsafe fn image_ptx(image: *const c_void) -> Result<String, CUresult> {
    if image.is_null() {
        return Err(INVALID_VALUE);
    }
    let p = image.cast::<u8>();
    // SAFETY: non-NULL, and a complete image per the caller.
    let r = unsafe { raw(p) };
    match image::kind(&r) {
        ImageKind::Wrapper => {
            let w = Wrapper::read(&r).ok_or(INVALID_IMAGE)?;
            if w.container == 0 {
                return Err(INVALID_IMAGE);
            }
            // SAFETY: the wrapper's container pointer names a container in
            // this process (cudart's `.nv_fatbin`).
            return unsafe { container_ptx(w.container as *const u8) };
        }
        // SAFETY: per the caller.
        ImageKind::Container => return unsafe { container_ptx(p) },
        ImageKind::Elf => return Err(NO_BINARY),
        // The interpreter's own judgement of text: whatever is UTF-8 up to
        // the NUL, and not blank, goes to the PTX parser.
        _ => {}
    }
    // SAFETY: anything else must be NUL-terminated PTX text.
    let text = unsafe { CStr::from_ptr(p.cast::<c_char>()) };
    if text.to_bytes().starts_with(b"!<arch>") {
        warn(format_args!("an archive cannot be loaded as a module"));
        return Err(INVALID_IMAGE);
    }
    match text.to_str() {
        Ok(s) if !s.trim().is_empty() => Ok(s.to_owned()),
        _ => Err(INVALID_IMAGE),
    }
}

/// # Safety
/// `c` must point to a complete fatbin container.
unsafe fn container_ptx(c: *const u8) -> Result<String, CUresult> {
    // SAFETY: per the caller.
    let r = unsafe { raw(c) };
    let len = image::container_len(&r, MAX_IMAGE).map_err(|_| INVALID_IMAGE)?;
    let bytes = r.get(0, len).ok_or(INVALID_IMAGE)?;
    fatbin::extract_ptx(bytes, SM).map_err(fatbin_error)
}

/// Says why an image without PTX can't load, where that is final.
pub(crate) fn no_ptx(e: CUresult) -> CUresult {
    if e == NO_BINARY {
        warn(format_args!(
            "the image holds no PTX (only SASS cubins); the software GPU runs PTX only: \
             build with -gencode arch=compute_XX,code=compute_XX to embed it"
        ));
    }
    e
}

pub(crate) fn parse_ptx(text: &str) -> Result<vgpu_ptx::Module, (CUresult, String)> {
    vgpu_ptx::Module::parse(text).map_err(|e| {
        let msg = format!("invalid PTX: {e}");
        warn(format_args!("{msg}"));
        (CUresult::CUDA_ERROR_INVALID_PTX, msg)
    })
}

// ---- module instantiation -----------------------------------------------------

/// Allocates and initialises the module's variables in the current context
/// and registers the module and its functions.
fn instantiate(
    ptx: Arc<vgpu_ptx::Module>,
    no_code: bool,
    shared_attrs: impl Fn(&str) -> Option<Arc<Mutex<FuncAttrs>>>,
) -> Result<Arc<LoadedModule>, CUresult> {
    let ctx = current()?;
    if verbose() {
        for u in ptx.unsupported() {
            warn(format_args!(
                "`{}` (line {}) in `{}` is not supported; launching it will fail",
                u.inst, u.line, u.function
            ));
        }
    }
    let names: Vec<(String, CString)> = ptx
        .kernel_names()
        .map(|n| Ok((n.to_string(), CString::new(n).map_err(|_| INVALID_IMAGE)?)))
        .collect::<Result<_, CUresult>>()?;
    // Lay every defined variable out in one block: one device allocation
    // (2 MiB of accounting) per module rather than per variable.
    let mut offsets = Vec::new();
    let mut total = 0u64;
    for g in ptx.globals().iter().filter(|g| !g.is_extern) {
        let align = u64::from(g.align.max(1));
        let off = total.next_multiple_of(align);
        offsets.push((g, off));
        total = off.checked_add(g.size).ok_or(INVALID_IMAGE)?;
    }
    let block = if total > 0 {
        Some(memory::alloc_module_block(
            usize::try_from(total).map_err(|_| CUresult::CUDA_ERROR_OUT_OF_MEMORY)?,
        )?)
    } else {
        None
    };
    let base = block.unwrap_or(0);
    let symbols: HashMap<String, u64> = offsets
        .iter()
        .map(|(g, off)| (g.name.clone(), base + off))
        .collect();
    let written = memory::with_kernel_memory(|mem| -> Result<(), vgpu_ptx::MemError> {
        for (g, off) in &offsets {
            if !g.init.is_empty() {
                mem.write(base + off, &g.init)?;
            }
            for (at, sym) in &g.relocs {
                let target = match symbols.get(sym) {
                    Some(&a) => a,
                    None => {
                        // Function addresses in initializers (vtables) have
                        // no meaning to the interpreter.
                        warn(format_args!(
                            "`{}` refers to `{sym}`, which has no device address; it reads as 0",
                            g.name
                        ));
                        0
                    }
                };
                mem.write(base + off + at, &target.to_le_bytes())?;
            }
        }
        Ok(())
    });
    if written.is_err() {
        if let Some(b) = block {
            memory::free_module_block(b);
        }
        return Err(INVALID_IMAGE);
    }
    let sizes = offsets
        .iter()
        .map(|(g, _)| (g.name.clone(), g.size as usize))
        .collect();
    let mut objs = OBJECTS.write();
    let mut made = None;
    objs.insert_with(|handle| {
        let m = made.insert(Arc::new(LoadedModule {
            handle,
            ctx: ctx.id,
            sizes,
            symbols,
            block,
            functions: OnceLock::new(),
            no_code,
            ptx,
        }));
        Object::Module(m.clone())
    });
    let m = made.expect("insert_with calls its closure");
    let functions = names
        .into_iter()
        .map(|(name, cname)| {
            let static_shared = m.ptx.entry(&name).map_or(0, |k| k.static_shared);
            let attrs = shared_attrs(&name)
                .unwrap_or_else(|| Arc::new(Mutex::new(FuncAttrs::new(static_shared))));
            let h = objs.insert_with(|handle| {
                Object::Function(Arc::new(Function {
                    handle,
                    module: m.clone(),
                    name: cname,
                    attrs,
                }))
            });
            (name, h)
        })
        .collect();
    // Set while the registry is still locked: nobody has seen the module.
    let _ = m.functions.set(functions);
    Ok(m)
}

/// Drops a module's registry entries; frees its variables when asked (not at
/// context teardown, where the context's memory goes as a whole). Taken
/// once: of two racing unloads, one does this and the other gets
/// CUDA_ERROR_INVALID_HANDLE.
fn forget(m: &LoadedModule, free: bool) -> Result<(), CUresult> {
    {
        let mut objs = OBJECTS.write();
        objs.take(m.handle)?;
        for (_, h) in m.functions() {
            let _ = objs.take(*h);
        }
    }
    if free {
        if let Some(b) = m.block {
            memory::free_module_block(b);
        }
    }
    Ok(())
}

/// A context's modules die with it (destroy, primary release or reset).
pub fn release_context(ctx: u64) {
    let doomed: Vec<Arc<LoadedModule>> = OBJECTS
        .values()
        .into_iter()
        .filter_map(|o| match o {
            Object::Module(m) if m.ctx == ctx => Some(m),
            _ => None,
        })
        .collect();
    for m in doomed {
        // Gone already if an unload won the race; nothing more to do.
        let _ = forget(&m, false);
    }
}

// ---- JIT options ----------------------------------------------------------------

/// The log buffers of a JIT option list, which the driver fills in.
#[derive(Default, Clone, Copy)]
pub(crate) struct JitLogs {
    info: Option<(*mut c_char, usize, usize)>,
    error: Option<(*mut c_char, usize, usize)>,
    wall_time: Option<usize>,
}

// SAFETY: the raw pointers are the application's buffers, only written from
// the thread that makes the call owning them (cuLinkComplete for a linker,
// which CUDA requires not to run concurrently with other calls on the state).
unsafe impl Send for JitLogs {}

/// Validates a JIT option list and finds its log buffers.
///
/// # Safety
/// `options` and `values` must be null or hold `n` entries.
pub(crate) unsafe fn jit_options(
    n: c_uint,
    options: *const CUjit_option,
    values: *mut *mut c_void,
) -> Result<JitLogs, CUresult> {
    let mut logs = JitLogs::default();
    if n == 0 {
        return Ok(logs);
    }
    if options.is_null() || values.is_null() {
        return Err(INVALID_VALUE);
    }
    let mut sizes = [None, None];
    let mut bufs = [None, None];
    for i in 0..n as usize {
        // SAFETY: both arrays hold `n` entries per the caller.
        let (o, v) = unsafe { (options.add(i).read(), values.add(i).read()) };
        match o.0 {
            2 => logs.wall_time = Some(i),
            3 => bufs[0] = Some((v.cast::<c_char>(), i)),
            4 => sizes[0] = Some((v as usize, i)),
            5 => bufs[1] = Some((v.cast::<c_char>(), i)),
            6 => sizes[1] = Some((v as usize, i)),
            x if x < CUjit_option::CU_JIT_NUM_OPTIONS.0 => {}
            _ => return Err(INVALID_VALUE),
        }
    }
    let pair = |b: Option<(*mut c_char, usize)>, s: Option<(usize, usize)>| match (b, s) {
        (Some((b, _)), Some((s, si))) if !b.is_null() && s > 0 => Some((b, s, si)),
        _ => None,
    };
    logs.info = pair(bufs[0], sizes[0]);
    logs.error = pair(bufs[1], sizes[1]);
    Ok(logs)
}

impl JitLogs {
    /// Writes the logs back as the driver does: text into the buffers, the
    /// bytes written (with the NUL) into the size slots.
    ///
    /// # Safety
    /// The buffers and `values` must still be the caller's live arrays.
    pub(crate) unsafe fn fill(&self, values: *mut *mut c_void, info: &str, error: &str) {
        for (slot, text) in [(self.info, info), (self.error, error)] {
            let Some((buf, size, size_index)) = slot else {
                continue;
            };
            let n = text.len().min(size - 1);
            // SAFETY: the buffer holds `size` bytes (the application said
            // so), and `n + 1 <= size`; `values` holds the option array.
            unsafe {
                std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
                *buf.add(n) = 0;
                *values.add(size_index) = (n + 1) as *mut c_void;
            }
        }
        if let Some(i) = self.wall_time {
            // SAFETY: CU_JIT_WALL_TIME's value slot receives a float (ms).
            unsafe { values.add(i).cast::<f32>().write_unaligned(0.0) };
        }
    }
}

// ---- cuModule* ------------------------------------------------------------------

/// Loads PTX text as a module of the current context.
fn load_ptx_text(text: &str) -> Result<CUmodule, (CUresult, String)> {
    current().map_err(|e| (e, String::new()))?;
    let ptx = parse_ptx(text)?;
    let m = instantiate(Arc::new(ptx), false, |_| None).map_err(|e| (e, String::new()))?;
    Ok(m.handle as CUmodule)
}

/// # Safety
/// `image` as for [`image_ptx`].
unsafe fn load_image(out: &Out<CUmodule>, image: *const c_void) -> Result<(), (CUresult, String)> {
    current().map_err(|e| (e, String::new()))?;
    // SAFETY: per the caller.
    let text = unsafe { image_ptx(image) }.map_err(|e| (no_ptx(e), String::new()))?;
    out.write(load_ptx_text(&text)?);
    Ok(())
}

/// `cuModuleLoadDataEx`; `cuModuleLoadData` and `cuModuleLoadFatBinary`
/// are this without options.
pub unsafe fn module_load_data(
    out: Out<CUmodule>,
    image: *const c_void,
    n: c_uint,
    options: *mut CUjit_option,
    values: *mut *mut c_void,
) -> Result<(), CUresult> {
    // SAFETY: the option arrays hold `n` entries per the API.
    let logs = unsafe { jit_options(n, options, values) }?;
    // SAFETY: forwarded with the caller's guarantees.
    let r = unsafe { load_image(&out, image) };
    let err = r.as_ref().err().map_or("", |(_, m)| m.as_str());
    // SAFETY: the buffers were validated by `jit_options` and are live.
    unsafe { logs.fill(values, "", err) };
    r.map_err(|(e, _)| e)
}

/// Reads a file the application names, failing the way the driver does.
pub(crate) fn read_file(path: &CStr) -> Result<Vec<u8>, CUresult> {
    let path = path.to_string_lossy();
    std::fs::read(&*path).map_err(|e| {
        warn(format_args!("cannot read {path}: {e}"));
        CUresult::CUDA_ERROR_FILE_NOT_FOUND
    })
}

pub fn module_load(out: Out<CUmodule>, path: &CStr) -> Result<(), CUresult> {
    current()?;
    let mut bytes = read_file(path)?;
    bytes.push(0);
    // SAFETY: `bytes` is a complete file plus a NUL, so PTX text terminates
    // and a fatbin's own headers bound what is read.
    unsafe { load_image(&out, bytes.as_ptr().cast()) }.map_err(|(e, _)| e)
}

pub fn module_unload(m: Live<LoadedModule>) -> Result<(), CUresult> {
    forget(&m, true)
}

pub fn module_get_function(
    out: Out<CUfunction>,
    m: Live<LoadedModule>,
    name: &CStr,
) -> Result<(), CUresult> {
    let f = function_in(&m, &name.to_string_lossy())?;
    out.write(f.handle as CUfunction);
    Ok(())
}

/// Both out-pointers are optional.
pub fn module_get_global(
    dptr: Option<Out<CUdeviceptr>>,
    bytes: Option<Out<usize>>,
    m: Live<LoadedModule>,
    name: &CStr,
) -> Result<(), CUresult> {
    let name = name.to_string_lossy();
    let addr = *m.symbols.get(&*name).ok_or(NOT_FOUND)?;
    let size = m.sizes.get(&*name).copied().unwrap_or(0);
    if let Some(d) = dptr {
        d.write(addr);
    }
    if let Some(b) = bytes {
        b.write(size);
    }
    Ok(())
}

pub fn module_get_loading_mode(mode: Out<CUmoduleLoadingMode>) -> Result<(), CUresult> {
    mode.write(CUmoduleLoadingMode::CU_MODULE_LAZY_LOADING);
    Ok(())
}

pub fn module_get_function_count(
    count: Out<c_uint>,
    m: Live<LoadedModule>,
) -> Result<(), CUresult> {
    count.write(m.functions().len() as c_uint);
    Ok(())
}

/// `out` holds `n` entries.
pub unsafe fn module_enumerate_functions(
    out: Out<CUfunction>,
    n: c_uint,
    m: Live<LoadedModule>,
) -> Result<(), CUresult> {
    for (i, (_, f)) in m.functions().iter().take(n as usize).enumerate() {
        // SAFETY: the array holds `n` entries per the API; `i < n`.
        unsafe { out.as_ptr().add(i).write_unaligned(*f as CUfunction) };
    }
    Ok(())
}

// ---- cuLibrary* / cuKernel* -------------------------------------------------------

/// # Safety
/// The option arrays must hold their counts of entries.
unsafe fn check_library_options(
    nj: c_uint,
    jit: *mut CUjit_option,
    jit_values: *mut *mut c_void,
    nl: c_uint,
    lib_opts: *mut CUlibraryOption,
    lib_values: *mut *mut c_void,
) -> Result<(), CUresult> {
    // SAFETY: per the caller.
    unsafe { jit_options(nj, jit, jit_values) }?;
    if nl > 0 && (lib_opts.is_null() || lib_values.is_null()) {
        return Err(INVALID_VALUE);
    }
    for i in 0..nl as usize {
        // SAFETY: `lib_opts` holds `nl` entries per the caller.
        let o = unsafe { lib_opts.add(i).read() };
        if o.0 >= CUlibraryOption::CU_LIBRARY_NUM_OPTIONS.0 {
            return Err(INVALID_VALUE);
        }
    }
    Ok(())
}

/// PTX with nothing in it, for a library whose image has no PTX.
const EMPTY_PTX: &str = ".version 8.0\n.target sm_90\n.address_size 64\n";

/// A library from what [`image_ptx`] made of its image.
fn load_library(out: Out<CUlibrary>, image: Result<String, CUresult>) -> Result<(), CUresult> {
    let (text, no_code) = match image {
        Ok(t) => (t, false),
        Err(NO_BINARY) => (EMPTY_PTX.to_string(), true),
        Err(e) => return Err(e),
    };
    let ptx = Arc::new(parse_ptx(&text).map_err(|(e, _)| e)?);
    let names: Vec<String> = ptx.kernel_names().map(str::to_string).collect();
    let mut objs = OBJECTS.write();
    let mut made = None;
    let handle = objs.insert_with(|handle| {
        let lib = made.insert(Arc::new(Library {
            handle,
            ptx,
            kernels: OnceLock::new(),
            no_code,
            modules: Mutex::new(HashMap::new()),
        }));
        Object::Library(lib.clone())
    });
    let lib = made.expect("insert_with calls its closure");
    let kernels = names
        .iter()
        .map(|n| {
            let static_shared = lib.ptx.entry(n).map_or(0, |k| k.static_shared);
            let mut made = None;
            objs.insert_with(|h| {
                let k = made.insert(Arc::new(Kernel {
                    handle: h,
                    library: handle,
                    name: CString::new(n.as_str()).unwrap_or_default(),
                    attrs: Arc::new(Mutex::new(FuncAttrs::new(static_shared))),
                }));
                Object::Kernel(k.clone())
            });
            made.expect("insert_with calls its closure")
        })
        .collect();
    // Set while the registry is still locked: nobody has seen the library.
    let _ = lib.kernels.set(kernels);
    out.write(handle as CUlibrary);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub unsafe fn library_load_data(
    out: Out<CUlibrary>,
    code: In<c_void>,
    jit: *mut CUjit_option,
    jit_values: *mut *mut c_void,
    nj: c_uint,
    lib_opts: *mut CUlibraryOption,
    lib_values: *mut *mut c_void,
    nl: c_uint,
) -> Result<(), CUresult> {
    // SAFETY: the arrays hold their counts per the API.
    unsafe { check_library_options(nj, jit, jit_values, nl, lib_opts, lib_values) }?;
    // The PTX is copied out, so CU_LIBRARY_BINARY_IS_PRESERVED changes
    // nothing. SAFETY: `code` is a complete image per the API.
    let image = unsafe { image_ptx(code.as_ptr()) };
    load_library(out, image)
}

#[allow(clippy::too_many_arguments)]
pub unsafe fn library_load_from_file(
    out: Out<CUlibrary>,
    path: &CStr,
    jit: *mut CUjit_option,
    jit_values: *mut *mut c_void,
    nj: c_uint,
    lib_opts: *mut CUlibraryOption,
    lib_values: *mut *mut c_void,
    nl: c_uint,
) -> Result<(), CUresult> {
    // SAFETY: the arrays hold their counts per the API.
    unsafe { check_library_options(nj, jit, jit_values, nl, lib_opts, lib_values) }?;
    let mut bytes = read_file(path)?;
    bytes.push(0);
    // SAFETY: a whole file plus a NUL, as in `module_load`.
    let image = unsafe { image_ptx(bytes.as_ptr().cast()) };
    load_library(out, image)
}

pub fn library_unload(lib: Live<Library>) -> Result<(), CUresult> {
    {
        let mut objs = OBJECTS.write();
        // Taken once: of two racing unloads, one does the work.
        objs.take(lib.handle)?;
        for k in lib.kernels() {
            let _ = objs.take(k.handle);
        }
    }
    let mods: Vec<u64> = lib.modules.lock().drain().map(|(_, m)| m).collect();
    for m in mods {
        // A module its context took with it is gone already.
        if let Ok(Object::Module(m)) = OBJECTS.get(m) {
            let _ = forget(&m, true);
        }
    }
    Ok(())
}

pub fn library_get_module(out: Out<CUmodule>, lib: Live<Library>) -> Result<(), CUresult> {
    out.write(library_module(&lib)?.handle as CUmodule);
    Ok(())
}

pub fn library_get_kernel(
    out: Out<CUkernel>,
    lib: Live<Library>,
    name: &CStr,
) -> Result<(), CUresult> {
    let k = lib
        .kernels()
        .iter()
        .find(|k| k.name.as_c_str() == name)
        .ok_or_else(|| not_found(lib.no_code, &name.to_string_lossy()))?;
    out.write(k.handle as CUkernel);
    Ok(())
}

/// A global of the library's module in the current context.
pub fn library_get_global(
    dptr: Option<Out<CUdeviceptr>>,
    bytes: Option<Out<usize>>,
    lib: Live<Library>,
    name: &CStr,
) -> Result<(), CUresult> {
    module_get_global(dptr, bytes, Live(library_module(&lib)?), name)
}

pub fn library_get_kernel_count(count: Out<c_uint>, lib: Live<Library>) -> Result<(), CUresult> {
    count.write(lib.kernels().len() as c_uint);
    Ok(())
}

/// `out` holds `n` entries.
pub unsafe fn library_enumerate_kernels(
    out: Out<CUkernel>,
    n: c_uint,
    lib: Live<Library>,
) -> Result<(), CUresult> {
    for (i, k) in lib.kernels().iter().take(n as usize).enumerate() {
        // SAFETY: the array holds `n` entries per the API; `i < n`.
        unsafe { out.as_ptr().add(i).write_unaligned(k.handle as CUkernel) };
    }
    Ok(())
}

pub fn kernel_get_function(out: Out<CUfunction>, k: Live<Kernel>) -> Result<(), CUresult> {
    out.write(kernel_function(&k)?.handle as CUfunction);
    Ok(())
}

pub fn kernel_get_library(out: Out<CUlibrary>, k: Live<Kernel>) -> Result<(), CUresult> {
    out.write(k.library as CUlibrary);
    Ok(())
}

/// The string lives as long as the kernel handle, as the API promises.
pub fn kernel_get_name(out: Out<*const c_char>, k: Live<Kernel>) -> Result<(), CUresult> {
    out.write(k.name.as_ptr());
    Ok(())
}

/// The PTX module and settable attributes behind a kernel, without needing a
/// context (cuKernelGetAttribute takes a device).
type KernelParts = (Arc<vgpu_ptx::Module>, String, Arc<Mutex<FuncAttrs>>);

fn kernel_parts(k: &Kernel) -> Result<KernelParts, CUresult> {
    let lib = library(k.library)?;
    let name = k.name.to_str().map_err(|_| INVALID_HANDLE)?.to_string();
    Ok((lib.ptx.clone(), name, k.attrs.clone()))
}

pub fn kernel_get_attribute(
    out: Out<c_int>,
    attr: CUfunction_attribute,
    k: Live<Kernel>,
    _dev: Device,
) -> Result<(), CUresult> {
    let (ptx, name, attrs) = kernel_parts(&k)?;
    let v = attribute(&ptx, &name, &attrs.lock(), attr)?;
    out.write(v);
    Ok(())
}

pub fn kernel_set_attribute(
    attr: CUfunction_attribute,
    value: c_int,
    k: Live<Kernel>,
    _dev: Device,
) -> Result<(), CUresult> {
    let (ptx, name, attrs) = kernel_parts(&k)?;
    let mut a = attrs.lock();
    set_attribute(&ptx, &name, &mut a, attr, value)
}

pub fn kernel_set_cache_config(
    k: Live<Kernel>,
    config: CUfunc_cache,
    _dev: Device,
) -> Result<(), CUresult> {
    set_cache(&mut k.attrs.lock(), config)
}

pub fn kernel_get_param_info(
    k: Live<Kernel>,
    index: usize,
    offset: Out<usize>,
    size: Option<Out<usize>>,
) -> Result<(), CUresult> {
    let (ptx, name, _) = kernel_parts(&k)?;
    param_info(&ptx, &name, index, offset, size)
}

pub fn kernel_get_param_count(k: Live<Kernel>, count: Out<usize>) -> Result<(), CUresult> {
    let (ptx, name, _) = kernel_parts(&k)?;
    count.write(ptx.entry(&name).ok_or(INVALID_HANDLE)?.params.len());
    Ok(())
}

// ---- cuFunc* --------------------------------------------------------------------

/// The value of a function attribute.
pub(crate) fn attribute(
    ptx: &vgpu_ptx::Module,
    name: &str,
    attrs: &FuncAttrs,
    attr: CUfunction_attribute,
) -> Result<c_int, CUresult> {
    let k = ptx.entry(name).ok_or(INVALID_HANDLE)?;
    Ok(match attr.0 {
        0 => max_threads(&k) as c_int,
        1 => k.static_shared as c_int,
        2 => ptx
            .globals()
            .iter()
            .filter(|g| g.space == vgpu_ptx::GlobalSpace::Const && !g.is_extern)
            .map(|g| g.size)
            .sum::<u64>()
            .min(c_int::MAX as u64) as c_int,
        3 => k.local_bytes as c_int,
        4 => REGS_PER_THREAD as c_int,
        5 => ptx_arch(ptx),
        6 => SM as c_int,
        7 => 0,
        8 => attrs.max_dynamic_shared as c_int,
        9 => attrs.carveout,
        10 => 0,
        11..=13 => attrs.required_cluster[attr.0 as usize - 11],
        14 => attrs.non_portable_cluster,
        15 => attrs.cluster_policy,
        16 | 17 => 0,
        _ => return Err(INVALID_VALUE),
    })
}

/// The block size limit a kernel declares (`.reqntid` / `.maxntid`).
pub(crate) fn max_threads(k: &vgpu_ptx::Kernel<'_>) -> u32 {
    k.reqntid
        .or(k.maxntid)
        .map_or(1024, |d| d.iter().product::<u32>().clamp(1, 1024))
}

/// The virtual architecture the PTX targets (`.target sm_80` → 80).
fn ptx_arch(ptx: &vgpu_ptx::Module) -> c_int {
    ptx.target
        .split(',')
        .next()
        .and_then(|t| t.trim().strip_prefix("sm_"))
        .map(|t| t.trim_end_matches(|c: char| c.is_ascii_alphabetic()))
        .and_then(|t| t.parse().ok())
        .unwrap_or(SM as c_int)
}

fn set_attribute(
    ptx: &vgpu_ptx::Module,
    name: &str,
    attrs: &mut FuncAttrs,
    attr: CUfunction_attribute,
    value: c_int,
) -> Result<(), CUresult> {
    let k = ptx.entry(name).ok_or(INVALID_HANDLE)?;
    match attr.0 {
        8 => {
            let v = u32::try_from(value).map_err(|_| INVALID_VALUE)?;
            if v.saturating_add(k.static_shared) > SHARED_OPTIN {
                return Err(INVALID_VALUE);
            }
            attrs.max_dynamic_shared = v;
        }
        9 => {
            if !(-1..=100).contains(&value) {
                return Err(INVALID_VALUE);
            }
            attrs.carveout = value;
        }
        11..=13 => {
            // Clusters of one block are all the software GPU runs.
            if !(0..=1).contains(&value) {
                return Err(INVALID_VALUE);
            }
            attrs.required_cluster[attr.0 as usize - 11] = value;
        }
        14 => attrs.non_portable_cluster = value,
        15 => attrs.cluster_policy = value,
        _ => return Err(INVALID_VALUE),
    }
    Ok(())
}

fn set_cache(attrs: &mut FuncAttrs, config: CUfunc_cache) -> Result<(), CUresult> {
    if config.0 > 3 {
        return Err(INVALID_VALUE);
    }
    attrs.cache_config = config.0;
    Ok(())
}

/// `size` is optional.
fn param_info(
    ptx: &vgpu_ptx::Module,
    name: &str,
    index: usize,
    offset: Out<usize>,
    size: Option<Out<usize>>,
) -> Result<(), CUresult> {
    let k = ptx.entry(name).ok_or(INVALID_HANDLE)?;
    let p = k.params.get(index).ok_or(INVALID_VALUE)?;
    offset.write(p.offset as usize);
    if let Some(s) = size {
        s.write(p.size as usize);
    }
    Ok(())
}

pub fn func_get_attribute(
    out: Out<c_int>,
    attr: CUfunction_attribute,
    f: Live<Function>,
) -> Result<(), CUresult> {
    let v = attribute(
        &f.module.ptx,
        f.name.to_str().unwrap_or(""),
        &f.attrs.lock(),
        attr,
    )?;
    out.write(v);
    Ok(())
}

pub fn func_set_attribute(
    f: Live<Function>,
    attr: CUfunction_attribute,
    value: c_int,
) -> Result<(), CUresult> {
    let name = f.name.to_str().unwrap_or("");
    let mut a = f.attrs.lock();
    set_attribute(&f.module.ptx, name, &mut a, attr, value)
}

pub fn func_set_cache_config(f: Live<Function>, config: CUfunc_cache) -> Result<(), CUresult> {
    set_cache(&mut f.attrs.lock(), config)
}

/// Bank size is a Kepler setting; later boards accept and ignore it.
pub fn func_set_shared_mem_config(
    _f: Live<Function>,
    config: cuda_types::cuda::CUsharedconfig,
) -> Result<(), CUresult> {
    if config.0 > 2 {
        return Err(INVALID_VALUE);
    }
    Ok(())
}

/// The string lives as long as the function's module.
pub fn func_get_name(out: Out<*const c_char>, f: Live<Function>) -> Result<(), CUresult> {
    out.write(f.name.as_ptr());
    Ok(())
}

pub fn func_get_module(out: Out<CUmodule>, f: Live<Function>) -> Result<(), CUresult> {
    out.write(f.module.handle as CUmodule);
    Ok(())
}

pub fn func_get_param_info(
    f: Live<Function>,
    index: usize,
    offset: Out<usize>,
    size: Option<Out<usize>>,
) -> Result<(), CUresult> {
    let name = f.name.to_str().unwrap_or("");
    param_info(&f.module.ptx, name, index, offset, size)
}

pub fn func_get_param_count(f: Live<Function>, count: Out<usize>) -> Result<(), CUresult> {
    let k = f
        .module
        .ptx
        .entry(f.name.to_str().unwrap_or(""))
        .ok_or(INVALID_HANDLE)?;
    count.write(k.params.len());
    Ok(())
}

/// Modules load whole, so every function is loaded.
pub fn func_is_loaded(
    out: Out<CUfunctionLoadingState>,
    _f: Live<Function>,
) -> Result<(), CUresult> {
    out.write(CUfunctionLoadingState::CU_FUNCTION_LOADING_STATE_LOADED);
    Ok(())
}

pub fn func_load(_f: Live<Function>) -> Result<(), CUresult> {
    Ok(())
}
