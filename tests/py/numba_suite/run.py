"""Runs numba-cuda's own test suite (shipped in its wheel) through vgpu.

    run.py [--out DIR] [--timeout S] [--host ENDPOINT] [--resume] [SELECTION...]

SELECTION names parts of the suite relative to ``numba/cuda/tests`` in the
installed wheel: a directory (``cudadrv``), a file (``cudapy/test_array.py``)
or a pytest node id (``cudapy/test_array.py::TestCudaArray::test_gpu_array_strided``);
none means every ``test_*.py`` of the suite. ``scripts/numba-suite.sh`` is the
front door (it picks the venv's Python).

Each test file runs in its own pytest process, as its own guest of one
software-GPU daemon (``vgpu host --driver emulated``, started here unless
``--host`` names one): a sticky CUDA error poisons only the rest of its file,
and a dead process loses nothing. pytest runs with ``--import-mode=importlib``
(the tests live in site-packages), ``vgpu_numba_plugin`` (numba-cuda's
conftest fixture and the results journal) and pytest-timeout's thread method
with ``--timeout`` per test, which ends the process: the runner then records
that test as ``timeout`` and continues the file in a new process
(``--vgpu-resume``). A process that dies any other way is handled alike
(``crashed``); a watchdog kills one whose journal has not moved for
``--timeout`` + 120 s (pytest-timeout could not fire).

Writes into DIR (default ``target/numba-suite``):
  journal.jsonl  every start/end record (the plugin's and the runner's)
  outcomes.tsv   node id, outcome, seconds, first line of the exception (or the skip
                 reason), innermost traceback locations, what the daemon logged
                 meanwhile (the software GPU's reason for a refused link or
                 launch), driver calls named anywhere in the failure's text,
                 the cause (a key of classify.py's CAUSES) of a test that did
                 not pass; tab-separated
  summary.txt    totals, per-file counts, failures by cause (classify.py), every
                 failure with its first line
  logs/          pytest's output per file; host.log the daemon's
Exit status: 0 when nothing failed, 1 when tests failed, 2 when the runner could not run.
"""

import argparse
import collections
import datetime
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import classify  # this directory is sys.path[0]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]

# Outcomes that count as "did not pass" (the summary lists them one by one).
BAD = ("failed", "error", "timeout", "crashed", "xpassed")
ORDER = ("passed", "failed", "error", "skipped", "xfailed", "xpassed", "timeout", "crashed")

# pytest-timeout's thread method prints this separator before os._exit(1).
TIMEOUT_MARK = re.compile(r"^\++ Timeout \++$", re.M)


def die(msg):
    """The runner cannot run (exit status 2, unlike failed tests' 1)."""
    print(msg, file=sys.stderr, flush=True)
    sys.exit(2)


def tests_dir():
    spec = importlib.util.find_spec("numba_cuda")
    if spec is None or not spec.submodule_search_locations:
        die("numba-suite: numba_cuda is not installed in this Python; "
                 "run scripts/test-deps.sh numba numba_suite")
    # Not resolved: pytest names a test module by finding the import name
    # whose spec.origin equals the file's path, which is spelled the way
    # sys.path spells site-packages (a symlinked venv must stay symlinked).
    d = Path(list(spec.submodule_search_locations)[0]) / "numba" / "cuda" / "tests"
    if not d.is_dir():
        die(f"numba-suite: no test suite at {d}")
    return d


def expand(selection, tdir):
    """{file relative to tdir: [node ids] or None for the whole file}, in order."""
    files = collections.OrderedDict()
    for sel in selection or ["."]:
        path, sep, _ = sel.partition("::")
        p = Path(os.path.normpath(tdir / path))
        if not p.exists():
            die(f"numba-suite: {sel}: no such file or directory under {tdir}")
        if p.is_dir():
            for f in sorted(p.rglob("test_*.py")):
                files.setdefault(f.relative_to(tdir).as_posix(), None)
        else:
            rel = p.relative_to(tdir).as_posix()
            if sep:
                ids = files.setdefault(rel, [])
                if ids is not None:
                    ids.append(rel + sel[len(path):])
            else:
                files[rel] = None
    return files


