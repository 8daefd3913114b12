//! `cuGetProcAddress` and `cuGetProcAddress_v2`: how libcudart (and
//! `cudaGetDriverEntryPoint` users) reach every other driver function.
//!
//! A request names a *base* function (`cuMemAlloc`), the CUDA version the
//! caller was compiled against and whether it wants the per-thread
//! default-stream flavour. The answer is the newest ABI of that name not
//! newer than the caller's version, taken from the table generated from the
//! `PFN_*` typedefs ([`cuda_types::pfn::PROC_TABLE`]); its symbol is one of
//! this library's exports.
//!
//! Versions above the driver's are not refused although the header says
//! so: cudart asks for functions newer than the driver it accepted and
//! expects plain "not found" for those it lacks (docs/call-path.md, "Driver version gate").

use cuda_types::cuda::{CUdriverProcAddressQueryResult, CUresult};
use cuda_types::pfn::PROC_TABLE;
use std::collections::HashMap;
use std::ffi::{c_int, c_void, CStr};
use std::sync::OnceLock;
use vgpu_ffi::Out;
use vgpu_guest::log::Level;
use vgpu_guest::vlog;

/// `CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM`. `DEFAULT` (0) is turned
/// into this by cuda.h's inline wrapper on the caller's side, so inside the
/// driver 0 means legacy, like `LEGACY_STREAM` (1).
const PER_THREAD: u64 = 2;

/// Why a lookup found nothing, as `CUdriverProcAddressQueryResult` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    SymbolNotFound,
    VersionNotSufficient,
}

impl Miss {
    fn status(self) -> CUdriverProcAddressQueryResult {
        match self {
            Miss::SymbolNotFound => {
                CUdriverProcAddressQueryResult::CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND
            }
            Miss::VersionNotSufficient => {
                CUdriverProcAddressQueryResult::CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT
            }
        }
    }
}

/// One ABI with its address resolved. Addresses are kept as integers so the
/// index is `Sync`; they are addresses of this library's own functions.
#[derive(Clone, Copy)]
struct Abi {
    version: u32,
    per_thread: bool,
    addr: usize,
}

/// Base name → its ABIs in ascending version order.
type Index = HashMap<&'static [u8], Vec<Abi>>;

/// Built on the first request, not at load time: nothing may run in a
/// library constructor, and most processes that load libcuda never ask.
fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut map: Index = HashMap::with_capacity(512);
        for e in PROC_TABLE {
            // The generator checked every symbol against the exports, so a
            // miss here would be a build mismatch; skipping it turns that
            // into "not found" rather than a NULL handed out as a function.
            let Some(addr) = crate::exported_symbol(e.symbol.as_bytes()) else {
                vlog!(
                    Level::Error,
                    "cuGetProcAddress: {} is not exported",
                    e.symbol
                );
                continue;
            };
            map.entry(e.name.as_bytes()).or_default().push(Abi {
                version: e.version,
                per_thread: e.per_thread,
                addr: addr as usize,
            });
        }
        for abis in map.values_mut() {
            abis.sort_by_key(|a| (a.version, a.per_thread));
        }
        map
    })
}

/// The address `name` resolves to for a caller built against `version`
/// with `flags` (docs/call-path.md, "cuGetProcAddress").
pub fn lookup(name: &[u8], version: c_int, flags: u64) -> Result<*const c_void, Miss> {
    // A negative version qualifies for nothing, like 0.
    let version = u32::try_from(version).unwrap_or(0);
    let Some(abis) = index().get(name) else {
        return unmapped(name, version);
    };
    let newest = |per_thread: bool| {
        abis.iter()
            .rev()
            .find(|a| a.per_thread == per_thread && a.version <= version)
    };
    let found = if flags & PER_THREAD != 0 {
        // Functions that take no stream have no per-thread flavour; the
        // legacy one is the answer then.
        newest(true).or_else(|| newest(false))
    } else {
        newest(false)
    };
    found
        .map(|a| a.addr as *const c_void)
        .ok_or(Miss::VersionNotSufficient)
}

/// A name with a typedef but no export in `cuda.h` (`UNMAPPED`): the
/// profiler entry points, which this library exports by hand, resolve at
/// the typedef's version; the interop names stay "not found".
fn unmapped(name: &[u8], version: u32) -> Result<*const c_void, Miss> {
    let addr = crate::profiler::symbol(name).ok_or(Miss::SymbolNotFound)?;
    let since = cuda_types::pfn::UNMAPPED
        .iter()
        .filter(|&&(n, _)| n.as_bytes() == name)
        .map(|&(_, v)| v)
        .min()
        .ok_or(Miss::SymbolNotFound)?;
    if version < since {
        return Err(Miss::VersionNotSufficient);
    }
    Ok(addr)
}

