//! Modules, libraries, functions and kernels behind handles, their
//! attributes and occupancy queries.
//!
//! Images go to the driver as the guest sent them; the driver parses them.
//! What the worker checks first is only what would make the driver read
//! past the buffer: PTX must be NUL-terminated, and a fatbin or ELF must
//! not claim to be larger than what arrived. The bytes are dropped once the
//! load returns: `cuModuleLoadData` and `cuLibraryLoadData` (without
//! `CU_LIBRARY_BINARY_IS_PRESERVED`, which the worker never passes) keep
//! their own copy. An image too large for one frame arrives in pieces and
//! is loaded from the session's staged image (`ModuleLoadStaged`,
//! `LibraryLoadStaged`, see [`super::bulk`]).
//!
//! A module loaded by the guest belongs to its context; a library does not
//! belong to any (it is loaded in every context), but its modules, globals
//! and the functions of its kernels are per context. A function's parameter
//! layout comes from `cuFuncGetParamInfo` / `cuKernelGetParamInfo` so the
//! guest can pack `kernelParams` into the buffer a launch carries. Drivers
//! older than 12.4 have neither; then the layouts are read from the image
//! itself when it is loaded (`cuda_abi::params`: the cubin's `.nv.info`
//! attributes or the PTX `.entry` signatures), and a function whose layout
//! neither can tell reaches the guest without one, which refuses
//! `kernelParams` launches of it with a clear error instead of launching
//! with missing arguments.

use super::{cu, Session};
use cuda_abi::image::{
    self, ContainerHeader, ElfHeader, CONTAINER_MAGIC, ELF_MAGIC, WRAPPER_MAGIC,
};
use cuda_abi::params::{param_layouts, Layouts};
use cuda_types::cuda::{
    CUdevice, CUdevice_attribute, CUfunc_cache, CUfunction, CUfunction_attribute, CUkernel,
    CUlibrary, CUmodule, CUresult,
};
use std::collections::HashMap;
use std::ffi::{c_char, CString};
use vgpu_transport::proto::{
    FuncGetAttribute, FuncSetAttribute, FuncSetCacheConfig, FunctionInfo, KernelGetFunction,
    LibraryGetGlobal, LibraryGetKernel, LibraryGetModule, LibraryLoadData, LibraryLoadStaged,
    LibraryUnload, ModuleGetFunction, ModuleGetGlobal, ModuleLoadData, ModuleLoadStaged,
    ModuleUnload, OccupancyMaxActiveBlocks, OccupancyMaxPotentialBlockSize, Serve,
};
use vgpu_transport::Status;

use super::handles::{table, tag, HandleTable};

const INVALID_HANDLE: Status = Status::Cuda(CUresult::CUDA_ERROR_INVALID_HANDLE);
const INVALID_VALUE: Status = Status::Cuda(CUresult::CUDA_ERROR_INVALID_VALUE);
const INVALID_IMAGE: Status = Status::Cuda(CUresult::CUDA_ERROR_INVALID_IMAGE);
const NOT_SUPPORTED: Status = Status::Cuda(CUresult::CUDA_ERROR_NOT_SUPPORTED);

/// Kernel parameter space is at most 32764 bytes; no layout has more
/// entries than that, so the probe loop ends even on a driver that never
/// says "no such parameter".
const MAX_PARAMS: usize = 32764;

pub enum ModuleOrigin {
    /// `cuModuleLoadData`; unloaded by the guest or at teardown.
    Loaded,
    /// `cuLibraryGetModule`: owned by the library.
    Library(u64),
}

pub struct Module {
    pub raw: CUmodule,
    pub ctx: u64,
    pub origin: ModuleOrigin,
    /// Parameter layouts read from the image, when the driver cannot say.
    layouts: Option<Layouts>,
    /// Functions already handed out, by name.
    functions: HashMap<String, u64>,
    /// Globals (ptr, size) the guest may now address.
    globals: Vec<(u64, u64)>,
}

pub struct Library {
    pub raw: CUlibrary,
    /// The context it was loaded in, and that context's device (kernel
    /// attributes are per device).
    pub ctx: u64,
    pub device: CUdevice,
    /// Parameter layouts read from the image, when the driver cannot say.
    layouts: Option<Layouts>,
    kernels: HashMap<String, u64>,
    /// Its module in each context that asked.
    modules: HashMap<u64, u64>,
    /// (ctx, ptr, size) of globals handed out.
    globals: Vec<(u64, u64, u64)>,
}

/// A parameter layout, `None` when neither the driver nor the image can
/// tell it (the guest then refuses `kernelParams` launches).
pub type ParamLayout = Option<Vec<(u32, u32)>>;

