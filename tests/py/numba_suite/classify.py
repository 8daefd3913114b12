"""Groups the failures of a numba-suite run by cause.

    classify.py DIR           # the cause table of DIR (a run.py run's --out)
    classify.py --rust DIR    # its failures as tests/numba_suite.rs's EXPECTED_FAILURES

CAUSES names each cause with a short key, says what breaks, which vgpu crate
fixes it and which issue asks for that. RULES recognise a cause from a test's
columns in outcomes.tsv (node id, outcome, the exception's first line, where
it was raised, what the daemon logged meanwhile, driver calls named in the
failure's text); the first matching rule wins, so specific rules come first.

run.py writes each failure's key into outcomes.tsv and this table into
summary.txt; tests/numba_suite.rs lists its expected failures by these keys
and checks that each still fails for the cause it is listed under. A failure
no rule matches is "unclassified": the cue to add a rule.
"""

import collections
import re
import sys
import textwrap
from pathlib import Path

# key: (what breaks, where it gets fixed, issue)
CAUSES = {
    "timeout": ("the interpreter is too slow for the test's kernels within the per-test limit",
                "vgpu-ptx (speed)", 15),
    "crashed": ("the guest process died", "?", 15),
    "pool-alloc": ("stream-ordered allocation: cuMemAllocFromPoolAsync returns NOT_SUPPORTED "
                   "while the device reports pool support; numba 0.30 (cuda.core) allocates "
                   "every implicit host-array transfer from the pool",
                   "vgpu-cuda (exported as a NOT_SUPPORTED stub, not forwarded) + vgpu-host", 15),
    "mapped-host": ("mapped pinned host memory: cuMemHostGetDevicePointer NOT_SUPPORTED, "
                    "CAN_MAP_HOST_MEMORY 0 (\"cannot map host memory\")",
                    "vgpu-cuda (host_memory)", 15),
    "managed": ("managed memory: cuMemAllocManaged NOT_SUPPORTED", "vgpu-cuda + vgpu-emu", 15),
    "ipc": ("IPC: cuIpcGetMemHandle / cuIpcOpenMemHandle", "vgpu-cuda + vgpu-host", 15),
    "profiler": ("profiler API: cuProfilerStart/Stop not exported", "vgpu-cuda (exports)", 15),
    "graphs": ("graphs / stream capture: cuStreamBeginCapture NOT_SUPPORTED",
               "vgpu-cuda + vgpu-host", 10),
    "assertfail": ("device runtime function missing at link: __assertfail (numba's NRT, "
                   "array reductions, assert)", "vgpu-ptx / vgpu-emu (device runtime)", 15),
    "vprintf": ("device runtime function missing at link: vprintf (device print)",
                "vgpu-ptx / vgpu-emu (device runtime)", 15),
    "cg-sync": ("device runtime function missing at link: cudaCGGetIntrinsicHandle / "
                "cudaCGSynchronize (cooperative-group grid sync)",
                "vgpu-ptx / vgpu-emu (device runtime)", 15),
    "device-malloc": ("device runtime function missing at link: malloc / free",
                      "vgpu-ptx / vgpu-emu (device runtime)", 11),
    "devrt-other": ("device runtime function missing at link: other",
                    "vgpu-ptx / vgpu-emu (device runtime)", 15),
    "callprototype": ("PTX the parser rejects: .callprototype (indirect calls)",
                      "vgpu-ptx (parser)", 15),
    "ptx-unsupported-op": ("PTX instruction the interpreter cannot execute (bf16 / f16 "
                           "arithmetic, ...): the launch fails, the error surfaces at the "
                           "next copy", "vgpu-ptx (interpreter)", 15),
    "ptx-parse-other": ("PTX the parser rejects: other (a .func call with another argument "
                        "count, ...)", "vgpu-ptx (parser)", 15),
    "illegal-address": ("CUDA_ERROR_ILLEGAL_ADDRESS in a kernel: the software GPU checks exact "
                        "bounds where a real GPU's allocation granularity (2 MiB / 512 B) "
                        "tolerates the access", "vgpu-emu (allocation granularity)", 15),
    "sticky": ("CUDA_ERROR_ILLEGAL_ADDRESS left by an earlier test of the same process "
               "(sticky): follows from illegal-address", "vgpu-emu (allocation granularity)", 15),
    "launch-error": ("a refused launch reported later (at the next copy or sync)",
                     "vgpu-emu / vgpu-cuda", 15),
    "num-regs": ("register count: CU_FUNC_ATTRIBUTE_NUM_REGS is a fixed 32 and max-register "
                 "JIT options are not honoured", "vgpu-emu (function attributes, cuLink*)", 15),
    "not-supported-other": ("another driver call returns NOT_SUPPORTED", "vgpu-cuda", 15),
    "invalid-ptx": ("CUDA_ERROR_INVALID_PTX with no reason in the daemon's log", "vgpu-ptx", 15),
    "wrong-result": ("wrong result: an assertion on values, no CUDA error",
                     "vgpu-ptx (semantics)", 15),
    "nvjitlink-warning": ("the venv has no nvJitLink on purpose (numba must link PTX through "
                          "cuLink*), so numba's first link warns \"cuda.bindings.nvjitlink is "
                          "not available\" and a test that expects no warning fails",
                          "environment (vgpu-emu if it ever links LTO-IR)", 15),
    "unclassified": ("no rule matches", "?", 15),
}