def read_journal(path):
    recs = []
    if path.exists():
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    recs.append(json.loads(line))
                except ValueError:
                    pass  # cut short by a dying process
    return recs


def append(path, **rec):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")


def last_line(text, pattern):
    found = [l.strip() for l in text.splitlines() if re.search(pattern, l)]
    return found[-1][:500] if found else ""


def _die_with_runner(sig):
    """preexec_fn: the child gets ``sig`` when the runner dies, however it
    dies (a test harness's SIGKILL skips every finally block)."""
    def set_pdeathsig():
        import ctypes
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig))
    return set_pdeathsig


class Daemon:
    """``vgpu host --driver emulated`` on a unix socket in the output dir."""

    def __init__(self, vgpu, out):
        self.vgpu, self.out = vgpu, out
        # A short private directory: a unix socket path has at most 107 bytes,
        # and DIR may be deep.
        self.sock_dir = Path(tempfile.mkdtemp(prefix="vgpu-numba-suite-"))
        self.sock = self.sock_dir / "vgpu.sock"
        self.log = out / "host.log"
        self.proc = None
        self.starts = 0

    def start(self):
        if self.sock.exists():
            self.sock.unlink()
        env = dict(os.environ)
        env.setdefault("VGPU_LOG", "info")
        logf = open(self.log, "a")
        self.proc = subprocess.Popen(
            [str(self.vgpu), "host", "--listen", f"unix:{self.sock}", "--driver", "emulated"],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=env,
            start_new_session=True, preexec_fn=_die_with_runner(signal.SIGTERM))
        self.starts += 1
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if "listening on" in self.log.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        die(f"numba-suite: vgpu host did not start; see {self.log}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.sock_dir, ignore_errors=True)

    @property
    def endpoint(self):
        return f"unix:{self.sock}"


def guest_env(out):
    env = dict(os.environ)
    # numba must emit PTX and link it through the driver's cuLink*: a
    # toolkit found through CUDA_HOME could bring nvJitLink (see
    # scripts/test-deps.sh, group numba). The simulator must stay off.
    for k in ("CUDA_HOME", "CUDA_PATH", "NUMBA_ENABLE_CUDASIM", "NUMBA_CUDA_DRIVER",
              "CUDA_VISIBLE_DEVICES", "LD_PRELOAD"):
        env.pop(k, None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    # The caching tests check where numba writes its cache (next to their
    # temporary copies of the test modules): no NUMBA_CACHE_DIR redirect.
    env.pop("NUMBA_CACHE_DIR", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("VGPU_LOG", "warn")
    return env


def run_file(rel, ids, args, tdir, vgpu, host, host_log, out, env):
    """Runs one file to the end, restarting after each timeout or crash."""
    journal = out / "journal.jsonl"
    log = out / "logs" / (rel.replace("/", "__") + ".log")
    targets = ids if ids is not None else [rel]
    for attempt in range(10_000):
        before = len(read_journal(journal))
        cmd = [str(vgpu), "run", "--host", host, "--",
               sys.executable, "-m", "pytest",
               "-c", str(HERE / "pytest.ini"), "--rootdir", str(tdir),
               "-p", "vgpu_numba_plugin", "-p", "no:cacheprovider",
               "--import-mode=importlib", "-q", "-rN", "--no-header",
               f"--timeout={args.timeout}", "--timeout-method=thread",
               f"--vgpu-journal={journal}"]
        if host_log is not None:
            cmd.append(f"--vgpu-host-log={host_log}")
        if attempt or args.resume:
            cmd.append("--vgpu-resume")
        cmd += [str(tdir / t) for t in targets]
        with open(log, "a") as lf:
            lf.write(f"\n=== attempt {attempt + 1}: {' '.join(cmd)}\n")
            lf.flush()
            proc = subprocess.Popen(cmd, cwd=out, env=env, stdin=subprocess.DEVNULL,
                                    stdout=lf, stderr=subprocess.STDOUT,
                                    start_new_session=True,
                                    preexec_fn=_die_with_runner(signal.SIGKILL))
            watchdog = False
            last_size, last_move = journal.stat().st_size if journal.exists() else 0, time.monotonic()
            try:
                while proc.poll() is None:
                    time.sleep(1)
                    size = journal.stat().st_size if journal.exists() else 0
                    if size != last_size:
                        last_size, last_move = size, time.monotonic()
                    elif time.monotonic() - last_move > args.timeout + 120:
                        watchdog = True
                        lf.write(f"\n=== numba-suite: no progress for {args.timeout + 120} s, killed\n")
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
            finally:
                # Whatever the process left behind (its guest, children)
                # goes too, also when the runner itself is interrupted.
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        rc = proc.returncode
        recs = read_journal(journal)[before:]
        ended = {r["nodeid"] for r in recs if r.get("event") == "end"}
        unfinished = [r["nodeid"] for r in recs
                      if r.get("event") == "start" and r["nodeid"] not in ended]
        text = log.read_text(errors="replace")
        text = text[text.rfind("=== attempt"):]
        if not unfinished:
            if rc not in (0, 1, 5) and not any(r.get("event") == "end" for r in recs):
                # Died before running anything (collection, import, startup).
                msg = (last_line(text, r"Error|error|Fatal|Abort") or
                       f"pytest exited with {rc} before running a test")
                append(journal, event="collect_error", nodeid=rel,
                       message=f"exit {rc}: {msg}")
            return
        nodeid = unfinished[-1]
        if watchdog:
            outcome, msg = "timeout", f"no progress for {args.timeout + 120} s (killed by the runner)"
        elif TIMEOUT_MARK.search(text):
            outcome, msg = "timeout", f"Timeout (>{args.timeout}s) from pytest-timeout"
        else:
            sig = f"signal {-rc}" if rc < 0 else f"exit {rc}"
            outcome = "crashed"
            msg = f"{sig}: " + (last_line(text, r"Fatal Python error|Segmentation|Abort|panick")
                                or "process died")
        append(journal, event="end", nodeid=nodeid, outcome=outcome,
               duration=None, message=msg, by="runner")
        print(f"numba-suite:   {nodeid}: {outcome}, continuing the file", flush=True)
    return


def outcomes(journal):
    """{node id: (outcome, seconds, message, where, host, markers)}; a node's last
    record wins."""
    res = {}
    for r in read_journal(journal):
        if r.get("event") == "end":
            res[r["nodeid"]] = (r["outcome"], r.get("duration"), r.get("message", ""),
                                r.get("where", ""), " | ".join(r.get("host") or []),
                                " ".join(r.get("markers") or []))
        elif r.get("event") == "collect_error":
            res[r["nodeid"]] = ("error", None, "collection: " + r.get("message", ""), "", "", "")
    return res


def file_of(nodeid):
    return nodeid.split("::", 1)[0]


def write_reports(out, res, header, wall):
    with open(out / "outcomes.tsv", "w", encoding="utf-8") as f:
        for nid in sorted(res):
            o, d, m, w, h, k = res[nid]
            cells = [nid, o, "" if d is None else str(d), m, w, h, k]
            if o in BAD:
                cells.append(classify.cause_of(dict(zip(classify.COLUMNS, cells))))
            f.write("\t".join(c.replace("\t", " ") for c in cells) + "\n")
    totals = collections.Counter(r[0] for r in res.values())
    per_file = collections.defaultdict(collections.Counter)
    secs = collections.Counter()
    for nid, (o, d, *_) in res.items():
        per_file[file_of(nid)][o] += 1
        secs[file_of(nid)] += d or 0
    cols = [o for o in ORDER if totals[o]] or ["passed"]
    lines = list(header)
    lines.append(f"wall: {wall:.0f} s")
    lines.append("totals: " + ", ".join(f"{totals[o]} {o}" for o in cols)
                 + f" ({sum(totals.values())} tests)")
    lines.append("")
    w = max([len(k) for k in per_file] + [4])
    lines.append(f"{'file':<{w}}  " + "  ".join(f"{c:>7}" for c in cols) + "  seconds")
    for fname in sorted(per_file):
        c = per_file[fname]
        lines.append(f"{fname:<{w}}  " + "  ".join(f"{c[o]:>7}" for o in cols)
                     + f"  {secs[fname]:7.1f}")
    lines.append("")
    lines.extend(classify.table(classify.load(out)))
    lines.append("")
    lines.append("not passed (outcome, node id, first line of the exception):")
    for nid in sorted(res):
        o, _, m, w, h, _ = res[nid]
        if o in BAD:
            lines.append(f"  {o:<8} {nid}\n           {m}")
            if w:
                lines.append(f"           at {w}")
            if h:
                lines.append(f"           host: {h}")
    (out / "summary.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return totals


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("selection", nargs="*", help="dirs, files or node ids under numba/cuda/tests")
    ap.add_argument("--out", type=Path, default=REPO / "target" / "numba-suite")
    ap.add_argument("--timeout", type=int, default=120, help="seconds per test (default 120)")
    ap.add_argument("--host", help="use this daemon endpoint instead of starting one")
    ap.add_argument("--vgpu", type=Path, help="the vgpu binary (default: target/debug/vgpu, "
                    "or $CARGO_TARGET_DIR/debug/vgpu)")
    ap.add_argument("--resume", action="store_true",
                    help="keep DIR's journal and run only the tests it has no outcome for")
    ap.add_argument("--report-only", action="store_true",
                    help="only rewrite DIR's summary.txt and outcomes.tsv from its journal")
    args = ap.parse_args()
    if args.report_only:
        out = args.out.resolve()
        totals = write_reports(out, outcomes(out / "journal.jsonl"),
                               [f"report of {out / 'journal.jsonl'}"], 0)
        return 1 if sum(totals[o] for o in BAD) else 0

    # SIGTERM (timeout(1), CI) unwinds like ^C: the daemon and the running
    # pytest are killed in the finally blocks instead of being orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tdir = tests_dir()
    files = expand(args.selection, tdir)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    vgpu = (args.vgpu or target / "debug" / "vgpu").resolve()
    if not vgpu.is_file():
        die(f"numba-suite: no vgpu binary at {vgpu}: cargo build --workspace first")
    out = args.out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    journal = out / "journal.jsonl"
    if not args.resume:
        for p in [journal, *(out / "logs").glob("*.log"), out / "host.log"]:
            if p.exists():
                p.unlink()

    daemon = None
    host = args.host
    if host is None:
        daemon = Daemon(vgpu, out)
        daemon.start()
        host = daemon.endpoint
    env = guest_env(out)
    header = [
        f"numba-cuda {importlib.metadata.version('numba-cuda')} test suite on vgpu's "
        f"software GPU ({datetime.datetime.now().isoformat(timespec='seconds')})",
        f"suite: {tdir}",
        f"selection: {' '.join(args.selection) or '(whole suite)'}; {len(files)} files; "
        f"timeout {args.timeout} s per test",
        f"vgpu: {vgpu}; daemon {host}",
    ]
    t0 = time.monotonic()
    try:
        for i, (rel, ids) in enumerate(files.items(), 1):
            if daemon and not daemon.alive():
                msg = f"vgpu host died (exit {daemon.proc.returncode}) before {rel}; restarted"
                header.append("DAEMON: " + msg)
                print("numba-suite: " + msg, flush=True)
                daemon.start()
            t = time.monotonic()
            run_file(rel, ids, args, tdir, vgpu, host, daemon and daemon.log, out, env)
            res = outcomes(journal)
            c = collections.Counter(r[0] for n, r in res.items() if file_of(n) == rel)
            print(f"numba-suite: [{i}/{len(files)}] {rel}: "
                  + ", ".join(f"{c[o]} {o}" for o in ORDER if c[o])
                  + f" ({time.monotonic() - t:.0f} s)", flush=True)
            write_reports(out, res, header, time.monotonic() - t0)
    finally:
        if daemon:
            if not daemon.alive():
                header.append(f"DAEMON: vgpu host died (exit {daemon.proc.returncode})")
            daemon.stop()
    libs = sorted({p for r in read_journal(journal) if r.get("event") == "libs"
                   for p in r["paths"]})
    header.append("driver libraries mapped by the guests: " + (", ".join(libs) or "none seen"))
    totals = write_reports(out, outcomes(journal), header, time.monotonic() - t0)
    bad = sum(totals[o] for o in BAD)
    print(f"numba-suite: {totals['passed']} passed, {bad} failed, {totals['skipped']} skipped"
          f" ({', '.join(f'{totals[o]} {o}' for o in ORDER if totals[o])}); "
          f"summary: {out / 'summary.txt'}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