pub struct Kernel {
    pub raw: CUkernel,
    pub library: u64,
    pub params: ParamLayout,
    /// Its function in each context that asked.
    functions: HashMap<u64, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FuncOwner {
    Module(u64),
    Kernel(u64),
}

pub struct Func {
    pub raw: CUfunction,
    pub ctx: u64,
    pub owner: FuncOwner,
    pub params: ParamLayout,
}

/// The module family's handle tables.
pub struct Code {
    pub modules: HandleTable<Module>,
    pub libraries: HandleTable<Library>,
    pub kernels: HandleTable<Kernel>,
    pub functions: HandleTable<Func>,
    /// Whether the missing parameter-info entry point was logged already.
    warned_no_param_info: bool,
}

impl Default for Code {
    fn default() -> Self {
        Code {
            modules: table("module", tag::MODULE, INVALID_HANDLE),
            libraries: table("library", tag::LIBRARY, INVALID_HANDLE),
            kernels: table("kernel", tag::KERNEL, INVALID_HANDLE),
            functions: table("function", tag::FUNCTION, INVALID_HANDLE),
            warned_no_param_info: false,
        }
    }
}

/// What a function handle of the guest stands for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Callable {
    Function { raw: CUfunction, ctx: u64 },
    Kernel { raw: CUkernel, handle: u64 },
}

/// Makes an image safe to hand to the driver: the driver finds the end of
/// PTX by its NUL and the end of a container from its own headers, so both
/// must lie inside the bytes we hold.
pub(super) fn prepare_image(mut image: Vec<u8>) -> Result<Vec<u8>, Status> {
    match image::magic(&image[..]) {
        // A struct holding a *pointer* to the fatbin, meaningless here.
        Some(WRAPPER_MAGIC) => {
            tracing::warn!("image is a fatbin wrapper (holds a guest pointer); refused");
            Err(INVALID_IMAGE)
        }
        Some(CONTAINER_MAGIC) => {
            let h = ContainerHeader::read(&image[..]).ok_or(INVALID_IMAGE)?;
            match h.total() {
                Some(total) if total <= image.len() as u64 => Ok(image),
                _ => {
                    tracing::warn!(
                        "fatbin claims {}+{} bytes, {} arrived; refused",
                        h.header_size,
                        h.fat_size,
                        image.len()
                    );
                    Err(INVALID_IMAGE)
                }
            }
        }
        _ if image.starts_with(&ELF_MAGIC) => {
            // Only 64-bit little-endian ELF is a CUDA cubin.
            if image.get(4) != Some(&2) || image.get(5) != Some(&1) {
                return Err(INVALID_IMAGE);
            }
            let h = ElfHeader::read(&image[..]).ok_or(INVALID_IMAGE)?;
            for (n, end) in [(h.phnum, h.ph_end()), (h.shnum, h.sh_end())] {
                if n > 0 && end > image.len() as u64 {
                    tracing::warn!("ELF image's headers extend past its end; refused");
                    return Err(INVALID_IMAGE);
                }
            }
            Ok(image)
        }
        _ => {
            // PTX text.
            if image.is_empty() {
                return Err(INVALID_VALUE);
            }
            if image.last() != Some(&0) {
                image.push(0);
            }
            Ok(image)
        }
    }
}

fn c_name(name: &str) -> Result<CString, Status> {
    CString::new(name).map_err(|_| INVALID_VALUE)
}

impl Session {
    /// A function or kernel handle of this session.
    pub(super) fn callable(&self, h: u64) -> Result<Callable, Status> {
        if let Some(f) = self.code.functions.find(h) {
            return Ok(Callable::Function {
                raw: f.raw,
                ctx: f.ctx,
            });
        }
        if let Some(k) = self.code.kernels.find(h) {
            return Ok(Callable::Kernel {
                raw: k.raw,
                handle: h,
            });
        }
        tracing::debug!("session {}: unknown function handle {h:#x}", self.id);
        Err(INVALID_HANDLE)
    }

    /// The function of `callable` in context `ctx` (a kernel's, obtained
    /// and cached on first use). The caller has made `ctx` current.
    pub(super) fn function_in(
        &mut self,
        callable: Callable,
        ctx: u64,
    ) -> Result<CUfunction, Status> {
        match callable {
            Callable::Function { raw, ctx: owner } => {
                if owner != ctx {
                    tracing::debug!(
                        "session {}: function of context {owner:#x} used in {ctx:#x}",
                        self.id
                    );
                    return Err(Status::Cuda(CUresult::CUDA_ERROR_INVALID_CONTEXT));
                }
                Ok(raw)
            }
            Callable::Kernel { handle, .. } => {
                let info = self.kernel_function(handle, ctx)?;
                let raw = self
                    .code
                    .functions
                    .find(info.handle)
                    .map(|f| f.raw)
                    .ok_or(INVALID_HANDLE)?;
                Ok(raw)
            }
        }
    }