fn log_miss(name: &[u8], version: c_int, flags: u64, miss: Miss) {
    vlog!(
        Level::Trace,
        "cuGetProcAddress({:?}, {version}, {flags}): {miss:?}",
        String::from_utf8_lossy(name)
    );
}

/// The 11.3 ABI. A miss is CUDA_ERROR_NOT_FOUND and `*pfn` is left as it
/// was, as a real driver's v1 entry point does.
pub fn get_proc_address(
    symbol: &CStr,
    pfn: Out<*mut c_void>,
    version: c_int,
    flags: u64,
) -> Result<(), CUresult> {
    let name = symbol.to_bytes();
    match lookup(name, version, flags) {
        Ok(addr) => {
            pfn.write(addr.cast_mut());
            Ok(())
        }
        Err(miss) => {
            log_miss(name, version, flags, miss);
            Err(CUresult::CUDA_ERROR_NOT_FOUND)
        }
    }
}

/// The 12.0 ABI. An unknown name is CUDA_SUCCESS with `*pfn = NULL` and
/// SYMBOL_NOT_FOUND (what a 590 driver answers; cudart treats it like
/// NOT_FOUND), a name known only at newer versions CUDA_ERROR_NOT_FOUND
/// with VERSION_NOT_SUFFICIENT. `status` may be NULL.
pub fn get_proc_address_v2(
    symbol: &CStr,
    pfn: Out<*mut c_void>,
    version: c_int,
    flags: u64,
    status: Option<Out<CUdriverProcAddressQueryResult>>,
) -> Result<(), CUresult> {
    let name = symbol.to_bytes();
    let (addr, st, result) = match lookup(name, version, flags) {
        Ok(addr) => (
            addr,
            CUdriverProcAddressQueryResult::CU_GET_PROC_ADDRESS_SUCCESS,
            Ok(()),
        ),
        Err(miss) => {
            log_miss(name, version, flags, miss);
            let result = match miss {
                Miss::SymbolNotFound => Ok(()),
                Miss::VersionNotSufficient => Err(CUresult::CUDA_ERROR_NOT_FOUND),
            };
            (std::ptr::null(), miss.status(), result)
        }
    };
    pfn.write(addr.cast_mut());
    if let Some(status) = status {
        status.write(st);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use cuda_types::pfn::UNMAPPED;
    use std::ffi::c_char;
    use std::path::Path;

    fn export(symbol: &str) -> *const c_void {
        crate::exported_symbol(symbol.as_bytes()).unwrap_or_else(|| panic!("{symbol} not exported"))
    }

    fn resolves(name: &str, version: c_int, flags: u64) -> *const c_void {
        lookup(name.as_bytes(), version, flags)
            .unwrap_or_else(|m| panic!("{name}@{version}/{flags}: {m:?}"))
    }

    /// cudart's `cudaProfilerStart`/`Stop` reach the hand-written exports
    /// (cudaProfiler.h is outside the generated lists).
    #[test]
    fn profiler_entry_points_resolve() {
        for name in ["cuProfilerStart", "cuProfilerStop", "cuProfilerInitialize"] {
            assert_eq!(
                resolves(name, 13000, 0),
                crate::profiler::symbol(name.as_bytes()).unwrap(),
                "{name}"
            );
            assert_eq!(
                lookup(name.as_bytes(), 3000, 0),
                Err(Miss::VersionNotSufficient)
            );
        }
        assert_eq!(lookup(b"cuGLInit", 13000, 0), Err(Miss::SymbolNotFound));
    }

    #[test]
    fn spot_checks() {
        for (name, version, flags, symbol) in [
            ("cuMemAlloc", 3020, 0, "cuMemAlloc_v2"),
            ("cuMemAlloc", 2000, 0, "cuMemAlloc"),
            ("cuMemAlloc", 13000, 2, "cuMemAlloc_v2"),
            ("cuMemcpyHtoD", 7000, 2, "cuMemcpyHtoD_v2_ptds"),
            ("cuMemcpyHtoD", 7000, 0, "cuMemcpyHtoD_v2"),
            ("cuMemcpyHtoD", 7000, 1, "cuMemcpyHtoD_v2"),
            ("cuMemcpyHtoD", 3020, 2, "cuMemcpyHtoD_v2"),
            ("cuLaunchKernel", 7000, 2, "cuLaunchKernel_ptsz"),
            ("cuLaunchKernel", 12000, 0, "cuLaunchKernel"),
            ("cuCtxSynchronize", 13000, 0, "cuCtxSynchronize_v2"),
            ("cuCtxSynchronize", 12090, 0, "cuCtxSynchronize"),
            ("cuCtxGetDevice", 13000, 0, "cuCtxGetDevice_v2"),
            ("cuGetProcAddress", 11030, 0, "cuGetProcAddress"),
            ("cuGetProcAddress", 12000, 0, "cuGetProcAddress_v2"),
            (
                "cuStreamGetCaptureInfo",
                12030,
                2,
                "cuStreamGetCaptureInfo_v3_ptsz",
            ),
            (
                "cuStreamGetCaptureInfo",
                11030,
                0,
                "cuStreamGetCaptureInfo_v2",
            ),
            (
                "cuStreamGetCaptureInfo",
                10010,
                2,
                "cuStreamGetCaptureInfo_ptsz",
            ),
            ("cuDeviceTotalMem", 3020, 0, "cuDeviceTotalMem_v2"),
            ("cuGetExportTable", 3000, 0, "cuGetExportTable"),
            // A version far above any known one still gets the newest ABI.
            ("cuMemAlloc", 99000, 0, "cuMemAlloc_v2"),
        ] {
            assert_eq!(
                resolves(name, version, flags),
                export(symbol),
                "{name}@{version}/{flags} should be {symbol}"
            );
        }
    }

    #[test]
    fn misses() {
        assert_eq!(lookup(b"", 12000, 0), Err(Miss::SymbolNotFound));
        assert_eq!(
            lookup(b"cuNoSuchThing", 12000, 0),
            Err(Miss::SymbolNotFound)
        );
        // Exported spellings are not request names.
        assert_eq!(
            lookup(b"cuMemAlloc_v2", 12000, 0),
            Err(Miss::SymbolNotFound)
        );
        assert_eq!(lookup(b"cuMemAlloc", 0, 0), Err(Miss::VersionNotSufficient));
        assert_eq!(
            lookup(b"cuMemAlloc", -1, 2),
            Err(Miss::VersionNotSufficient)
        );
        assert_eq!(
            lookup(b"cuMemAlloc", 1999, 0),
            Err(Miss::VersionNotSufficient)
        );
        assert_eq!(
            lookup(b"cuCtxGetId", 11080, 0),
            Err(Miss::VersionNotSufficient)
        );
        assert_eq!(lookup(b"cuGLInit", 12000, 0), Err(Miss::SymbolNotFound));
    }

    fn status(r: CUresult) -> Result<(), CUresult> {
        match r {
            CUresult::CUDA_SUCCESS => Ok(()),
            e => Err(e),
        }
    }

    /// Through the export, as an application calls it: before cuInit, with
    /// the boundary's conversions.
    fn get_proc_address(
        s: *const c_char,
        p: *mut *mut c_void,
        v: c_int,
        f: u64,
    ) -> Result<(), CUresult> {
        // SAFETY: the tests pass valid C strings and live locals, or NULL.
        status(unsafe { crate::cuGetProcAddress(s, p, v, f) })
    }

    fn get_proc_address_v2(
        s: *const c_char,
        p: *mut *mut c_void,
        v: c_int,
        f: u64,
        st: *mut CUdriverProcAddressQueryResult,
    ) -> Result<(), CUresult> {
        // SAFETY: as above.
        status(unsafe { crate::cuGetProcAddress_v2(s, p, v, f, st) })
    }

    #[test]
    fn v1_and_v2_contracts() {
        let sentinel = 0x1234usize as *mut c_void;
        let mut p = sentinel;
        let mut st = CUdriverProcAddressQueryResult(99);
        // v2, found.
        get_proc_address_v2(c"cuInit".as_ptr(), &mut p, 2000, 0, &mut st).unwrap();
        assert_eq!(p as *const c_void, export("cuInit"));
        assert_eq!(
            st,
            CUdriverProcAddressQueryResult::CU_GET_PROC_ADDRESS_SUCCESS
        );
        // v2, unknown: SUCCESS + NULL + status 1; NULL status allowed.
        p = sentinel;
        get_proc_address_v2(c"".as_ptr(), &mut p, 0, 0, &mut st).unwrap();
        assert!(p.is_null());
        assert_eq!(st, Miss::SymbolNotFound.status());
        get_proc_address_v2(c"nope".as_ptr(), &mut p, 12000, 0, std::ptr::null_mut()).unwrap();
        // v2, too new.
        p = sentinel;
        assert_eq!(
            get_proc_address_v2(c"cuCtxGetId".as_ptr(), &mut p, 11000, 0, &mut st),
            Err(CUresult::CUDA_ERROR_NOT_FOUND)
        );
        assert!(p.is_null());
        assert_eq!(st, Miss::VersionNotSufficient.status());
        // v1: found, then misses leave *pfn alone.
        get_proc_address(c"cuMemAlloc".as_ptr(), &mut p, 3020, 0).unwrap();
        assert_eq!(p as *const c_void, export("cuMemAlloc_v2"));
        p = sentinel;
        assert_eq!(
            get_proc_address(c"nope".as_ptr(), &mut p, 12000, 0),
            Err(CUresult::CUDA_ERROR_NOT_FOUND)
        );
        assert_eq!(
            get_proc_address(c"cuCtxGetId".as_ptr(), &mut p, 11000, 0),
            Err(CUresult::CUDA_ERROR_NOT_FOUND)
        );
        assert_eq!(p, sentinel);
        // NULL arguments.
        for r in [
            get_proc_address(std::ptr::null(), &mut p, 12000, 0),
            get_proc_address(c"cuInit".as_ptr(), std::ptr::null_mut(), 12000, 0),
            get_proc_address_v2(std::ptr::null(), &mut p, 12000, 0, &mut st),
            get_proc_address_v2(c"cuInit".as_ptr(), std::ptr::null_mut(), 12000, 0, &mut st),
        ] {
            assert_eq!(r, Err(CUresult::CUDA_ERROR_INVALID_VALUE));
        }
    }

    #[test]
    fn cu_get_proc_address_resolves_to_ours() {
        let v1 = crate::cuGetProcAddress as *const c_void;
        let v2 = crate::cuGetProcAddress_v2 as *const c_void;
        assert_eq!(resolves("cuGetProcAddress", 11030, 0), v1);
        assert_eq!(resolves("cuGetProcAddress", 12000, 0), v2);
        assert_eq!(resolves("cuGetProcAddress", 13050, 2), v2);
    }

    /// Every request the four captured runtimes made resolves, or is one
    /// that vgpu answers "not found" on purpose.
    #[test]
    fn every_captured_request() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let mut total = 0;
        let mut misses = Vec::new();
        for v in ["11.8", "12.9", "13.0", "13.5"] {
            let path = dir.join(format!("cudart-{v}-getprocaddress.txt"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let mut f = line.split(' ');
                let (name, version, flags) = match (f.next(), f.next(), f.next(), f.next()) {
                    (Some(n), Some(v), Some(fl), None) => (
                        if n == "\"\"" { "" } else { n },
                        v.parse::<c_int>().expect(line),
                        fl.parse::<u64>().expect(line),
                    ),
                    _ => panic!("{}: bad line {line:?}", path.display()),
                };
                total += 1;
                let in_table = PROC_TABLE.iter().any(|e| e.name == name);
                match lookup(name.as_bytes(), version, flags) {
                    Ok(p) => assert!(!p.is_null(), "{v}: {line}"),
                    // The deliberate misses: the probe, the interop names
                    // without an export (UNMAPPED), names no pinned header
                    // declares.
                    Err(Miss::SymbolNotFound) => {
                        assert!(!in_table, "{v}: {line}: in the table but not found");
                        assert!(
                            crate::profiler::symbol(name.as_bytes()).is_none(),
                            "{v}: {line}: exported by hand but not found"
                        );
                        let unmapped = UNMAPPED.iter().any(|&(n, _)| n == name);
                        misses.push(format!(
                            "{v}: {line}{}",
                            if unmapped { " (unmapped)" } else { "" }
                        ));
                    }
                    Err(Miss::VersionNotSufficient) => {
                        panic!("{v}: {line}: asked at a version the table lacks")
                    }
                }
            }
        }
        eprintln!("deliberately not found:\n{}", misses.join("\n"));
        assert_eq!(total, 384 + 419 + 440 + 481);
    }
}
