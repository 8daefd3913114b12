//! Kernel launches.
//!
//! The guest packs the arguments into one buffer (the layout comes from
//! the function's parameter info) and the driver takes it as is through
//! `extra`; pointer arguments are real device addresses and need no
//! rewriting. A launch is a deferred op: its failure is reported by the
//! next synchronizing call (see [`super::batch`]).

use super::module::Callable;
use super::{cu, Session};
use cuda_abi::launch as abi;
use cuda_types::cuda::{CUfunction, CUresult, CUstream};
use vgpu_transport::proto::{LaunchKernel, Serve};
use vgpu_transport::Status;

const INVALID_VALUE: Status = Status::Cuda(CUresult::CUDA_ERROR_INVALID_VALUE);

impl Session {
    /// The context a stream-ordered call actually runs in: the stream's
    /// own for a stream handle, else the one the call names.
    pub(super) fn stream_ctx(&self, ctx: u64, stream: u64) -> u64 {
        match stream {
            0 | super::stream::WIRE_LEGACY | super::stream::WIRE_PER_THREAD => ctx,
            h => self.streams.find(h).map(|s| s.ctx).unwrap_or(ctx),
        }
    }
}

impl Serve<LaunchKernel> for Session {
    fn serve(&mut self, c: LaunchKernel) -> Result<(), Status> {
        let callable = self.callable(c.func)?;
        // Validates the context and stream handles and enters the context
        // the work runs in, which the function must belong to.
        let stream = self.enter_stream(c.ctx, c.stream)?;
        let ctx = self.stream_ctx(c.ctx, c.stream);
        let f = self.function_in(callable, ctx)?;
        let layout = self.layout_of(callable, c.func);
        let need = abi::params_size(&layout);
        if c.params.0.len() < need {
            tracing::debug!(
                "session {}: launch with {} argument bytes, the kernel takes {need}",
                self.id,
                c.params.0.len()
            );
            return Err(INVALID_VALUE);
        }
        let mut params = c.params.0;
        if c.cooperative {
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
    fn layout_of(&self, callable: Callable, h: u64) -> Vec<(u32, u32)> {
        match callable {
            Callable::Function { .. } => self.code.functions.find(h).and_then(|f| f.params.clone()),
            Callable::Kernel { .. } => self.code.kernels.find(h).and_then(|k| k.params.clone()),
        }
        .unwrap_or_default()
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
        if layout.is_empty() && !params.is_empty() {
            tracing::warn!(
                "session {}: cooperative launch without a known parameter layout; refused",
                self.id
            );
            return Err(Status::Cuda(CUresult::CUDA_ERROR_NOT_SUPPORTED));
        }
        // Bounds were checked against the layout by the caller.
        let mut ptrs = abi::arg_pointers(params, layout);
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