    /// The packed-argument layout of a function or kernel: the driver is
    /// asked for parameter `i` until it says there is none. `Err(None)`:
    /// the driver has no such query; `Err(Some(e))`: it failed.
    fn driver_layout(
        &self,
        query: impl Fn(&Session, usize, &mut usize, &mut usize) -> Result<(), Status>,
    ) -> Result<Vec<(u32, u32)>, Option<Status>> {
        let mut v = Vec::new();
        for i in 0..MAX_PARAMS {
            let (mut off, mut size) = (0usize, 0usize);
            match query(self, i, &mut off, &mut size) {
                Ok(()) => v.push((off as u32, size as u32)),
                Err(INVALID_VALUE) => return Ok(v),
                Err(NOT_SUPPORTED) => return Err(None),
                Err(e) => return Err(Some(e)),
            }
        }
        Err(Some(INVALID_VALUE))
    }

    /// The layout of `name`: the driver's answer, else the one read from
    /// the image at load time (`layouts`), else unknown — with the reason
    /// in the host log.
    fn resolve_layout(
        &mut self,
        what: &str,
        name: &str,
        from_driver: Result<Vec<(u32, u32)>, Option<Status>>,
        layouts: Option<&Layouts>,
    ) -> ParamLayout {
        match from_driver {
            Ok(v) => Some(v),
            Err(Some(e)) => {
                tracing::warn!(
                    "session {}: {what} of {name} failed with {e}; its launches with \
                     kernelParams will be refused",
                    self.id
                );
                None
            }
            Err(None) => {
                if !self.code.warned_no_param_info {
                    self.code.warned_no_param_info = true;
                    tracing::info!(
                        "session {}: the driver has no {what}; parameter layouts come from \
                         the module images",
                        self.id
                    );
                }
                let Some(layouts) = layouts else {
                    tracing::warn!(
                        "session {}: no parameter layout for {name}: the driver has no {what} \
                         and its image could not be read; its launches with kernelParams \
                         will be refused",
                        self.id
                    );
                    return None;
                };
                match layouts.get(name) {
                    Ok(v) => Some(v.to_vec()),
                    Err(e) => {
                        tracing::warn!(
                            "session {}: no parameter layout for {name}: {e}; its launches \
                             with kernelParams will be refused",
                            self.id
                        );
                        None
                    }
                }
            }
        }
    }

    /// Returns layouts taken for a lookup to where they came from: the
    /// module, or its library.
    fn put_layouts_back(&mut self, module: u64, layouts: Option<Layouts>) {
        let library = match self.code.modules.find(module).map(|m| &m.origin) {
            Some(ModuleOrigin::Library(l)) => Some(*l),
            _ => None,
        };
        match library {
            Some(l) => {
                if let Some(lib) = self.code.libraries.find_mut(l) {
                    lib.layouts = layouts;
                }
            }
            None => {
                if let Some(m) = self.code.modules.find_mut(module) {
                    m.layouts = layouts;
                }
            }
        }
    }

    /// Reads the parameter layouts of an image being loaded, when the
    /// driver has no parameter query (drivers before 12.4): the image is
    /// not kept for this, the layouts are.
    fn image_layouts(&self, image: &[u8], has_query: bool) -> Option<Layouts> {
        if has_query {
            return None;
        }
        match param_layouts(image, self.current_sm()) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(
                    "session {}: parameter layouts of a {}-byte image: {e}",
                    self.id,
                    image.len()
                );
                None
            }
        }
    }

    /// The current context's device's compute capability as `major * 10 +
    /// minor`: it picks the fatbin entry the driver loads (every entry of
    /// one image has the same layouts, so a wrong guess costs nothing).
    fn current_sm(&self) -> u32 {
        let mut dev: CUdevice = 0;
        let (mut major, mut minor) = (0, 0);
        let known = cu!(self, cuCtxGetDevice(&mut dev)).is_ok()
            && cu!(
                self,
                cuDeviceGetAttribute(
                    &mut major,
                    CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                    dev
                )
            )
            .is_ok()
            && cu!(
                self,
                cuDeviceGetAttribute(
                    &mut minor,
                    CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                    dev
                )
            )
            .is_ok();
        if known {
            (major * 10 + minor) as u32
        } else {
            u32::MAX
        }
    }

    /// Makes a device range addressable by the guest's copies.
    fn expose_global(&mut self, ptr: u64, size: u64) {
        let end = ptr.saturating_add(size);
        self.mem.readable.insert(ptr, end);
        self.mem.writable.insert(ptr, end);
    }

    fn hide_global(&mut self, ptr: u64, size: u64) {
        let end = ptr.saturating_add(size);
        self.mem.readable.remove(ptr, end);
        self.mem.writable.remove(ptr, end);
    }
}