# (key, {column: regex}); every regex given must match (re.search).
RULES = [
    ("timeout", {"outcome": r"^timeout$"}),
    ("crashed", {"outcome": r"^crashed$"}),
    ("pool-alloc", {"where": r"_memory_pool|_device_memory_resource"}),
    # A test whose body runs in a child process says "1 != 0"; the child's
    # traceback further down names the pool allocator.
    ("pool-alloc", {"markers": r"_memory_pool"}),
    # The launch configuration is invalid on purpose, but the transfer of the
    # host-array argument fails first.
    ("pool-alloc", {"message": r'"CUDA_ERROR_INVALID_VALUE" does not match "CUDA_ERROR_NOT_SUPP'}),
    ("mapped-host", {"message": r"cuMemHostGetDevicePointer|cannot map host memory"}),
    ("managed", {"message": r"cuMemAllocManaged"}),
    ("ipc", {"message": r"cuIpc"}),
    ("ipc", {"markers": r"cuIpc"}),
    ("profiler", {"message": r"cuProfiler"}),
    ("graphs", {"where": r"[Cc]apture|_graph"}),
    ("assertfail", {"host": r"__assertfail"}),
    ("vprintf", {"host": r"`vprintf`"}),
    ("cg-sync", {"host": r"cudaCG"}),
    ("device-malloc", {"host": r"`(malloc|free)`"}),
    ("devrt-other", {"host": r"declared but never defined"}),
    ("callprototype", {"host": r"callprototype"}),
    ("ptx-unsupported-op", {"host": r"is not supported; launching it will fail"}),
    ("ptx-parse-other", {"host": r"invalid PTX"}),
    ("illegal-address", {"host": r"illegal address"}),
    ("sticky", {"message": r"ILLEGAL_ADDRESS"}),
    ("launch-error", {"message": r"LAUNCH_FAILED|INVALID_HANDLE"}),
    ("num-regs", {"nodeid": r"test_linker.py::.*registers"}),
    ("nvjitlink-warning", {"nodeid": r"test_warning.py::TestWarnings::"
                                     r"test_efficient_launch_configuration$"}),
    ("not-supported-other", {"message": r"NOT_SUPPORTED"}),
    ("invalid-ptx", {"message": r"INVALID_PTX"}),
    ("wrong-result", {"message": r"AssertionError|Mismatch|not equal|!="}),
]

assert all(key in CAUSES for key, _ in RULES), "a rule names an unknown cause"

COLUMNS = ("nodeid", "outcome", "seconds", "message", "where", "host", "markers", "cause")
BAD = ("failed", "error", "timeout", "crashed", "xpassed")


def load(out):
    rows = []
    with open(Path(out) / "outcomes.tsv", encoding="utf-8") as f:
        for line in f:
            cells = line.rstrip("\n").split("\t")
            cells += [""] * (len(COLUMNS) - len(cells))
            rows.append(dict(zip(COLUMNS, cells)))
    return rows


def cause_of(row):
    """The cause key of a failed test's row ({column: text})."""
    for key, pats in RULES:
        if all(re.search(p, row.get(col, "")) for col, p in pats.items()):
            return key
    return "unclassified"


def table(rows):
    """The cause table as text lines, most frequent cause first."""
    groups = collections.defaultdict(list)
    for row in rows:
        if row["outcome"] in BAD:
            groups[cause_of(row)].append(row)
    lines = [f"failures by cause ({sum(len(v) for v in groups.values())} not passed):"]
    for key, members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        what, crate, issue = CAUSES[key]
        files = len({m["nodeid"].split("::")[0] for m in members})
        lines.append(f"{len(members):5}  {key}: {what}")
        lines.append(f"       crate: {crate}; issue {issue}; {files} files; "
                     f"e.g. {members[0]['nodeid']}")
        if key == "unclassified":
            for m in members:
                lines.append(f"         {m['nodeid']}: {m['message']}")
    return lines


def rust_expected(rows):
    """tests/numba_suite.rs's EXPECTED_FAILURES for the failures of ``rows``."""
    groups = collections.defaultdict(list)
    for row in rows:
        if row["outcome"] in BAD:
            groups[cause_of(row)].append(row["nodeid"])
    lines = ["const EXPECTED_FAILURES: &[(&str, &[&str])] = &["]
    for key, ids in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        what, crate, issue = CAUSES[key]
        lines += textwrap.wrap(f"{what}. Fix: {crate}; issue {issue}.", 96,
                               initial_indent="    // ", subsequent_indent="    // ",
                               break_on_hyphens=False)
        lines.append(f"    (\n        \"{key}\",\n        &[")
        lines += [f"            \"{i}\"," for i in sorted(ids)]
        lines.append("        ],\n    ),")
    lines.append("];")
    return lines


def main():
    args = sys.argv[1:]
    rust = args[:1] == ["--rust"]
    if rust:
        args = args[1:]
    if len(args) != 1:
        sys.exit(__doc__)
    rows = load(args[0])
    print("\n".join(rust_expected(rows) if rust else table(rows)))


if __name__ == "__main__":
    main()
