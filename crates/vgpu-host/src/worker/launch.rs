//! Kernel launches, launch attributes and the occupancy queries that take
//! a launch configuration.
//!
//! The guest packs the arguments into one buffer (the layout comes from
//! the function's parameter info) and the driver takes it as is through
//! `extra`; pointer arguments are real device addresses and need no
//! rewriting. A cooperative launch cannot take `extra` (the driver refuses
//! it), so it gets one pointer per argument, from the layout. A launch is
//! a deferred op: its failure is reported by the next synchronizing call
//! (see [`super::batch`]).
//!
//! A launch with attributes (`cuLaunchKernelEx`) goes to the driver's
//! `cuLaunchKernelEx` with every attribute the guest sent, in its order;
//! attributes naming events carry this session's event handles, replaced
//! here by the driver's events. The one attribute refused here is a
//! device-updatable kernel node: the driver answers it with a handle
//! (`devNode`) for device-side updates that the protocol does not carry
//! back.

use super::module::Callable;
use super::{cu, Session};
use cuda_abi::launch as abi;
use cuda_types::cuda::{
    CUfunction, CUlaunchAttribute, CUlaunchAttributeID as Id, CUlaunchConfig, CUresult, CUstream,
};
use vgpu_transport::proto::{
    LaunchAttr, LaunchKernel, OccupancyAvailableDynamicSMem, OccupancyMaxActiveClusters,
    OccupancyMaxPotentialClusterSize, Serve,
};
use vgpu_transport::Status;

const INVALID_VALUE: Status = Status::Cuda(CUresult::CUDA_ERROR_INVALID_VALUE);
const INVALID_HANDLE: Status = Status::Cuda(CUresult::CUDA_ERROR_INVALID_HANDLE);
const NOT_SUPPORTED: Status = Status::Cuda(CUresult::CUDA_ERROR_NOT_SUPPORTED);

impl Session {
    /// The context a stream-ordered call actually runs in: the stream's
    /// own for a stream handle, else the one the call names.
    pub(super) fn stream_ctx(&self, ctx: u64, stream: u64) -> u64 {
        match stream {
            0 | super::stream::WIRE_LEGACY | super::stream::WIRE_PER_THREAD => ctx,
            h => self.streams.find(h).map(|s| s.ctx).unwrap_or(ctx),
        }
    }

    /// The driver's form of launch attributes from the wire: event handles
    /// become this session's driver events. Refuses an unknown event
    /// handle and a device-updatable node (see the module docs).
    pub(super) fn driver_attrs(
        &self,
        attrs: &[LaunchAttr],
    ) -> Result<Vec<CUlaunchAttribute>, Status> {
        attrs.iter().map(|a| self.driver_attr(a)).collect()
    }

    fn driver_attr(&self, a: &LaunchAttr) -> Result<CUlaunchAttribute, Status> {
        let event = |h: u64| match self.events.find(h) {
            Some(e) => Ok(e.raw),
            None => {
                tracing::debug!(
                    "session {}: launch attribute names unknown event {h:#x}",
                    self.id
                );
                Err(INVALID_HANDLE)
            }
        };
        if let LaunchAttr::DeviceUpdatableKernelNode {
            device_updatable: 1..,
        }
        | LaunchAttr::DeviceUpdatableKernelNode {
            device_updatable: ..=-1,
        } = a
        {
            tracing::warn!(
                "session {}: device-updatable kernel nodes are not supported (the \
                 driver's devNode handle is not carried back to the guest); refused",
                self.id
            );
            return Err(NOT_SUPPORTED);
        }
        a.to_cuda(event)
    }
}

/// Whether attributes ask for a cooperative launch.
pub(super) fn wants_cooperative(attrs: &[LaunchAttr]) -> bool {
    attrs
        .iter()
        .any(|a| matches!(a, LaunchAttr::Cooperative { value } if *value != 0))
}