impl Serve<ModuleLoadData> for Session {
    fn serve(&mut self, c: ModuleLoadData) -> Result<u64, Status> {
        self.module_load(c.ctx, c.image.0)
    }
}

impl Serve<ModuleLoadStaged> for Session {
    fn serve(&mut self, c: ModuleLoadStaged) -> Result<u64, Status> {
        let image = self.take_staged()?;
        self.module_load(c.ctx, image)
    }
}

impl Serve<LibraryLoadData> for Session {
    fn serve(&mut self, c: LibraryLoadData) -> Result<u64, Status> {
        self.library_load(c.ctx, c.image.0)
    }
}

impl Serve<LibraryLoadStaged> for Session {
    fn serve(&mut self, c: LibraryLoadStaged) -> Result<u64, Status> {
        let image = self.take_staged()?;
        self.library_load(c.ctx, image)
    }
}

impl Session {
    fn module_load(&mut self, ctx: u64, image: Vec<u8>) -> Result<u64, Status> {
        self.admit_object(crate::account::Kind::Modules)?;
        let c = ModuleLoadData {
            ctx,
            image: Default::default(),
        };
        let image = prepare_image(image)?;
        self.enter(c.ctx)?;
        let mut raw: CUmodule = std::ptr::null_mut();
        cu!(self, cuModuleLoadData(&mut raw, image.as_ptr().cast()))?;
        let layouts = self.image_layouts(&image, self.driver.cuda.cuFuncGetParamInfo.is_some());
        Ok(self.code.modules.insert(Module {
            raw,
            ctx: c.ctx,
            origin: ModuleOrigin::Loaded,
            layouts,
            functions: HashMap::new(),
            globals: Vec::new(),
        }))
    }
}

impl Session {
    /// Enters a module's context and returns the driver's module.
    fn enter_module(&mut self, h: u64) -> Result<CUmodule, Status> {
        let (raw, ctx) = match self.code.modules.find(h) {
            Some(m) => (m.raw, m.ctx),
            None => {
                tracing::debug!("session {}: unknown module handle {h:#x}", self.id);
                return Err(INVALID_HANDLE);
            }
        };
        self.enter(ctx)?;
        Ok(raw)
    }
}

impl Serve<ModuleUnload> for Session {
    fn serve(&mut self, c: ModuleUnload) -> Result<(), Status> {
        let h = c.module;
        if let Some(Module {
            origin: ModuleOrigin::Library(_),
            ..
        }) = self.code.modules.find(h)
        {
            // It lives and dies with its library.
            return Err(Status::Cuda(CUresult::CUDA_ERROR_NOT_PERMITTED));
        }
        let raw = self.enter_module(h)?;
        cu!(self, cuModuleUnload(raw))?;
        self.forget_module(h);
        Ok(())
    }
}

impl Session {
    /// Drops a module's handle, its functions' and its globals' ranges.
    fn forget_module(&mut self, h: u64) {
        let Some(m) = self.code.modules.remove(h) else {
            return;
        };
        for f in m.functions.values() {
            self.code.functions.remove(*f);
        }
        for (p, n) in m.globals {
            self.hide_global(p, n);
        }
    }
}

impl Serve<ModuleGetFunction> for Session {
    fn serve(&mut self, c: ModuleGetFunction) -> Result<FunctionInfo, Status> {
        let raw_mod = self.enter_module(c.module)?;
        if let Some(&h) = self
            .code
            .modules
            .find(c.module)
            .and_then(|m| m.functions.get(&c.name))
        {
            let params = self.code.functions.find(h).and_then(|f| f.params.clone());
            return Ok(FunctionInfo { handle: h, params });
        }
        let name = c_name(&c.name)?;
        let mut raw: CUfunction = std::ptr::null_mut();
        cu!(self, cuModuleGetFunction(&mut raw, raw_mod, name.as_ptr()))?;
        let from_driver =
            self.driver_layout(|s, i, off, size| cu!(s, cuFuncGetParamInfo(raw, i, off, size)));
        // A library's module reads its layouts from the library's image.
        let layouts = match self.code.modules.find_mut(c.module) {
            Some(Module {
                origin: ModuleOrigin::Library(l),
                ..
            }) => {
                let l = *l;
                self.code
                    .libraries
                    .find_mut(l)
                    .and_then(|lib| lib.layouts.take())
            }
            Some(m) => m.layouts.take(),
            None => None,
        };
        let params =
            self.resolve_layout("cuFuncGetParamInfo", &c.name, from_driver, layouts.as_ref());
        self.put_layouts_back(c.module, layouts);
        let ctx = self.code.modules.find(c.module).map(|m| m.ctx).unwrap_or(0);
        let h = self.code.functions.insert(Func {
            raw,
            ctx,
            owner: FuncOwner::Module(c.module),
            params: params.clone(),
        });
        if let Some(m) = self.code.modules.find_mut(c.module) {
            m.functions.insert(c.name, h);
        }
        Ok(FunctionInfo { handle: h, params })
    }
}

