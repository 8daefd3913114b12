"""pytest plugin for running numba-cuda's own test suite (from its wheel) on vgpu.

Loaded with ``-p vgpu_numba_plugin`` (this directory on ``PYTHONPATH``) by
``run.py``; it does two things:

1. What numba-cuda's repository-root ``conftest.py`` gives its suite and the
   wheel does not ship: ``numba.cuda.testing.CUDATestCase`` is marked
   ``usefixtures("initialize_from_pytest_config")``, a class-scoped fixture
   that copies the ``--dump-failed-filechecks`` option onto the test class
   (``assertFileCheck*`` reads ``self._dump_failed_filechecks``). Without it
   every CUDATestCase errors at setup with "fixture not found".

2. A results journal for ``run.py``: one JSON object per line, appended and
   flushed as each test starts and ends, so that a process that dies in the
   middle (pytest-timeout's thread method ends the process with ``os._exit``;
   a crash in a native library) still leaves the record of which test was
   running. ``--vgpu-resume`` deselects every test the journal already has an
   outcome for, so the runner can continue a file after such a death.
"""

import json
import os
import re

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--dump-failed-filechecks",
        action="store_true",
        help="Dump reproducers for FileCheck tests that fail (numba-cuda's own option).",
    )
    group = parser.getgroup("vgpu", "vgpu's numba-cuda suite runner")
    group.addoption(
        "--vgpu-journal",
        metavar="FILE",
        help="Append one JSON line per test start, end and collection error to FILE.",
    )
    group.addoption(
        "--vgpu-host-log",
        metavar="FILE",
        help="The daemon's log: what it printed while a test ran goes into the journal.",
    )
    group.addoption(
        "--vgpu-resume",
        action="store_true",
        help="Deselect the tests FILE (--vgpu-journal) already records an outcome for.",
    )


@pytest.fixture(scope="class")
def initialize_from_pytest_config(request):
    """The fixture CUDATestCase asks for: the FileCheck dump switch on the class."""
    if request.cls is not None:
        request.cls._dump_failed_filechecks = request.config.getoption(
            "dump_failed_filechecks"
        )


def _first_line(text):
    """The first non-empty line of ``text`` (exception messages can be long)."""
    for line in str(text).splitlines():
        line = line.strip()
        if line:
            return line[:500]
    return ""