impl Serve<LaunchKernel> for Session {
    fn serve(&mut self, c: LaunchKernel) -> Result<(), Status> {
        let callable = self.callable(c.func)?;
        // Validates the context and stream handles and enters the context
        // the work runs in, which the function must belong to.
        let stream = self.enter_stream(c.ctx, c.stream)?;
        let ctx = self.stream_ctx(c.ctx, c.stream);
        let f = self.function_in(callable, ctx)?;
        // The layout is only copied out for a cooperative launch, which
        // needs it after `self` is borrowed again (the plain launch, the
        // hot path, allocates nothing here).
        let need = self.params_size_of(callable, c.func);
        if c.params.0.len() < need {
            tracing::debug!(
                "session {}: launch with {} argument bytes, the kernel takes {need}",
                self.id,
                c.params.0.len()
            );
            return Err(INVALID_VALUE);
        }
        let mut params = c.params.0;
        if !c.attrs.is_empty() {
            let mut attrs = self.driver_attrs(&c.attrs)?;
            let cooperative = c.cooperative || wants_cooperative(&c.attrs);
            if c.cooperative && !wants_cooperative(&c.attrs) {
                let mut a = CUlaunchAttribute {
                    id: Id::CU_LAUNCH_ATTRIBUTE_COOPERATIVE,
                    ..Default::default()
                };
                a.value.cooperative = 1;
                attrs.push(a);
            }
            let config = CUlaunchConfig {
                gridDimX: c.grid[0],
                gridDimY: c.grid[1],
                gridDimZ: c.grid[2],
                blockDimX: c.block[0],
                blockDimY: c.block[1],
                blockDimZ: c.block[2],
                sharedMemBytes: c.shared_mem,
                hStream: stream,
                attrs: attrs.as_mut_ptr(),
                numAttrs: attrs.len() as u32,
            };
            let layout = cooperative.then(|| self.layout_of(callable, c.func));
            return self.launch_ex(f, &config, &mut params, layout.as_deref());
        }
        if c.cooperative {
            let layout = self.layout_of(callable, c.func);
            self.launch_cooperative(
                f,
                &c.grid,
                &c.block,
                c.shared_mem,
                stream,
                &mut params,
                &layout,
            )
        } else {
            self.launch_plain(f, &c.grid, &c.block, c.shared_mem, stream, &mut params)
        }
    }
}

impl Session {
    /// The parameter layout known for a function or kernel handle (empty
    /// when unknown: only a launch with no arguments can then go ahead).
    pub(super) fn layout_of(&self, callable: Callable, h: u64) -> Vec<(u32, u32)> {
        match callable {
            Callable::Function { .. } => self.code.functions.find(h).and_then(|f| f.params.clone()),
            Callable::Kernel { .. } => self.code.kernels.find(h).and_then(|k| k.params.clone()),
        }
        .unwrap_or_default()
    }

    /// The argument bytes [`Session::layout_of`]'s layout takes, without
    /// copying it.
    fn params_size_of(&self, callable: Callable, h: u64) -> usize {
        let size = |l: &Option<Vec<(u32, u32)>>| l.as_deref().map_or(0, abi::params_size);
        match callable {
            Callable::Function { .. } => self.code.functions.find(h).map_or(0, |f| size(&f.params)),
            Callable::Kernel { .. } => self.code.kernels.find(h).map_or(0, |k| size(&k.params)),
        }
    }

    fn launch_plain(
        &self,
        f: CUfunction,
        grid: &[u32; 3],
        block: &[u32; 3],
        smem: u32,
        stream: CUstream,
        params: &mut [u8],
    ) -> Result<(), Status> {
        if params.is_empty() {
            return cu!(
                self,
                cuLaunchKernel(
                    f,
                    grid[0],
                    grid[1],
                    grid[2],
                    block[0],
                    block[1],
                    block[2],
                    smem,
                    stream,
                    std::ptr::null_mut(),
                    std::ptr::null_mut()
                )
            );
        }
        let mut size: usize = params.len();
        let mut extra = abi::extra_array(params.as_mut_ptr().cast(), &mut size);
        // `extra`, the buffer and `size` outlive the call; the driver copies
        // the arguments before it returns.
        cu!(
            self,
            cuLaunchKernel(
                f,
                grid[0],
                grid[1],
                grid[2],
                block[0],
                block[1],
                block[2],
                smem,
                stream,
                std::ptr::null_mut(),
                extra.as_mut_ptr()
            )
        )
    }

    /// `cuLaunchKernelEx`: the buffer through `extra`, or for a
    /// cooperative launch (`layout` given) one pointer per argument.
    fn launch_ex(
        &self,
        f: CUfunction,
        config: &CUlaunchConfig,
        params: &mut [u8],
        cooperative: Option<&[(u32, u32)]>,
    ) -> Result<(), Status> {
        if let Some(layout) = cooperative {
            let mut ptrs = self.argument_pointers(params, layout)?;
            let kernel_params = if ptrs.is_empty() {
                std::ptr::null_mut()
            } else {
                ptrs.as_mut_ptr()
            };
            return cu!(
                self,
                cuLaunchKernelEx(config, f, kernel_params, std::ptr::null_mut())
            );
        }
        if params.is_empty() {
            return cu!(
                self,
                cuLaunchKernelEx(config, f, std::ptr::null_mut(), std::ptr::null_mut())
            );
        }
        let mut size: usize = params.len();
        let mut extra = abi::extra_array(params.as_mut_ptr().cast(), &mut size);
        // The attribute array, `extra`, the buffer and `size` outlive the
        // call; the driver copies what it needs before it returns.
        cu!(
            self,
            cuLaunchKernelEx(config, f, std::ptr::null_mut(), extra.as_mut_ptr())
        )
    }