impl Serve<ModuleGetGlobal> for Session {
    fn serve(&mut self, c: ModuleGetGlobal) -> Result<(u64, u64), Status> {
        let raw_mod = self.enter_module(c.module)?;
        let name = c_name(&c.name)?;
        let (mut ptr, mut size) = (0u64, 0usize);
        cu!(
            self,
            cuModuleGetGlobal_v2(&mut ptr, &mut size, raw_mod, name.as_ptr())
        )?;
        let size = size as u64;
        // A library module's globals are the library's: recorded there, so
        // they go when the library does.
        let owner = match self.code.modules.find(c.module).map(|m| &m.origin) {
            Some(ModuleOrigin::Library(l)) => Some(*l),
            _ => None,
        };
        let ctx = self.code.modules.find(c.module).map(|m| m.ctx).unwrap_or(0);
        match owner.and_then(|l| self.code.libraries.find_mut(l)) {
            Some(lib) => lib.globals.push((ctx, ptr, size)),
            None => {
                if let Some(m) = self.code.modules.find_mut(c.module) {
                    m.globals.push((ptr, size));
                }
            }
        }
        self.expose_global(ptr, size);
        Ok((ptr, size))
    }
}

impl Session {
    fn library_load(&mut self, ctx: u64, image: Vec<u8>) -> Result<u64, Status> {
        self.admit_object(crate::account::Kind::Modules)?;
        let c = LibraryLoadData {
            ctx,
            image: Default::default(),
        };
        let image = prepare_image(image)?;
        // Libraries belong to no context; a guest with none current (cudart
        // loading its fatbins at a program's first launch) names none, and
        // the library's kernels then report device 0's attributes.
        let mut device: CUdevice = 0;
        if c.ctx != 0 {
            self.enter(c.ctx)?;
            cu!(self, cuCtxGetDevice(&mut device))?;
        }
        let mut raw: CUlibrary = std::ptr::null_mut();
        cu!(
            self,
            cuLibraryLoadData(
                &mut raw,
                image.as_ptr().cast(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0
            )
        )?;
        let layouts = self.image_layouts(&image, self.driver.cuda.cuKernelGetParamInfo.is_some());
        Ok(self.code.libraries.insert(Library {
            raw,
            ctx: c.ctx,
            device,
            layouts,
            kernels: HashMap::new(),
            modules: HashMap::new(),
            globals: Vec::new(),
        }))
    }
}

impl Session {
    fn library(&self, h: u64) -> Result<&Library, Status> {
        self.code.libraries.find(h).ok_or_else(|| {
            tracing::debug!("session {}: unknown library handle {h:#x}", self.id);
            INVALID_HANDLE
        })
    }
}

impl Serve<LibraryUnload> for Session {
    fn serve(&mut self, c: LibraryUnload) -> Result<(), Status> {
        let h = c.library;
        let raw = self.library(h)?.raw;
        // Libraries are context-independent: no context to enter.
        cu!(self, cuLibraryUnload(raw))?;
        self.forget_library(h);
        Ok(())
    }
}

impl Session {
    fn forget_library(&mut self, h: u64) {
        let Some(lib) = self.code.libraries.remove(h) else {
            return;
        };
        for k in lib.kernels.values() {
            if let Some(k) = self.code.kernels.remove(*k) {
                for f in k.functions.values() {
                    self.code.functions.remove(*f);
                }
            }
        }
        for m in lib.modules.values() {
            self.forget_module(*m);
        }
        for (_, p, n) in lib.globals {
            self.hide_global(p, n);
        }
    }
}

impl Serve<LibraryGetKernel> for Session {
    fn serve(&mut self, c: LibraryGetKernel) -> Result<FunctionInfo, Status> {
        let lib = self.library(c.library)?;
        if let Some(&h) = lib.kernels.get(&c.name) {
            let params = self.code.kernels.find(h).and_then(|k| k.params.clone());
            return Ok(FunctionInfo { handle: h, params });
        }
        let raw_lib = lib.raw;
        let name = c_name(&c.name)?;
        let mut raw: CUkernel = std::ptr::null_mut();
        cu!(self, cuLibraryGetKernel(&mut raw, raw_lib, name.as_ptr()))?;
        let from_driver =
            self.driver_layout(|s, i, off, size| cu!(s, cuKernelGetParamInfo(raw, i, off, size)));
        let layouts = self
            .code
            .libraries
            .find_mut(c.library)
            .and_then(|l| l.layouts.take());
        let params = self.resolve_layout(
            "cuKernelGetParamInfo",
            &c.name,
            from_driver,
            layouts.as_ref(),
        );
        if let Some(lib) = self.code.libraries.find_mut(c.library) {
            lib.layouts = layouts;
        }
        let h = self.code.kernels.insert(Kernel {
            raw,
            library: c.library,
            params: params.clone(),
            functions: HashMap::new(),
        });
        if let Some(lib) = self.code.libraries.find_mut(c.library) {
            lib.kernels.insert(c.name, h);
        }
        Ok(FunctionInfo { handle: h, params })
    }
}

impl Serve<LibraryGetModule> for Session {
    fn serve(&mut self, c: LibraryGetModule) -> Result<u64, Status> {
        let lib = self.library(c.library)?;
        let (raw_lib, cached) = (lib.raw, lib.modules.get(&c.ctx).copied());
        self.enter(c.ctx)?;
        if let Some(h) = cached {
            return Ok(h);
        }
        let mut raw: CUmodule = std::ptr::null_mut();
        cu!(self, cuLibraryGetModule(&mut raw, raw_lib))?;
        let h = self.code.modules.insert(Module {
            raw,
            ctx: c.ctx,
            origin: ModuleOrigin::Library(c.library),
            layouts: None,
            functions: HashMap::new(),
            globals: Vec::new(),
        });
        if let Some(lib) = self.code.libraries.find_mut(c.library) {
            lib.modules.insert(c.ctx, h);
        }
        Ok(h)
    }
}

impl Serve<LibraryGetGlobal> for Session {
    fn serve(&mut self, c: LibraryGetGlobal) -> Result<(u64, u64), Status> {
        let raw_lib = self.library(c.library)?.raw;
        self.enter(c.ctx)?;
        let name = c_name(&c.name)?;
        let (mut ptr, mut size) = (0u64, 0usize);
        cu!(
            self,
            cuLibraryGetGlobal(&mut ptr, &mut size, raw_lib, name.as_ptr() as *const c_char)
        )?;
        let size = size as u64;
        if let Some(lib) = self.code.libraries.find_mut(c.library) {
            lib.globals.push((c.ctx, ptr, size));
        }
        self.expose_global(ptr, size);
        Ok((ptr, size))
    }
}

impl Session {
    /// A kernel's function in `ctx` (entered), minted once per context.
    fn kernel_function(&mut self, kernel: u64, ctx: u64) -> Result<FunctionInfo, Status> {
        let (raw_k, params, cached) = match self.code.kernels.find(kernel) {
            Some(k) => (k.raw, k.params.clone(), k.functions.get(&ctx).copied()),
            None => {
                tracing::debug!("session {}: unknown kernel handle {kernel:#x}", self.id);
                return Err(INVALID_HANDLE);
            }
        };
        self.enter(ctx)?;
        if let Some(h) = cached {
            return Ok(FunctionInfo { handle: h, params });
        }
        let mut raw: CUfunction = std::ptr::null_mut();
        cu!(self, cuKernelGetFunction(&mut raw, raw_k))?;
        let h = self.code.functions.insert(Func {
            raw,
            ctx,
            owner: FuncOwner::Kernel(kernel),
            params: params.clone(),
        });
        if let Some(k) = self.code.kernels.find_mut(kernel) {
            k.functions.insert(ctx, h);
        }
        Ok(FunctionInfo { handle: h, params })
    }
}

impl Serve<KernelGetFunction> for Session {
    fn serve(&mut self, c: KernelGetFunction) -> Result<FunctionInfo, Status> {
        self.kernel_function(c.kernel, c.ctx)
    }
}

impl Session {
    /// The device a kernel's attributes are asked for: its library's.
    fn kernel_device(&self, kernel: u64) -> Result<CUdevice, Status> {
        let lib = self
            .code
            .kernels
            .find(kernel)
            .map(|k| k.library)
            .ok_or(INVALID_HANDLE)?;
        Ok(self.library(lib)?.device)
    }

