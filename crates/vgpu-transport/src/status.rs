//! The status of a reply: what a frame header's `status` field carries.
//!
//! One type for the three kinds of code a reply can hold: a `CUresult` from
//! a driver call, an `nvmlReturn_t` from an NVML query, or a protocol code
//! (`STATUS_*`, all at or above [`PROTOCOL_BASE`], so above every CUDA and
//! NVML code) when the request never reached a driver function. The two
//! driver domains share numbers (999 is `CUDA_ERROR_UNKNOWN` and
//! `NVML_ERROR_UNKNOWN`), so a code on the wire is read in the domain its op
//! declares (see [`crate::proto::Domain`]); typed, they cannot be confused.

use crate::proto::Domain;
use cuda_types::cuda::CUresult;
use cuda_types::nvml::nvmlReturn_t;
use std::fmt;

/// Codes from here up belong to the protocol, not to CUDA or NVML.
pub const PROTOCOL_BASE: u32 = 0xF000_0000;
/// The request could not be decoded, or its frame contradicts its op.
pub const STATUS_BAD_REQUEST: u32 = 0xF000_0001;
/// The op is not one this host knows.
pub const STATUS_UNKNOWN_OP: u32 = 0xF000_0002;
/// The host failed to serve this call (a handler panicked in the worker).
pub const STATUS_HOST_ERROR: u32 = 0xF000_0003;

/// A failed call's status. Success is not a `Status`: it is the `Ok` of a
/// `Result<_, Status>` and 0 on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// A CUDA driver result other than `CUDA_SUCCESS`.
    Cuda(CUresult),
    /// An NVML result other than `NVML_SUCCESS`.
    Nvml(nvmlReturn_t),
    /// A protocol failure: one of the `STATUS_*` codes (or a newer one).
    Protocol(u32),
}

impl Status {
    pub const BAD_REQUEST: Status = Status::Protocol(STATUS_BAD_REQUEST);
    pub const UNKNOWN_OP: Status = Status::Protocol(STATUS_UNKNOWN_OP);
    pub const HOST_ERROR: Status = Status::Protocol(STATUS_HOST_ERROR);

    /// The value of the header's status field.
    pub fn code(self) -> u32 {
        match self {
            Status::Cuda(r) => r.0,
            Status::Nvml(r) => r.0,
            Status::Protocol(c) => c,
        }
    }

    /// Reads a header's status field for an op of `domain`: `None` for 0
    /// (success). Total: every value is some status.
    pub fn from_wire(domain: Domain, code: u32) -> Option<Status> {
        Some(match code {
            0 => return None,
            c if c >= PROTOCOL_BASE => Status::Protocol(c),
            c => match domain {
                Domain::Cuda => Status::Cuda(CUresult(c)),
                Domain::Nvml => Status::Nvml(nvmlReturn_t(c)),
            },
        })
    }

    /// Whether a real driver refuses every later call in the context after
    /// this error (the context's GPU state is lost). Only CUDA errors are.
    pub fn is_sticky(self) -> bool {
        use CUresult as R;
        matches!(
            self,
            Status::Cuda(
                R::CUDA_ERROR_ILLEGAL_ADDRESS
                    | R::CUDA_ERROR_LAUNCH_TIMEOUT
                    | R::CUDA_ERROR_ASSERT
                    | R::CUDA_ERROR_HARDWARE_STACK_ERROR
                    | R::CUDA_ERROR_ILLEGAL_INSTRUCTION
                    | R::CUDA_ERROR_MISALIGNED_ADDRESS
                    | R::CUDA_ERROR_INVALID_ADDRESS_SPACE
                    | R::CUDA_ERROR_INVALID_PC
                    | R::CUDA_ERROR_LAUNCH_FAILED
                    | R::CUDA_ERROR_UNKNOWN
            )
        )
    }

    /// `CUDA_ERROR_NOT_READY`: an answer ("work pending"), not a failure.
    pub fn is_not_ready(self) -> bool {
        self == Status::Cuda(CUresult::CUDA_ERROR_NOT_READY)
    }
}

impl From<CUresult> for Status {
    fn from(r: CUresult) -> Status {
        Status::Cuda(r)
    }
}

impl From<nvmlReturn_t> for Status {
    fn from(r: nvmlReturn_t) -> Status {
        Status::Nvml(r)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Status::Cuda(r) => write!(f, "CUresult {}", r.0),
            Status::Nvml(r) => write!(f, "nvmlReturn {}", r.0),
            Status::BAD_REQUEST => f.write_str("bad request"),
            Status::UNKNOWN_OP => f.write_str("unknown op"),
            Status::HOST_ERROR => f.write_str("host error"),
            Status::Protocol(c) => write!(f, "protocol status {c:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_codes_round_trip_in_their_domain() {
        let cases = [
            (
                Domain::Cuda,
                Status::Cuda(CUresult::CUDA_ERROR_INVALID_VALUE),
            ),
            (
                Domain::Nvml,
                Status::Nvml(nvmlReturn_t::NVML_ERROR_NOT_SUPPORTED),
            ),
            (Domain::Cuda, Status::BAD_REQUEST),
            (Domain::Nvml, Status::UNKNOWN_OP),
            (Domain::Cuda, Status::Protocol(0xF000_00FF)),
        ];
        for (domain, s) in cases {
            assert_eq!(Status::from_wire(domain, s.code()), Some(s), "{s}");
        }
        assert_eq!(Status::from_wire(Domain::Cuda, 0), None);
        assert_eq!(Status::from_wire(Domain::Nvml, 0), None);
        // The same number means different things in the two domains.
        assert_ne!(
            Status::from_wire(Domain::Cuda, 999),
            Status::from_wire(Domain::Nvml, 999)
        );
    }

    #[test]
    fn protocol_codes_are_above_every_driver_code() {
        // The largest codes the headers define: CUDA_ERROR_UNKNOWN (999)
        // and NVML_ERROR_UNKNOWN (999).
        for s in [Status::BAD_REQUEST, Status::UNKNOWN_OP, Status::HOST_ERROR] {
            assert!(s.code() >= PROTOCOL_BASE);
            assert!(s.code() > CUresult::CUDA_ERROR_UNKNOWN.0);
            assert!(s.code() > nvmlReturn_t::NVML_ERROR_UNKNOWN.0);
        }
    }

    #[test]
    fn only_cuda_context_killers_are_sticky() {
        // The list of cuda.h's "context is unusable" errors, by number, so
        // the test does not repeat the constants it checks.
        for code in [700, 702, 710, 714, 715, 716, 717, 718, 719, 999] {
            assert!(Status::Cuda(CUresult(code)).is_sticky(), "{code}");
        }
        for code in [1, 2, 200, 400, 600, 701, 720] {
            assert!(!Status::Cuda(CUresult(code)).is_sticky(), "{code}");
        }
        // NVML_ERROR_UNKNOWN shares 999 with CUDA_ERROR_UNKNOWN.
        assert!(!Status::Nvml(nvmlReturn_t::NVML_ERROR_UNKNOWN).is_sticky());
        assert!(!Status::HOST_ERROR.is_sticky());
        assert!(Status::Cuda(CUresult::CUDA_ERROR_NOT_READY).is_not_ready());
    }
}
