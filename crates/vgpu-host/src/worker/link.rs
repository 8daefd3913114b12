//! `cuLink*` in one round trip: the guest collects its inputs locally and
//! the worker links them and returns the image, so no link state lives
//! across calls (nothing to leak when a guest forgets `cuLinkDestroy`).

use super::module::prepare_image;
use super::{cu, Session};
use cuda_types::cuda::{CUjitInputType, CUjit_option, CUlinkState, CUresult};
use std::ffi::{c_void, CString};
use vgpu_transport::codec::Bytes;
use vgpu_transport::frame::{HEADER_LEN, MAX_PAYLOAD};
use vgpu_transport::proto::{LinkComplete, Serve};
use vgpu_transport::Status;

const INVALID_VALUE: Status = Status::Cuda(CUresult::CUDA_ERROR_INVALID_VALUE);
const LOG_BYTES: usize = 16 * 1024;

/// Destroys the link state however linking ends.
struct LinkState<'a> {
    session: &'a Session,
    raw: CUlinkState,
}

impl Drop for LinkState<'_> {
    fn drop(&mut self) {
        if let Err(e) = cu!(self.session, cuLinkDestroy(self.raw)) {
            tracing::warn!("session {}: cuLinkDestroy: {e}", self.session.id);
        }
    }
}

impl Serve<LinkComplete> for Session {
    fn serve(&mut self, c: LinkComplete) -> Result<Bytes, Status> {
        // Check every input before the driver sees any.
        let mut inputs = Vec::with_capacity(c.inputs.len());
        for i in c.inputs {
            if i.input_type >= CUjitInputType::CU_JIT_NUM_INPUT_TYPES.0 {
                return Err(INVALID_VALUE);
            }
            let name = CString::new(i.name).map_err(|_| INVALID_VALUE)?;
            let data = if i.input_type == CUjitInputType::CU_JIT_INPUT_PTX.0 {
                prepare_image(i.data.0)?
            } else {
                i.data.0
            };
            inputs.push((CUjitInputType(i.input_type), name, data));
        }
        self.enter(c.ctx)?;
        let mut log = vec![0u8; LOG_BYTES];
        let mut opts = [
            CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
            CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
        ];
        let mut vals: [*mut c_void; 2] = [
            log.as_mut_ptr().cast(),
            std::ptr::without_provenance_mut(LOG_BYTES),
        ];
        let mut raw: CUlinkState = std::ptr::null_mut();
        cu!(
            self,
            cuLinkCreate_v2(2, opts.as_mut_ptr(), vals.as_mut_ptr(), &mut raw)
        )?;
        let state = LinkState { session: self, raw };
        let linked = Self::link_inputs(&state, &mut inputs);
        if let Err(e) = linked {
            let end = log.iter().position(|&b| b == 0).unwrap_or(0);
            tracing::info!(
                "session {}: link failed with {e}: {}",
                self.id,
                String::from_utf8_lossy(&log[..end])
            );
        }
        drop(state);
        linked
    }
}

impl Session {
    fn link_inputs(
        state: &LinkState<'_>,
        inputs: &mut [(CUjitInputType, CString, Vec<u8>)],
    ) -> Result<Bytes, Status> {
        let s = state.session;
        for (ty, name, data) in inputs.iter_mut() {
            cu!(
                s,
                cuLinkAddData_v2(
                    state.raw,
                    *ty,
                    data.as_mut_ptr().cast(),
                    data.len(),
                    name.as_ptr(),
                    0,
                    std::ptr::null_mut(),
                    std::ptr::null_mut()
                )
            )?;
        }
        let mut cubin: *mut c_void = std::ptr::null_mut();
        let mut size: usize = 0;
        cu!(s, cuLinkComplete(state.raw, &mut cubin, &mut size))?;
        // The reply must fit one frame (with the length prefix of Bytes).
        if cubin.is_null() || size > MAX_PAYLOAD as usize - HEADER_LEN {
            tracing::warn!(
                "session {}: linked image of {size} bytes cannot be sent",
                s.id
            );
            return Err(Status::Cuda(CUresult::CUDA_ERROR_OUT_OF_MEMORY));
        }
        // SAFETY: cuLinkComplete returned `size` bytes at `cubin`, owned by
        // the link state, which is destroyed only after this copy.
        let image = unsafe { std::slice::from_raw_parts(cubin.cast::<u8>(), size) }.to_vec();
        Ok(Bytes(image))
    }
}