    /// Enters the function's context; a kernel needs none.
    fn enter_callable(&mut self, h: u64) -> Result<Callable, Status> {
        let c = self.callable(h)?;
        if let Callable::Function { ctx, .. } = c {
            self.enter(ctx)?;
        }
        Ok(c)
    }
}

impl Serve<FuncGetAttribute> for Session {
    fn serve(&mut self, c: FuncGetAttribute) -> Result<i32, Status> {
        let attr = CUfunction_attribute(c.attr as u32);
        let mut v: i32 = 0;
        match self.enter_callable(c.func)? {
            Callable::Function { raw, .. } => cu!(self, cuFuncGetAttribute(&mut v, attr, raw))?,
            Callable::Kernel { raw, handle } => {
                let dev = self.kernel_device(handle)?;
                cu!(self, cuKernelGetAttribute(&mut v, attr, raw, dev))?
            }
        }
        Ok(v)
    }
}

impl Serve<FuncSetAttribute> for Session {
    fn serve(&mut self, c: FuncSetAttribute) -> Result<(), Status> {
        let attr = CUfunction_attribute(c.attr as u32);
        match self.enter_callable(c.func)? {
            Callable::Function { raw, .. } => cu!(self, cuFuncSetAttribute(raw, attr, c.value)),
            Callable::Kernel { raw, handle } => {
                let dev = self.kernel_device(handle)?;
                cu!(self, cuKernelSetAttribute(attr, c.value, raw, dev))
            }
        }
    }
}

impl Serve<FuncSetCacheConfig> for Session {
    fn serve(&mut self, c: FuncSetCacheConfig) -> Result<(), Status> {
        let config = CUfunc_cache(c.config);
        match self.enter_callable(c.func)? {
            Callable::Function { raw, .. } => cu!(self, cuFuncSetCacheConfig(raw, config)),
            Callable::Kernel { raw, handle } => {
                let dev = self.kernel_device(handle)?;
                cu!(self, cuKernelSetCacheConfig(raw, config, dev))
            }
        }
    }
}

impl Session {
    /// A function to compute occupancy for: a kernel's function in its
    /// library's context (occupancy depends on the device only).
    pub(super) fn occupancy_function(&mut self, h: u64) -> Result<CUfunction, Status> {
        match self.callable(h)? {
            Callable::Function { raw, ctx } => {
                self.enter(ctx)?;
                Ok(raw)
            }
            k @ Callable::Kernel { handle, .. } => {
                let lib = self
                    .code
                    .kernels
                    .find(handle)
                    .map(|k| k.library)
                    .ok_or(INVALID_HANDLE)?;
                let ctx = self.library(lib)?.ctx;
                self.enter(ctx)?;
                self.function_in(k, ctx)
            }
        }
    }
}

impl Serve<OccupancyMaxActiveBlocks> for Session {
    fn serve(&mut self, c: OccupancyMaxActiveBlocks) -> Result<i32, Status> {
        let f = self.occupancy_function(c.func)?;
        let mut n: i32 = 0;
        let smem = usize::try_from(c.dynamic_smem).map_err(|_| INVALID_VALUE)?;
        if c.flags == 0
            && self
                .driver
                .cuda
                .cuOccupancyMaxActiveBlocksPerMultiprocessor
                .is_some()
        {
            cu!(
                self,
                cuOccupancyMaxActiveBlocksPerMultiprocessor(&mut n, f, c.block_size, smem)
            )?;
        } else {
            cu!(
                self,
                cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
                    &mut n,
                    f,
                    c.block_size,
                    smem,
                    c.flags
                )
            )?;
        }
        Ok(n)
    }
}