    /// One pointer per argument into `params`, for the calls that cannot
    /// take the packed buffer (cooperative launches and kernel nodes).
    /// The caller checked `params` is at least the layout's size.
    pub(super) fn argument_pointers(
        &self,
        params: &mut [u8],
        layout: &[(u32, u32)],
    ) -> Result<Vec<*mut std::ffi::c_void>, Status> {
        if layout.is_empty() && !params.is_empty() {
            tracing::warn!(
                "session {}: cooperative launch without a known parameter layout; refused",
                self.id
            );
            return Err(NOT_SUPPORTED);
        }
        Ok(abi::arg_pointers(params, layout))
    }

    /// `cuLaunchCooperativeKernel` has no `extra`: it needs a pointer per
    /// argument, so the layout must be known.
    #[allow(clippy::too_many_arguments)]
    fn launch_cooperative(
        &self,
        f: CUfunction,
        grid: &[u32; 3],
        block: &[u32; 3],
        smem: u32,
        stream: CUstream,
        params: &mut [u8],
        layout: &[(u32, u32)],
    ) -> Result<(), Status> {
        // Bounds were checked against the layout by the caller.
        let mut ptrs = self.argument_pointers(params, layout)?;
        let kernel_params = if ptrs.is_empty() {
            std::ptr::null_mut()
        } else {
            ptrs.as_mut_ptr()
        };
        cu!(
            self,
            cuLaunchCooperativeKernel(
                f,
                grid[0],
                grid[1],
                grid[2],
                block[0],
                block[1],
                block[2],
                smem,
                stream,
                kernel_params
            )
        )
    }
}

impl Session {
    /// A launch configuration for the occupancy queries: the function's
    /// context is current, so no stream is needed to pick one.
    fn occupancy_config(
        grid: [u32; 3],
        block: [u32; 3],
        shared_mem: u32,
        attrs: &mut [CUlaunchAttribute],
    ) -> CUlaunchConfig {
        CUlaunchConfig {
            gridDimX: grid[0],
            gridDimY: grid[1],
            gridDimZ: grid[2],
            blockDimX: block[0],
            blockDimY: block[1],
            blockDimZ: block[2],
            sharedMemBytes: shared_mem,
            hStream: std::ptr::null_mut(),
            attrs: if attrs.is_empty() {
                std::ptr::null_mut()
            } else {
                attrs.as_mut_ptr()
            },
            numAttrs: attrs.len() as u32,
        }
    }
}

impl Serve<OccupancyMaxActiveClusters> for Session {
    fn serve(&mut self, c: OccupancyMaxActiveClusters) -> Result<i32, Status> {
        let f = self.occupancy_function(c.func)?;
        let mut attrs = self.driver_attrs(&c.attrs)?;
        let config = Session::occupancy_config(c.grid, c.block, c.shared_mem, &mut attrs);
        let mut n = 0;
        cu!(self, cuOccupancyMaxActiveClusters(&mut n, f, &config))?;
        Ok(n)
    }
}

impl Serve<OccupancyMaxPotentialClusterSize> for Session {
    fn serve(&mut self, c: OccupancyMaxPotentialClusterSize) -> Result<i32, Status> {
        let f = self.occupancy_function(c.func)?;
        let mut attrs = self.driver_attrs(&c.attrs)?;
        let config = Session::occupancy_config(c.grid, c.block, c.shared_mem, &mut attrs);
        let mut n = 0;
        cu!(self, cuOccupancyMaxPotentialClusterSize(&mut n, f, &config))?;
        Ok(n)
    }
}

impl Serve<OccupancyAvailableDynamicSMem> for Session {
    fn serve(&mut self, c: OccupancyAvailableDynamicSMem) -> Result<u64, Status> {
        let f = self.occupancy_function(c.func)?;
        let mut size: usize = 0;
        cu!(
            self,
            cuOccupancyAvailableDynamicSMemPerBlock(&mut size, f, c.num_blocks, c.block_size)
        )?;
        Ok(size as u64)
    }
}
