"""Groups the failures of a numba-suite run by cause.

    classify.py DIR        # DIR of a run.py run (reads DIR/outcomes.tsv)

Each rule names a cause, the vgpu crate where it is fixed and the issue that
asks for the fix, and matches the test's node id, the exception's first line,
where it was raised and what the daemon logged meanwhile (the columns of
outcomes.tsv). The first matching rule wins, so specific rules come first.
run.py appends this table to summary.txt; a failure no rule matches is listed
as "unclassified" with its message, which is the cue to add a rule.
"""

import collections
import re
import sys
from pathlib import Path

# (cause, crate, issue, {column: regex}); every regex given must match.
RULES = [
    ("timeout: the interpreter is too slow for the test's kernel within the per-test limit",
     "vgpu-ptx (speed)", 15, {"outcome": r"^timeout$"}),
    ("guest process died", "?", 15, {"outcome": r"^crashed$"}),
    ("stream-ordered allocation: cuMemAllocFromPoolAsync returns NOT_SUPPORTED "
     "(cuda.core's pool allocator backs every implicit host-array transfer)",
     "vgpu-cuda (not forwarded) + vgpu-host", 15,
     {"where": r"_memory_pool|MemoryResource|_device_memory_resource"}),
    # The same in a test that runs its body in a child process ("1 != 0"
    # first, the child's traceback further down).
    ("stream-ordered allocation: cuMemAllocFromPoolAsync returns NOT_SUPPORTED "
     "(cuda.core's pool allocator backs every implicit host-array transfer)",
     "vgpu-cuda (not forwarded) + vgpu-host", 15, {"markers": r"_memory_pool"}),
    ("mapped pinned host memory: cuMemHostGetDevicePointer / CAN_MAP_HOST_MEMORY 0",
     "vgpu-cuda (host_memory)", 15,
     {"message": r"cuMemHostGetDevicePointer|cannot map host memory"}),
    ("managed memory: cuMemAllocManaged", "vgpu-cuda + vgpu-emu", 15,
     {"message": r"cuMemAllocManaged"}),
    ("IPC: cuIpcGetMemHandle / cuIpcOpenMemHandle", "vgpu-cuda + vgpu-host", 15,
     {"message": r"cuIpc|IpcHandle|ipc"}),
    ("profiler API: cuProfilerStart/Stop not exported", "vgpu-cuda (exports)", 15,
     {"message": r"cuProfiler"}),
    ("graphs / stream capture (cuStreamBeginCapture)", "vgpu-cuda + vgpu-host", 10,
     {"where": r"[Cc]apture|[Gg]raph"}),
    # The launch configuration is invalid on purpose, but the host array
    # argument's transfer fails first (the pool allocator).
    ("stream-ordered allocation: cuMemAllocFromPoolAsync returns NOT_SUPPORTED "
     "(cuda.core's pool allocator backs every implicit host-array transfer)",
     "vgpu-cuda (not forwarded) + vgpu-host", 15,
     {"message": r'"CUDA_ERROR_INVALID_VALUE" does not match "CUDA_ERROR_NOT_SUPPORTED'}),
    ("device runtime function missing at link: __assertfail (numba's NRT, assert)",
     "vgpu-ptx / vgpu-emu (device runtime)", 15, {"host": r"__assertfail"}),
    ("device runtime function missing at link: vprintf (device print)",
     "vgpu-ptx / vgpu-emu (device runtime)", 15, {"host": r"vprintf"}),
    ("device runtime function missing at link: cooperative-group grid sync",
     "vgpu-ptx / vgpu-emu (device runtime)", 15, {"host": r"cudaCG"}),
    ("device runtime function missing at link: malloc/free",
     "vgpu-ptx / vgpu-emu (device runtime)", 11, {"host": r"`(malloc|free)`"}),
    ("device runtime function missing at link: other",
     "vgpu-ptx / vgpu-emu (device runtime)", 15, {"host": r"declared but never defined"}),
    ("PTX the parser rejects: .callprototype (indirect calls)", "vgpu-ptx (parser)", 15,
     {"host": r"callprototype"}),
    ("PTX instruction the interpreter cannot execute (bf16/f16 arithmetic, ...)",
     "vgpu-ptx (interpreter)", 15, {"host": r"is not supported; launching it will fail"}),
    ("PTX the parser rejects: other (a .func call with another argument count, ...)",
     "vgpu-ptx (parser)", 15, {"host": r"invalid PTX"}),
    ("illegal address in a kernel: exact bounds where a real GPU's allocation granularity "
     "tolerates the access", "vgpu-emu (allocation granularity)", 15,
     {"host": r"illegal address"}),
    ("sticky CUDA_ERROR_ILLEGAL_ADDRESS left by an earlier test of the same process",
     "vgpu-emu (allocation granularity)", 15, {"message": r"ILLEGAL_ADDRESS"}),
    ("kernel launch refused: error reported later (at the next copy/sync)",
     "vgpu-emu / vgpu-cuda", 15,
     {"message": r"LAUNCH_FAILED|INVALID_HANDLE|NOT_FOUND"}),
    ("register count: CU_FUNC_ATTRIBUTE_NUM_REGS is a fixed 32, max-register JIT "
     "options are not honoured", "vgpu-emu (function attributes, cuLink* options)", 15,
     {"nodeid": r"test_linker.py::.*registers"}),
    ("other NOT_SUPPORTED from a driver call", "vgpu-cuda", 15,
     {"message": r"NOT_SUPPORTED"}),
    ("invalid PTX (no reason logged)", "vgpu-ptx", 15, {"message": r"INVALID_PTX"}),
    ("wrong result (assertion on values, no CUDA error)", "vgpu-ptx (semantics)", 15,
     {"message": r"AssertionError|Mismatch|not equal|!="}),
]

COLUMNS = ("nodeid", "outcome", "seconds", "message", "where", "host", "markers")
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
    for cause, crate, issue, pats in RULES:
        if all(re.search(p, row[col]) for col, p in pats.items()):
            return cause, crate, issue
    return "unclassified", "?", 15


def table(rows):
    """The cause table as text lines, most frequent cause first."""
    groups = collections.OrderedDict()
    for row in rows:
        if row["outcome"] in BAD:
            groups.setdefault(cause_of(row), []).append(row)
    lines = [f"failures by cause ({sum(len(v) for v in groups.values())} not passed):"]
    for (cause, crate, issue), members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        files = len({m["nodeid"].split("::")[0] for m in members})
        lines.append(f"{len(members):5}  {cause}")
        lines.append(f"       crate: {crate}; issue {issue}; {files} files; "
                     f"e.g. {members[0]['nodeid']}")
        if cause == "unclassified":
            for m in members:
                lines.append(f"         {m['nodeid']}: {m['message']}")
    return lines


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print("\n".join(table(load(sys.argv[1]))))


if __name__ == "__main__":
    main()