impl Serve<OccupancyMaxPotentialBlockSize> for Session {
    fn serve(&mut self, c: OccupancyMaxPotentialBlockSize) -> Result<(i32, i32), Status> {
        let f = self.occupancy_function(c.func)?;
        let smem = usize::try_from(c.dynamic_smem).map_err(|_| INVALID_VALUE)?;
        let (mut grid, mut block) = (0i32, 0i32);
        if c.flags == 0 && self.driver.cuda.cuOccupancyMaxPotentialBlockSize.is_some() {
            cu!(
                self,
                cuOccupancyMaxPotentialBlockSize(
                    &mut grid,
                    &mut block,
                    f,
                    None,
                    smem,
                    c.block_size_limit
                )
            )?;
        } else {
            cu!(
                self,
                cuOccupancyMaxPotentialBlockSizeWithFlags(
                    &mut grid,
                    &mut block,
                    f,
                    None,
                    smem,
                    c.block_size_limit,
                    c.flags
                )
            )?;
        }
        Ok((grid, block))
    }
}

impl Session {
    /// A context is gone and its modules, functions and library pieces
    /// with it.
    pub(super) fn forget_code_of(&mut self, ctx: u64) -> usize {
        let mods: Vec<u64> = self
            .code
            .modules
            .iter()
            .filter(|(_, m)| m.ctx == ctx)
            .map(|(h, _)| h)
            .collect();
        for h in &mods {
            if let Some(Module {
                origin: ModuleOrigin::Library(l),
                ..
            }) = self.code.modules.find(*h)
            {
                let l = *l;
                if let Some(lib) = self.code.libraries.find_mut(l) {
                    lib.modules.remove(&ctx);
                }
            }
            self.forget_module(*h);
        }
        let funcs: Vec<(u64, FuncOwner)> = self
            .code
            .functions
            .iter()
            .filter(|(_, f)| f.ctx == ctx)
            .map(|(h, f)| (h, f.owner))
            .collect();
        for (h, owner) in &funcs {
            self.code.functions.remove(*h);
            if let FuncOwner::Kernel(k) = owner {
                if let Some(k) = self.code.kernels.find_mut(*k) {
                    k.functions.remove(&ctx);
                }
            }
        }
        let mut hidden = Vec::new();
        let libs: Vec<u64> = self.code.libraries.iter().map(|(h, _)| h).collect();
        for h in libs {
            if let Some(lib) = self.code.libraries.find_mut(h) {
                lib.globals.retain(|&(c, p, n)| {
                    if c == ctx {
                        hidden.push((p, n));
                    }
                    c != ctx
                });
            }
        }
        for (p, n) in hidden {
            self.hide_global(p, n);
        }
        mods.len()
    }