def _message(report):
    """The exception's first line for a failure, the reason for a skip."""
    longrepr = report.longrepr
    if longrepr is None:
        return ""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        # A skip: (path, lineno, "Skipped: reason").
        return _first_line(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None and crash.message:
        return _first_line(crash.message)
    return _first_line(getattr(report, "longreprtext", "") or str(longrepr))


def _where(report, depth=3):
    """The innermost traceback locations of a failure, innermost last.

    The first line of a cuda.core error names only the status
    (``CUDA_ERROR_NOT_SUPPORTED``); which driver call returned it shows in
    the frames (``_memory_pool.pyx:353: in ..._MP_allocate``).
    """
    tb = getattr(getattr(report.longrepr, "reprtraceback", None), "reprentries", None)
    if not tb:
        return ""
    locs = []
    for entry in tb:
        loc = getattr(entry, "reprfileloc", None)
        # cuda.core raises every status from the same two helpers.
        if loc is not None and "_utils/cuda_utils." not in str(loc.path):
            path = str(loc.path)
            path = path[path.rfind("site-packages/") + 14:] if "site-packages/" in path else path
            locs.append(f"{path}:{loc.lineno}: {loc.message}")
    return " < ".join(reversed(locs[-depth:]))


# Driver entry points and cuda.core's pool allocator, wherever they appear in a
# failure's whole text: a test that runs its body in a subprocess reports only
# "1 != 0", with the child's traceback further down.
_MARKERS = re.compile(r"\bcu[A-Z][A-Za-z0-9_]+\b|_memory_pool")


def _markers(report):
    text = getattr(report, "longreprtext", "") or ""
    return sorted(set(_MARKERS.findall(text)))[:20]


# Daemon log lines that say nothing about a test (its lifecycle at INFO, and
# one NVML warning each guest's nvidia-ml shim triggers when numba starts).
_HOST_NOISE = (" INFO ", " DEBUG ", " TRACE ", "nvmlDeviceGetVbiosVersion is not supported")


class Journal:
    """Writes the journal and folds setup/call/teardown reports into one outcome."""

    def __init__(self, path, resume, host_log):
        self.path = path
        self.resume = resume
        self.host_log = host_log
        self.host_offset = 0
        self.file = open(path, "a", encoding="utf-8")
        self.pending = {}

    def _host_size(self):
        try:
            return os.path.getsize(self.host_log) if self.host_log else 0
        except OSError:
            return 0

    def _host_lines(self):
        """What the daemon logged since the test started, noise left out.

        One guest runs at a time, so these lines are this test's: the
        software GPU says there why a link or launch failed (the guest sees
        only a status such as CUDA_ERROR_INVALID_PTX).
        """
        if not self.host_log:
            return []
        try:
            with open(self.host_log, "rb") as f:
                f.seek(self.host_offset)
                text = f.read(1 << 20).decode("utf-8", "replace")
        except OSError:
            return []
        lines = []
        for line in text.splitlines():
            line = line.strip()
            if line and not any(n in line for n in _HOST_NOISE) and line not in lines:
                lines.append(line[:300])
        return lines[:5]

    def write(self, **record):
        self.file.write(json.dumps(record) + "\n")
        # Flushed to the kernel at once: os._exit (pytest-timeout) skips
        # Python's buffers.
        self.file.flush()

    def done(self):
        """Node ids the journal already has an end record for."""
        ids = set()
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a dying process
                if rec.get("event") == "end":
                    ids.add(rec["nodeid"])
        return ids

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items):
        if not self.resume:
            return
        done = self.done()
        keep = [i for i in items if i.nodeid not in done]
        dropped = [i for i in items if i.nodeid in done]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep

    def pytest_collectreport(self, report):
        if report.failed:
            self.write(
                event="collect_error", nodeid=report.nodeid, message=_message(report)
            )

    def pytest_runtest_logstart(self, nodeid, location):
        self.pending[nodeid] = {"outcome": "passed", "message": "", "duration": 0.0}
        self.host_offset = self._host_size()
        self.write(event="start", nodeid=nodeid, pid=os.getpid())

    def pytest_runtest_logreport(self, report):
        st = self.pending.setdefault(
            report.nodeid, {"outcome": "passed", "message": "", "duration": 0.0}
        )
        st["duration"] += report.duration
        wasxfail = hasattr(report, "wasxfail")
        if report.when == "call":
            if wasxfail:
                st["outcome"] = "xpassed" if report.passed else "xfailed"
                st["message"] = _message(report) or str(report.wasxfail)
            elif report.failed:
                st["outcome"] = "failed"
                st["message"] = _message(report)
                st["where"] = _where(report)
                st["markers"] = _markers(report)
            elif report.skipped:
                st["outcome"] = "skipped"
                st["message"] = _message(report)
        elif report.failed and st["outcome"] not in ("failed", "error"):
            # A setup or teardown failure is an error (pytest's own word);
            # a failure in the call stays the test's outcome.
            st["outcome"] = "error"
            st["message"] = f"{report.when}: {_message(report)}"
            st["where"] = _where(report)
            st["markers"] = _markers(report)
        elif report.when == "setup" and report.skipped:
            st["outcome"] = "xfailed" if wasxfail else "skipped"
            st["message"] = _message(report)

    def pytest_sessionfinish(self, session):
        # Which driver library the process really used: the files mapped
        # whose names say CUDA driver (vgpu's shim is libvgpu_cuda.so behind
        # the libcuda.so* links; a real libcuda.so.<version> would show here).
        libs = set()
        try:
            with open("/proc/self/maps", encoding="utf-8") as f:
                for line in f:
                    path = line.split(None, 5)[-1].strip()
                    name = os.path.basename(path)
                    if name.startswith(("libcuda", "libvgpu_cuda", "libnvidia-ml", "libvgpu_nvml")):
                        libs.add(path)
        except OSError:
            pass
        self.write(event="libs", paths=sorted(libs))

    def pytest_runtest_logfinish(self, nodeid, location):
        st = self.pending.pop(nodeid, None)
        if st is not None:
            self.write(
                event="end",
                nodeid=nodeid,
                outcome=st["outcome"],
                duration=round(st["duration"], 3),
                message=st["message"],
                where=st.get("where", ""),
                host=self._host_lines() if st["outcome"] != "passed" else [],
                markers=st.get("markers", []),
            )


def pytest_configure(config):
    path = config.getoption("vgpu_journal")
    if path:
        config.pluginmanager.register(
            Journal(path, config.getoption("vgpu_resume"), config.getoption("vgpu_host_log")),
            "vgpu-journal",
        )