    /// Session teardown: unloads the guest's modules and libraries.
    /// Returns (modules, libraries) the driver took back.
    pub(super) fn release_code(&mut self) -> (usize, usize) {
        let loaded: Vec<(u64, CUmodule, u64)> = self
            .code
            .modules
            .iter()
            .filter(|(_, m)| matches!(m.origin, ModuleOrigin::Loaded))
            .map(|(h, m)| (h, m.raw, m.ctx))
            .collect();
        let mut mods = 0;
        for (h, raw, ctx) in loaded {
            // A module of a context already gone went with it.
            if self.enter(ctx).is_ok() {
                match cu!(self, cuModuleUnload(raw)) {
                    Ok(()) => mods += 1,
                    Err(e) => tracing::warn!("session {}: cuModuleUnload: {e}", self.id),
                }
            }
            self.forget_module(h);
        }
        let libs: Vec<(u64, CUlibrary)> = self
            .code
            .libraries
            .iter()
            .map(|(h, l)| (h, l.raw))
            .collect();
        let mut n = 0;
        for (h, raw) in libs {
            match cu!(self, cuLibraryUnload(raw)) {
                Ok(()) => n += 1,
                Err(e) => tracing::warn!("session {}: cuLibraryUnload: {e}", self.id),
            }
            self.forget_library(h);
        }
        self.code.modules.take_all();
        self.code.functions.take_all();
        self.code.kernels.take_all();
        (mods, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_bounded_before_the_driver_sees_them() {
        assert_eq!(
            prepare_image(b".version 8.0".to_vec()).unwrap().last(),
            Some(&0)
        );
        let nul = b"ptx\0".to_vec();
        assert_eq!(prepare_image(nul.clone()), Ok(nul));
        assert_eq!(prepare_image(Vec::new()), Err(INVALID_VALUE));

        let mut fb = Vec::new();
        fb.extend_from_slice(&CONTAINER_MAGIC.to_le_bytes());
        fb.extend_from_slice(&1u16.to_le_bytes());
        fb.extend_from_slice(&16u16.to_le_bytes());
        fb.extend_from_slice(&8u64.to_le_bytes());
        fb.extend_from_slice(&[0; 8]);
        assert!(prepare_image(fb.clone()).is_ok());
        fb.pop();
        assert_eq!(prepare_image(fb), Err(INVALID_IMAGE));

        let wrapper = WRAPPER_MAGIC.to_le_bytes().to_vec();
        assert_eq!(prepare_image(wrapper), Err(INVALID_IMAGE));

        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(&ELF_MAGIC);
        elf[4] = 2;
        elf[5] = 1;
        assert!(prepare_image(elf.clone()).is_ok());
        // Section headers said to be at 64, 64 bytes each, 1 of them.
        elf[40] = 64;
        elf[58] = 64;
        elf[60] = 1;
        assert_eq!(prepare_image(elf.clone()), Err(INVALID_IMAGE));
        elf.resize(128, 0);
        assert!(prepare_image(elf).is_ok());
    }
}
