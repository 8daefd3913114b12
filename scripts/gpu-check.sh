#!/usr/bin/env bash
# Does vgpu work on this NVIDIA GPU, and how fast? One command, under 10
# minutes, one screen of output (issue 13, items 9 and 10):
#
#   scripts/gpu-check.sh [--driver auto|emulated|PATH] [--out DIR] [--budget SEC]
#   scripts/gpu-check.sh --stage     # build and stage the artifacts only
#
#  1. preflight: nvidia-smi, libcuda and the driver version; the release
#     artifacts (built with cargo where it exists, else the staged ones);
#     `vgpu host --driver auto` on a private socket, whose first log line
#     must name the NVIDIA driver; the device a guest sees equals the native one.
#  2. the end-to-end test suite against that driver: the staged test
#     executables run with VGPU_TEST_DRIVER=<driver> (the harness in
#     crates/vgpu-test-support reads it: branch hostcfg; a build whose
#     harness does not is reported, not run, in real-GPU mode). Pass/fail
#     counts, failing test names; tests that lack .cache/ dependencies
#     (scripts/test-deps.sh) are counted apart.
#  3. native vs vgpu on the same card in the same run, each with a time limit
#     and its results checked against the native run: H2D/D2H of 1 GiB
#     pageable and pinned, launch rate, a 256-kernel graph replay, a
#     cuda-samples-style bandwidth test (scripts/gpu-check/cudabench.c, the
#     driver API through dlopen, no toolkit needed); PyTorch fp16 matmul and
#     SDPA, a numba and a CuPy kernel where importable
#     (scripts/gpu-check/pybench.py). The same programs run natively and as
#     guests (LD_LIBRARY_PATH/LD_PRELOAD = the shims, VGPU_HOST = the socket).
#  4. failure cases: an out-of-bounds kernel gives a sticky 700 and the next
#     process works; a guest killed mid-kernel and a never-ending kernel must
#     both end with the worker gone and the GPU memory back (nvidia-smi).
#  5. the host log has no ERROR line and no panic.
#  6. one line per figure (native, vgpu, vgpu/native, PASS/FAIL/SKIP), all of
#     them in DIR/<stamp>.tsv (also appended to DIR/history.tsv) with the full
#     log in DIR/<stamp>.log; exit status 1 if anything failed, 2 if there is
#     no GPU to check. DIR defaults to gpu-check-results/.
#
# --driver emulated runs it all on vgpu's software GPU with small problem
# sizes and no native side: how this script is checked on a machine without
# a GPU (GPU_CHECK_EMU_NATIVE=1 adds a "native" side that is the software GPU
# in-process, to exercise the comparisons). Other knobs: --no-build (use the
# stage even where cargo exists), GPU_CHECK_STAGE (stage dir, default
# .gpucheck/), GPU_CHECK_PYTHON (tried first for torch/numba/cupy), VGPU_CACHE.
# Never changes the GPU's settings.
#
# On this workplace's device machine (one H100, no cargo, no network; the
# device tool sends the checkout its session started in): stage and pack in
# that checkout, then run with the pack carried:
#
#   scripts/gpu-check.sh --stage       # here: release build -> .gpucheck/, .gpucheck.tar.xz (~6 MiB)
#   run(command="scripts/gpu-check.sh --out $OUT", carry=[".gpucheck.tar.xz"], timeout_s=480)
#
# --stage adds /.gpucheck/, /.gpucheck.tar.xz and /gpu-check-results/ to
# .git/info/exclude, so the pack travels only as carried and results stay out
# of the tree. A run uses, in this order: a fresh build (where cargo is and
# without --no-build), .gpucheck/, .gpucheck.tar.xz, target/release (no
# suite then), always from a copy under /tmp, since the tests write next to
# the artifacts. $OUT brings back <stamp>.tsv, <stamp>.log, <stamp>-host.log
# and history.tsv. --budget (default 420 s) bounds everything after the
# build, failure cases included; expect about 5 minutes on an H100, so 15
# minutes of device time hold the machine's start and a second run. Leaving
# `kind` out may give an H200: the header line names the card.
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$ROOT/scripts/gpu-check
STAGE=${GPU_CHECK_STAGE:-$ROOT/.gpucheck}
ARCHIVE=$STAGE.tar.xz
CACHE=${VGPU_CACHE:-$ROOT/.cache}
DRIVER=auto
OUT_DIR=$ROOT/gpu-check-results
BUDGET=420
STAGE_ONLY=0
BUILD=1

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; }
while [ $# -gt 0 ]; do
    case $1 in
        --driver) DRIVER=${2:?--driver needs a value}; shift 2 ;;
        --out) OUT_DIR=${2:?--out needs a directory}; shift 2 ;;
        --budget) BUDGET=${2:?--budget needs seconds}; shift 2 ;;
        --stage) STAGE_ONLY=1; shift ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
EMULATED=0
[ "$DRIVER" = emulated ] && EMULATED=1
# NATIVE=0: no native side (the software GPU has no "native"). For testing
# this script only, GPU_CHECK_EMU_NATIVE=1 with --driver emulated runs the
# native side in-process on the software GPU (libvgpu_emu.so as
# libcuda.so.1), so the comparison paths run without a GPU.
NATIVE=1
if [ $EMULATED = 1 ]; then
    NATIVE=0
    [ "${GPU_CHECK_EMU_NATIVE:-0}" = 1 ] && NATIVE=1
fi

# ------------------------------------------------------------------ staging

# The release artifacts, stripped of debug info, the integration-test
# executables (deps/, so the harness finds the artifacts in their parent
# directory) and cudabench, in one directory small enough to carry.
stage() {
    local log=$1 json
    command -v cargo >/dev/null || { echo "no cargo: cannot build"; return 1; }
    (cd "$ROOT" && cargo build --release --workspace --locked) >>"$log" 2>&1 ||
        { echo "cargo build --release failed (see $log)"; return 1; }
    json=$(mktemp)
    (cd "$ROOT" && cargo test --release --workspace --locked --no-run --message-format=json) \
        >"$json" 2>>"$log" || { rm -f "$json"; echo "building the tests failed (see $log)"; return 1; }
    rm -rf "$STAGE"
    mkdir -p "$STAGE/deps"
    local f
    for f in vgpu libvgpu_cuda.so libvgpu_nvml.so libvgpu_emu.so libvgpu_guest_testlib.so; do
        [ -f "$ROOT/target/release/$f" ] || continue
        strip --strip-debug -o "$STAGE/$f" "$ROOT/target/release/$f" 2>/dev/null ||
            cp "$ROOT/target/release/$f" "$STAGE/$f"
    done
    # Integration tests only (kind "test"): the end-to-end suite. One line
    # per executable: package/target, then its path under the stage.
    python3 - "$json" >"$STAGE/tests.list.tmp" <<'EOF' || { rm -f "$json"; echo "reading cargo's test list failed"; return 1; }
import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    t = m.get("target") or {}
    if m.get("reason") == "compiler-artifact" and m.get("executable") and t.get("kind") == ["test"]:
        pid = m["package_id"]  # "name version (url)" or "url#name@version" or "url#version"
        url, _, frag = pid.partition("#")
        if " " in pid:
            pkg = pid.split(" ")[0]
        elif "@" in frag:
            pkg = frag.split("@")[0]
        else:
            pkg = url.rstrip("/").rsplit("/", 1)[-1]
        print(f"{pkg}/{t['name']}\t{m['executable']}")
EOF
    rm -f "$json"
    local name exe
    : >"$STAGE/tests.list"
    # Symbols go too (panics keep their messages and locations): the stage
    # must fit the device tool's 64 MiB with the tree.
    while IFS=$'\t' read -r name exe; do
        strip --strip-all -o "$STAGE/deps/$(basename "$exe")" "$exe" 2>/dev/null ||
            cp "$exe" "$STAGE/deps/$(basename "$exe")"
        printf '%s\tdeps/%s\n' "$name" "$(basename "$exe")" >>"$STAGE/tests.list"
    done <"$STAGE/tests.list.tmp"
    rm -f "$STAGE/tests.list.tmp"
    gcc -std=gnu11 -O2 -Wall -Wextra -Werror -o "$STAGE/cudabench" "$HERE/cudabench.c" -ldl \
        2>>"$log" || { echo "gcc cudabench.c failed (see $log)"; return 1; }
    # The test executables find their sources (tests/c, tests/py) under the
    # repository path they were built in; the run links that path if needed.
    echo "$ROOT" >"$STAGE/build-root"
    git -C "$ROOT" describe --always --dirty >"$STAGE/build-commit" 2>/dev/null || echo unknown >"$STAGE/build-commit"
    local exclude
    exclude=$(git -C "$ROOT" rev-parse --git-path info/exclude 2>/dev/null) && {
        case $exclude in /*) ;; *) exclude=$ROOT/$exclude ;; esac
        mkdir -p "$(dirname "$exclude")"
        local pat
        for pat in /.gpucheck/ /.gpucheck.tar.xz /gpu-check-results/; do
            grep -qxF "$pat" "$exclude" 2>/dev/null || echo "$pat" >>"$exclude"
        done
    }
    echo "staged $(wc -l <"$STAGE/tests.list") test executables and the artifacts in $STAGE ($(du -sh "$STAGE" | cut -f1))"
}

# --stage also packs the stage: the test executables share most of their
# code, so xz makes ~50 MiB into ~6, which is what travels to a device.
if [ $STAGE_ONLY = 1 ]; then
    log=$(mktemp)
    stage "$log" || { tail -n 30 "$log"; exit 1; }
    rm -f "$log"
    tar -C "$STAGE" -cJf "$ARCHIVE.tmp" . && mv "$ARCHIVE.tmp" "$ARCHIVE" || exit 1
    echo "packed $ARCHIVE ($(du -sh "$ARCHIVE" | cut -f1)): carry it to a machine without cargo"
    exit 0
fi

# ------------------------------------------------------------------ run state

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT_DIR" || exit 2
LOG=$OUT_DIR/$STAMP.log
TSV=$OUT_DIR/$STAMP.tsv
HOSTLOG=$OUT_DIR/$STAMP-host.log
: >"$LOG"
# Short: the socket path must fit in 107 bytes.
work=$(mktemp -d /tmp/gpuchk.XXXXXX)
SOCK=$work/vgpu.sock
ROWS=$work/rows.tsv
: >"$ROWS"
DAEMON=
HOLDER=
LINKED= # the link to this tree that run_suite made at the build's path

cleanup() {
    trap - EXIT INT TERM
    # No "Killed" notices for the jobs ended below.
    disown -a 2>/dev/null
    # The daemon first, gently: SIGTERM lets it end its workers.
    if [ -n "$DAEMON" ]; then
        kill -TERM "$DAEMON" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$DAEMON" 2>/dev/null || break; sleep 0.1; done
    fi
    # Then whatever this script started and is still running (the holder,
    # a wedged worker, test executables and their daemons after a Ctrl-C;
    # `timeout` puts its command in a process group of its own, out of the
    # terminal's reach), and daemons a timed-out test executable orphaned.
    # Parents before children (descendants_of lists them so), so that no
    # loop of this script starts anything new meanwhile; then the groups of
    # `timeout`, whose members the first pass may have missed.
    local p
    for p in $(descendants_of $$); do kill -9 "$p" 2>/dev/null; done
    for p in $(cat "$work/groups" 2>/dev/null); do kill -9 -- "-$p" 2>/dev/null; done
    for p in $(orphaned_test_daemons); do kill -9 "$p" 2>/dev/null; done
    [ -n "$LINKED" ] && [ -L "$LINKED" ] && rm -f "$LINKED"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'say "gpu-check: interrupted"; exit 130' INT TERM

log() { printf '%s\n' "$*" >>"$LOG"; }
say() { printf '%s\n' "$*" | tee -a "$LOG"; }
elapsed() { echo $(($(date +%s) - START)); }

# row NAME UNIT NATIVE VGPU STATUS NOTE: one summary line (and TSV row).
row() {
    local name=$1 unit=$2 nat=$3 vg=$4 status=$5 note=${6:-} ratio=-
    if [[ $nat =~ ^[0-9.]+$ && $vg =~ ^[0-9.]+$ ]]; then
        ratio=$(awk -v a="$nat" -v b="$vg" 'BEGIN { if (a > 0) printf "%.2f", b / a; else print "-" }')
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$unit" "$nat" "$vg" "$ratio" "$status" "$note" >>"$ROWS"
    local shown=$note
    [ ${#shown} -gt 56 ] && shown="${shown:0:53}..."
    printf '%-20s %-10s %9s %9s %6s %-4s %s\n' "$name" "$unit" "$nat" "$vg" "$ratio" "$status" "$shown" | tee -a "$LOG"
}

# PID PPID of every process, from /proc (no procps needed). Field 4 of stat
# is the parent; the command name before it may hold spaces. cat, not awk,
# opens the files: some awks stop at a process that exited meanwhile.
ps_tree() {
    cat /proc/[0-9]*/stat 2>/dev/null |
        awk '{ pid = $1; sub(/.*\) /, ""); split($0, f, " "); print pid, f[2] }'
}
children_of() { # PID: its child pids
    ps_tree | awk -v want="$1" '$2 == want { print $1 }'
}
descendants_of() { # PID: all its descendants, PID itself excluded
    ps_tree | awk -v root="$1" '{ kids[$2] = kids[$2] " " $1 }
        END { todo = root; while (todo != "") { split(todo, q, " "); todo = ""
                  for (i in q) { n = split(kids[q[i]], k, " ")
                      for (j = 1; j <= n; j++) { print k[j]; todo = todo " " k[j] } } } }'
}
# `vgpu host` processes of this run's binary other than ours: the test
# harness starts each daemon in a process group of its own, so one whose test
# executable was killed at the suite's time limit lives on as an orphan.
orphaned_test_daemons() {
    [ -n "${BIN:-}" ] || return 0
    local exe p
    exe=$(readlink -f "$BIN/vgpu")
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/exe" 2>/dev/null)" = "$exe" ] || continue
        [ "${p#/proc/}" = "${DAEMON:-}" ] && continue
        tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q ' host .*--listen unix:[^ ]*/vgpu-host-' && echo "${p#/proc/}"
    done
}

# Seconds a step may take: its own cap, clipped so that the failure cases
# (RESERVE seconds) still fit in the budget. 0 when the budget is spent.
RESERVE=120
limit_for() {
    local left=$((DEADLINE - $(date +%s) - RESERVE))
    [ "$left" -lt "$1" ] && { [ "$left" -ge 10 ] && echo "$left" || echo 0; return; }
    echo "$1"
}

gpu_mem_used() { # MiB used on GPU 0, or nothing without nvidia-smi
    [ $HAVE_SMI = 1 ] || return 0
    timeout 10 nvidia-smi -i 0 --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -n1 | tr -d ' '
}

# Natively: as it is, or (GPU_CHECK_EMU_NATIVE) with the software GPU as the
# driver library.
NATIVE_ENV=(env)
[ $EMULATED = 1 ] && [ $NATIVE = 1 ] &&
    NATIVE_ENV=(env "LD_LIBRARY_PATH=$work/emu-native${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")

# As a vgpu guest: the shims first on the library path and preloaded (what
# `vgpu run` does, without its extra process, so signals reach the guest).
GUEST=(env "LD_LIBRARY_PATH=$work/shims${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    "LD_PRELOAD=$work/shims/libcuda.so.1:$work/shims/libnvidia-ml.so.1"
    "VGPU_HOST=unix:$SOCK")

# limited LIMIT OUT ERR CMD...: CMD with a time limit, stdout to OUT and
# stderr to ERR (the same file is fine). `timeout` gives CMD a process group
# of its own, out of reach of a Ctrl-C; waiting in the background instead of
# the foreground lets this script's trap run at once, and cleanup ends the
# group recorded here.
limited() {
    local lim=$1 out=$2 err=$3 p
    shift 3
    if [ "$out" = "$err" ]; then
        timeout -k 5 "$lim" "$@" >"$out" 2>&1 &
    else
        timeout -k 5 "$lim" "$@" >"$out" 2>"$err" &
    fi
    p=$!
    echo "$p" >>"$work/groups"
    wait "$p"
}

# run_side SIDE LIMIT TAG CMD...: runs CMD natively or as a guest with a time
# limit; stdout to $work/TAG.SIDE.out, stderr to .err; returns its status.
run_side() {
    local side=$1 lim=$2 tag=$3
    shift 3
    local out=$work/$tag.$side.out err=$work/$tag.$side.err rc t0
    t0=$(date +%s)
    if [ "$side" = native ]; then
        limited "$lim" "$out" "$err" "${NATIVE_ENV[@]}" "$@"
    else
        daemon_alive
        limited "$lim" "$out" "$err" "${GUEST[@]}" "$@"
    fi
    rc=$?
    {
        echo "---- $tag ($side, limit ${lim}s, status $rc, $(($(date +%s) - t0))s): $*"
        cat "$out"
        sed 's/^/  stderr: /' "$err" | tail -n 40
    } >>"$LOG"
    return $rc
}

why_failed() { # TAG SIDE RC LIMIT: one line saying why a run failed
    local line
    case $3 in
        124 | 137) echo "timed out after ${4}s"; return ;;
    esac
    line=$(grep -m1 '^error ' "$work/$1.$2.out" 2>/dev/null | cut -d' ' -f3-)
    [ -n "$line" ] || line=$(grep -v '^\s*$' "$work/$1.$2.err" 2>/dev/null | tail -n1)
    echo "exit $3${line:+: $line}"
}

# bench TAG CAP_NATIVE CAP_VGPU CMD...: native run, then the same command as
# a guest; one row per figure either side reports (or skips), PASS when the
# guest produced it, nothing failed, and every check equals the native one.
bench() {
    local tag=$1 capn=$2 capv=$3 limn limv nrc=0 vrc=0 nwhy=
    shift 3
    limn=$(limit_for "$capn")
    : >"$work/$tag.native.out"
    : >"$work/$tag.native.err"
    if [ $NATIVE = 0 ]; then
        nwhy="software GPU run"
    elif [ "$limn" -eq 0 ]; then
        nwhy="native skipped: time budget spent"
    else
        run_side native "$limn" "$tag" "$@"
        nrc=$?
    fi
    limv=$(limit_for "$capv")
    if [ "$limv" -eq 0 ]; then
        row "$tag" - - - SKIP "time budget spent"
        return
    fi
    run_side vgpu "$limv" "$tag" "$@"
    vrc=$?
    local nout=$work/$tag.native.out vout=$work/$tag.vgpu.out
    # Checks that differ from the native run's, as "name native->vgpu".
    local mismatch
    mismatch=$(awk '$1 == "check" { v = $0; sub(/^check [^ ]+ /, "", v)
                                     if (FILENAME == ARGV[1]) nat[$2] = v
                                     else if ($2 in nat && nat[$2] != v) printf "%s %s->%s; ", $2, nat[$2], v }' \
        "$nout" "$vout")
    local nstate=ok
    [ -n "$nwhy" ] && nstate=-
    [ $nrc != 0 ] && nstate=failed
    local names
    names=$(awk '($1 == "figure" || $1 == "skip") && !seen[$2]++ { print $2 }' "$nout" "$vout")
    if [ -z "$names" ]; then
        # A step of checks only (identity, oob): one row for the step.
        local checks
        checks=$(awk '$1 == "check" || $1 == "info" { v = $0; sub(/^[a-z]+ /, "", v); sub(/ /, "=", v); printf "%s%s", s, v; s = " " }' "$vout")
        if [ $vrc != 0 ]; then
            row "$tag" - "$nstate" failed FAIL "vgpu: $(why_failed "$tag" vgpu $vrc "$limv")"
        elif [ $nrc != 0 ]; then
            row "$tag" - failed ok FAIL "native: $(why_failed "$tag" native $nrc "$limn") (no comparison)"
        elif [ -n "$mismatch" ]; then
            row "$tag" - "$nstate" ok FAIL "differs from native: $mismatch"
        elif [ -z "$checks" ]; then
            row "$tag" - "$nstate" ok FAIL "nothing reported"
        else
            row "$tag" - "$nstate" ok PASS "$checks${nwhy:+ ($nwhy)}"
        fi
        return
    fi
    local n unit nv vv nskip vskip status note
    for n in $names; do
        unit=$(awk -v n="$n" '$1 == "figure" && $2 == n { print $3; exit }' "$nout" "$vout")
        nv=$(awk -v n="$n" '$1 == "figure" && $2 == n { print $4; exit }' "$nout")
        vv=$(awk -v n="$n" '$1 == "figure" && $2 == n { print $4; exit }' "$vout")
        nskip=$(awk -v n="$n" '$1 == "skip" && $2 == n { $1 = $2 = ""; sub(/^ +/, ""); print; exit }' "$nout")
        vskip=$(awk -v n="$n" '$1 == "skip" && $2 == n { $1 = $2 = ""; sub(/^ +/, ""); print; exit }' "$vout")
        status=PASS
        note=
        if [ -n "$vskip" ]; then
            status=SKIP note="vgpu: $vskip"
        elif [ -z "$vv" ] || [ $vrc != 0 ]; then
            status=FAIL note="vgpu: $(why_failed "$tag" vgpu $vrc "$limv")"
        elif [ -n "$mismatch" ]; then
            status=FAIL note="differs from native: $mismatch"
        elif [ -n "$nwhy" ]; then
            [ $NATIVE = 0 ] || note=$nwhy
        elif [ -n "$nskip" ]; then
            note="native: $nskip"
        elif [ $nrc != 0 ] || [ -z "$nv" ]; then
            status=FAIL note="native: $(why_failed "$tag" native $nrc "$limn") (no comparison)"
        fi
        [ $status = SKIP ] && [ -n "$nskip" ] && note="$note (native too)"
        row "$n" "${unit:--}" "${nv:--}" "${vv:--}" $status "$note"
    done
}

daemon_alive() {
    if [ -n "$DAEMON" ] && ! kill -0 "$DAEMON" 2>/dev/null; then
        row host-daemon - - died FAIL "vgpu host exited; restarted (see host log)"
        start_daemon
    fi
}

# Starts `vgpu host` (again, after a crash) with its log appended to
# HOSTLOG; DAEMON_FIRST is the first line this instance logged.
DAEMON_FIRST=
start_daemon() {
    local skip
    touch "$HOSTLOG"
    skip=$(wc -l <"$HOSTLOG")
    rm -f "$SOCK"
    "$BIN/vgpu" host --listen "unix:$SOCK" --driver "$DRIVER" >>"$HOSTLOG" 2>&1 &
    DAEMON=$!
    for _ in $(seq 300); do
        if grep -q "^listening on unix:$SOCK" "$HOSTLOG"; then
            DAEMON_FIRST=$(tail -n +$((skip + 1)) "$HOSTLOG" | head -n1)
            return 0
        fi
        kill -0 "$DAEMON" 2>/dev/null || break
        sleep 0.1
    done
    return 1
}

# The TSV and the verdict; also what an early stop ends with. `finish
# STOPPED` says why the run stopped early.
finish() {
    [ -n "${1:-}" ] && row stopped - - - FAIL "$1"
    {
        printf 'date\thost\tcard\tdriver\tmode\ttree\tname\tunit\tnative\tvgpu\tratio\tstatus\tnote\n'
        awk -v pre="$STAMP	$(uname -n)	${CARD:--}	${DRV_VERSION:--}	$DRIVER	$COMMIT" \
            'BEGIN { FS = OFS = "\t" } { print pre, $0 }' "$ROWS"
    } >"$TSV"
    [ -s "$OUT_DIR/history.tsv" ] || head -n1 "$TSV" >"$OUT_DIR/history.tsv"
    tail -n +2 "$TSV" >>"$OUT_DIR/history.tsv"
    local nfail npass nskip failures
    nfail=$(awk -F'\t' '$6 == "FAIL"' "$ROWS" | wc -l)
    npass=$(awk -F'\t' '$6 == "PASS"' "$ROWS" | wc -l)
    nskip=$(awk -F'\t' '$6 == "SKIP"' "$ROWS" | wc -l)
    failures=$(awk -F'\t' '$6 == "FAIL" { printf "%s%s", sep, $1; sep = ", " }' "$ROWS")
    say "results: $TSV (full log $LOG) after $(elapsed)s"
    if [ "$nfail" -eq 0 ]; then
        say "gpu-check: PASS ($npass passed, $nskip skipped) on $([ $EMULATED = 1 ] && echo "vgpu's software GPU" || echo "${CARD:-this GPU}")"
        exit 0
    fi
    say "gpu-check: FAIL ($nfail failed: $failures; $npass passed, $nskip skipped)"
    exit 1
}

# ------------------------------------------------------------------ 1. preflight

HAVE_SMI=0
command -v nvidia-smi >/dev/null && HAVE_SMI=1
CARD=- DRV_VERSION=- PERSIST=-
if [ $HAVE_SMI = 1 ]; then
    IFS=, read -r CARD DRV_VERSION PERSIST < <(timeout 20 nvidia-smi -i 0 \
        --query-gpu=name,driver_version,persistence_mode --format=csv,noheader 2>>"$LOG" |
        sed 's/, /,/g') || true
fi
# Where the dynamic loader would find NVIDIA's library: LD_LIBRARY_PATH,
# then ldconfig's cache.
LIBCUDA=
IFS=: read -ra ldirs <<<"${LD_LIBRARY_PATH:-}"
for d in "${ldirs[@]}"; do
    [ -n "$d" ] && [ -e "$d/libcuda.so.1" ] && { LIBCUDA=$d/libcuda.so.1; break; }
done
[ -n "$LIBCUDA" ] || LIBCUDA=$(ldconfig -p 2>/dev/null | awk '$1 == "libcuda.so.1" { print $NF; exit }')
if [ $EMULATED = 0 ] && [ -z "$LIBCUDA" ] && [ "${CARD:--}" = - ]; then
    echo "no NVIDIA driver here (no libcuda.so.1, no nvidia-smi): nothing to check."
    echo "(scripts/gpu-check.sh --driver emulated checks this script on vgpu's software GPU)"
    exit 2
fi

BUILD_NOTE=
BIN=
if [ $BUILD = 1 ] && command -v cargo >/dev/null; then
    t0=$(date +%s)
    if msg=$(stage "$LOG"); then
        BIN=$STAGE
        BUILD_NOTE="built and staged in $(($(date +%s) - t0))s"
    else
        BUILD_NOTE="build failed: $msg"
    fi
fi
if [ -z "$BIN" ] && [ -x "$STAGE/vgpu" ]; then
    BIN=$STAGE
    BUILD_NOTE="${BUILD_NOTE:+$BUILD_NOTE; }staged build $(cat "$STAGE/build-commit" 2>/dev/null)"
elif [ -z "$BIN" ] && [ -f "$ARCHIVE" ]; then
    mkdir -p "$work/stage"
    if tar -C "$work/stage" -xJf "$ARCHIVE" 2>>"$LOG" ||
        python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
            "$ARCHIVE" "$work/stage" 2>>"$LOG"; then
        BIN=$work/stage
        BUILD_NOTE="${BUILD_NOTE:+$BUILD_NOTE; }packed build $(cat "$BIN/build-commit" 2>/dev/null)"
    else
        BUILD_NOTE="${BUILD_NOTE:+$BUILD_NOTE; }cannot unpack $ARCHIVE"
    fi
elif [ -z "$BIN" ] && [ -x "$ROOT/target/release/vgpu" ]; then
    BIN=$ROOT/target/release
    BUILD_NOTE="${BUILD_NOTE:+$BUILD_NOTE; }target/release, no staged tests"
fi
# The tests write into the directory of the artifacts (compiled C programs,
# shim links, a skip log): they run from a copy, so the stage stays as
# built, and small enough to carry.
if [ "$BIN" = "$STAGE" ]; then
    mkdir -p "$work/stage"
    cp -a "$STAGE/." "$work/stage/" && BIN=$work/stage
fi
START=$(date +%s)
DEADLINE=$((START + BUDGET))

COMMIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || cat "$BIN/build-commit" 2>/dev/null || echo ?)
if [ $EMULATED = 1 ]; then
    say "vgpu gpu-check $STAMP on $(uname -n): vgpu's software GPU$([ "${CARD:--}" != - ] && echo " (this machine has a $CARD)")"
else
    say "vgpu gpu-check $STAMP on $(uname -n): ${CARD:--}, driver ${DRV_VERSION:--}, persistence ${PERSIST:--}"
fi
if [ $EMULATED = 0 ]; then
    mode="--driver $DRIVER, native vs vgpu"
elif [ $NATIVE = 1 ]; then
    mode="software GPU, small sizes; \"native\" = the software GPU in-process (GPU_CHECK_EMU_NATIVE)"
else
    mode="software GPU (--driver emulated), small sizes: native side skipped"
fi
say "tree $COMMIT; mode $mode"
printf '%-20s %-10s %9s %9s %6s %-4s %s\n' check unit native vgpu ratio stat note | tee -a "$LOG"

[ -n "$BIN" ] || finish "no artifacts: ${BUILD_NOTE:-no cargo, no .gpucheck/ stage, no target/release}"
for f in vgpu libvgpu_cuda.so libvgpu_nvml.so; do
    [ -f "$BIN/$f" ] || finish "missing $BIN/$f"
done
mkdir -p "$work/shims"
ln -s "$BIN/libvgpu_cuda.so" "$work/shims/libcuda.so.1"
ln -s "$BIN/libvgpu_cuda.so" "$work/shims/libcuda.so"
ln -s "$BIN/libvgpu_nvml.so" "$work/shims/libnvidia-ml.so.1"
ln -s "$BIN/libvgpu_nvml.so" "$work/shims/libnvidia-ml.so"
if [ $EMULATED = 1 ] && [ $NATIVE = 1 ]; then
    mkdir -p "$work/emu-native"
    ln -s "$BIN/libvgpu_emu.so" "$work/emu-native/libcuda.so.1"
    ln -s "$BIN/libvgpu_emu.so" "$work/emu-native/libnvidia-ml.so.1"
fi

BENCH=
if command -v gcc >/dev/null && gcc -std=gnu11 -O2 -Wall -Wextra -Werror -o "$work/cudabench" \
    "$HERE/cudabench.c" -ldl 2>>"$LOG"; then
    BENCH=$work/cudabench
elif [ -x "$BIN/cudabench" ]; then
    BENCH=$BIN/cudabench
fi
if [ -n "$BENCH" ]; then
    row artifacts - - - PASS "$BUILD_NOTE; cudabench ok"
else
    row artifacts - - - FAIL "$BUILD_NOTE; no gcc and no staged cudabench: no figures"
fi

if [ $EMULATED = 0 ]; then
    if [ -n "$LIBCUDA" ]; then
        row libcuda - - - INFO "$LIBCUDA -> $(readlink -f "$LIBCUDA")"
    else
        row libcuda - - - INFO "not on LD_LIBRARY_PATH nor in ldconfig's cache"
    fi
    # Without persistence mode the driver tears the GPU down whenever its
    # last client exits and every cuInit pays for bringing it up again; a
    # process that stays initialized keeps that out of every figure.
    if [ "${PERSIST:-}" != Enabled ] && [ -n "$BENCH" ]; then
        "$BENCH" hold >"$work/hold.out" 2>&1 &
        HOLDER=$!
        log "persistence mode ${PERSIST:-?}: cudabench hold (pid $HOLDER) keeps the driver initialized"
    fi
fi

if start_daemon; then
    want=nvidia
    [ $EMULATED = 1 ] && want=emulated
    if [[ $DAEMON_FIRST == *"driver: $want"* ]]; then
        row host-driver - - "$want" PASS "${DAEMON_FIRST#*driver: }"
    else
        row host-driver - - - FAIL "first log line is not \"driver: $want ...\": ${DAEMON_FIRST:-nothing}"
        finish "vgpu host does not use the $want driver: nothing else would mean anything"
    fi
else
    row host-driver - - - FAIL "vgpu host did not start: $(tail -n1 "$HOSTLOG")"
    finish "no vgpu host"
fi

if [ -n "$BENCH" ]; then
    bench identity 30 60 "$BENCH" info
fi

# ------------------------------------------------------------------ 2. suite

run_suite() {
    local list=$BIN/tests.list
    if [ ! -s "$list" ]; then
        row suite - - - SKIP "no staged test executables (scripts/gpu-check.sh --stage where cargo is)"
        return
    fi
    # The harness of this build must honour VGPU_TEST_DRIVER, else the
    # suite would test the software GPU and say nothing about this one.
    local exe
    if [ $EMULATED = 0 ] && ! grep -qa VGPU_TEST_DRIVER "$BIN"/deps/* 2>/dev/null; then
        row suite - - - FAIL "this build's test harness ignores VGPU_TEST_DRIVER (branch hostcfg not in it): not run"
        return
    fi
    # Sources the tests read are found under the path they were built in.
    local built
    built=$(cat "$BIN/build-root" 2>/dev/null)
    if [ -n "$built" ] && [ ! -e "$built/tests/c" ] && [ "$built" != "$ROOT" ]; then
        if mkdir -p "$(dirname "$built")" 2>/dev/null && ln -s "$ROOT" "$built" 2>/dev/null; then
            LINKED=$built
            log "linked $built -> $ROOT (the test executables' source root)"
        else
            log "cannot link $built -> $ROOT: tests that read sources will fail"
        fi
    fi
    local lim
    lim=$(limit_for $((BUDGET / 2)))
    if [ "$lim" -eq 0 ]; then
        row suite - - - SKIP "time budget spent"
        return
    fi
    local ncpu par threads
    ncpu=$(nproc)
    par=$((ncpu / 4))
    [ $par -lt 1 ] && par=1
    [ $par -gt 4 ] && par=4
    threads=$((ncpu / par))
    [ $threads -gt 4 ] && threads=4
    mkdir -p "$work/suite"
    : >"$BIN/vgpu-test-skips.log"
    local t0 end name rel
    t0=$(date +%s)
    end=$((t0 + lim))
    (
        # TMPDIR: the harness's daemons and files live under $work, which
        # cleanup removes even when a test executable was killed.
        mkdir -p "$work/tmp"
        export VGPU_TEST_DRIVER=$DRIVER RUST_TEST_THREADS=$threads TMPDIR=$work/tmp
        while IFS=$'\t' read -r name rel; do
            while [ "$(jobs -rp | wc -l)" -ge $par ]; do wait -n; done
            local left=$((end - $(date +%s))) tag=${name//\//__}
            if [ $left -lt 5 ]; then
                echo "not run: suite time limit" >"$work/suite/$tag.out"
                echo 125 >"$work/suite/$tag.rc"
                continue
            fi
            (
                cd "$ROOT" && limited "$left" "$work/suite/$tag.out" "$work/suite/$tag.out" "$BIN/$rel"
                echo $? >"$work/suite/$tag.rc"
            ) &
        done <"$list"
        wait
    ) &
    # In the background, so that a signal to this script is handled at once.
    wait $!
    local orphans
    orphans=$(orphaned_test_daemons)
    if [ -n "$orphans" ]; then
        log "killing test daemons orphaned by timed-out test executables: $orphans"
        for rel in $orphans; do kill -9 "$rel" 2>/dev/null; done
    fi
    # libtest prints `test NAME ... ok|FAILED|ignored` per test and, for each
    # failure, a `---- NAME stdout ----` section with its panic.
    local pass=0 fail=0 ign=0 deps=0 tout=() notrun=() failed=() nodeps=() f tag rc t lacking
    for f in "$work"/suite/*.out; do
        tag=$(basename "$f" .out)
        rc=$(cat "$work/suite/$tag.rc" 2>/dev/null || echo 125)
        {
            echo "---- suite ${tag//__//} (status $rc)"
            cat "$f"
        } >>"$LOG"
        case $rc in
            124 | 137) tout+=("${tag//__//}") ;;
            125) notrun+=("${tag//__//}") ;;
        esac
        pass=$((pass + $(grep -c '^test .* \.\.\. ok$' "$f")))
        ign=$((ign + $(grep -c '^test .* \.\.\. ignored' "$f")))
        # A failure whose panic asks for scripts/test-deps.sh is a test
        # dependency this machine lacks (.cache/ does not travel to a device
        # machine), not a verdict on vgpu; so is a PoisonError in the same
        # executable, where tests share a lock that such a panic poisoned.
        lacking=$(awk '/^---- .* stdout ----$/ { t = $2; next }
                       /^---- / || /^failures:$/ { t = "" }
                       t != "" && /test-deps\.sh/ { deps[t] = 1 }
                       t != "" && /PoisonError/ { poison[t] = 1 }
                       END { for (t in deps) { print t; any = 1 }
                             if (any) for (t in poison) if (!(t in deps)) print t }' "$f")
        while read -r t; do
            [ -n "$t" ] || continue
            if grep -qx -- "$t" <<<"$lacking"; then
                deps=$((deps + 1))
                nodeps+=("${tag//__//}::$t")
            else
                fail=$((fail + 1))
                failed+=("${tag//__//}::$t")
            fi
        done < <(sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$f")
    done
    local skips
    skips=$(grep -c '^SKIP ' "$BIN/vgpu-test-skips.log" 2>/dev/null)
    cp "$BIN/vgpu-test-skips.log" "$work/skips.log" 2>/dev/null
    {
        echo "---- suite: tests skipped by the harness"
        cat "$work/skips.log" 2>/dev/null
        echo "---- suite: tests lacking .cache dependencies"
        printf '%s\n' "${nodeps[@]}"
    } >>"$LOG"
    local status=PASS note
    note="$fail failed, $deps lack .cache deps, $skips skipped by the harness, $ign ignored; $(($(date +%s) - t0))s"
    [ $fail -gt 0 ] || [ ${#tout[@]} -gt 0 ] || [ ${#notrun[@]} -gt 0 ] && status=FAIL
    [ ${#tout[@]} -gt 0 ] && note="${#tout[@]} executables timed out, $note (timed out: ${tout[*]})"
    [ ${#notrun[@]} -gt 0 ] && note="${#notrun[@]} executables not run (time limit), $note (not run: ${notrun[*]})"
    [ $((pass + fail)) -eq 0 ] && status=FAIL note="no test ran: $note"
    row suite tests - "$pass/$((pass + fail))" $status "$note"
    if [ $fail -gt 0 ]; then
        local shown=("${failed[@]:0:6}")
        say "  failed: ${shown[*]}$([ $fail -gt 6 ] && echo " (+$((fail - 6)) more in the log)")"
    fi
}
run_suite

# ------------------------------------------------------------------ 3. figures

if [ -n "$BENCH" ]; then
    if [ $EMULATED = 1 ]; then
        bench copy 60 120 "$BENCH" copy 128 2
        bench launch 30 60 "$BENCH" launch 2000
        bench graph 30 60 "$BENCH" graph 10
        bench bwtest 30 60 "$BENCH" bwtest 4000000 5
    else
        bench copy 60 120 "$BENCH" copy 1024 2
        bench launch 30 60 "$BENCH" launch 20000
        bench graph 30 60 "$BENCH" graph 100
        bench bwtest 30 90 "$BENCH" bwtest 32000000 100
    fi
fi

# The first Python that imports MODULE: $GPU_CHECK_PYTHON, python3, then the
# test venvs of scripts/test-deps.sh.
find_python() {
    local p
    for p in ${GPU_CHECK_PYTHON:-} python3 "$CACHE"/venv*/bin/python; do
        command -v "$p" >/dev/null || continue
        timeout 60 "$p" -c "import $1" >/dev/null 2>&1 && { command -v "$p"; return 0; }
    done
    return 1
}
SMALL=()
[ $EMULATED = 1 ] && SMALL=(--small)
for lib in torch:torch numba:numba.cuda cupy:cupy; do
    what=${lib%%:*}
    if py=$(find_python "${lib#*:}"); then
        log "$what: $py"
        if [ "$what" = cupy ] && [ $EMULATED = 1 ]; then
            # The software GPU runs PTX only; CuPy otherwise compiles SASS.
            CUPY_COMPILE_WITH_PTX=1 bench "$what" 90 150 "$py" "$HERE/pybench.py" "$what" "${SMALL[@]}"
        else
            bench "$what" 90 150 "$py" "$HERE/pybench.py" "$what" "${SMALL[@]}"
        fi
    else
        row "$what" - - - SKIP "no Python here imports ${lib#*:}"
    fi
done

# ------------------------------------------------------------------ 4. failure cases

RESERVE=0
if [ -n "$BENCH" ]; then
    bench oob 20 30 "$BENCH" oob
    lim=$(limit_for 30)
    if [ "$lim" -eq 0 ]; then
        row next-process - - - SKIP "time budget spent"
    elif run_side vgpu "$lim" next "$BENCH" smoke; then
        row next-process - - ok PASS "a new guest after the sticky error copies and runs a kernel"
    else
        row next-process - - failed FAIL "$(why_failed next vgpu $? "$lim")"
    fi
fi

# ends_clean NAME NS: a guest holding 1 GiB launches spin(NS) (0: forever),
# is killed (SIGKILL for a finite kernel, SIGTERM as from a user's Ctrl-C
# for the endless one) once the kernel runs; its worker must exit within
# GRACE seconds and the GPU memory must return to what it was before.
GRACE=30
ends_clean() {
    local name=$1 ns=$2 sig=$3 before during after workers_before worker='' g t gone=
    local lim
    lim=$(limit_for $((GRACE + 25)))
    [ "$lim" -gt 0 ] || { row "$name" - - - SKIP "time budget spent"; return; }
    daemon_alive
    before=$(gpu_mem_used)
    workers_before=" $(children_of "$DAEMON" | tr '\n' ' ') "
    : >"$work/$name.out"
    "${GUEST[@]}" "$BENCH" spin "$ns" 1024 >"$work/$name.out" 2>"$work/$name.err" &
    g=$!
    for _ in $(seq 200); do
        grep -q '^info spin launched' "$work/$name.out" && break
        kill -0 $g 2>/dev/null || break
        sleep 0.1
    done
    for t in $(children_of "$DAEMON"); do
        [[ $workers_before == *" $t "* ]] || worker=$t
    done
    if ! grep -q '^info spin launched' "$work/$name.out"; then
        kill -9 $g 2>/dev/null
        wait $g 2>/dev/null
        row "$name" - - failed FAIL "guest never launched: $(tail -n1 "$work/$name.err" "$work/$name.out" | grep -v '^==' | tail -n1)"
        return
    fi
    sleep 1
    during=$(gpu_mem_used)
    kill "-$sig" $g 2>/dev/null
    wait $g 2>/dev/null
    t0=$(date +%s)
    if [ -n "$worker" ]; then
        for _ in $(seq $((GRACE * 10))); do
            kill -0 "$worker" 2>/dev/null || { gone=$(($(date +%s) - t0)); break; }
            sleep 0.1
        done
    fi
    local note status=PASS
    if [ -z "$worker" ]; then
        status=FAIL note="no worker process found for the guest"
    elif [ -z "$gone" ]; then
        status=FAIL note="worker $worker still running ${GRACE}s after the guest ended"
        # Still the daemon's child, so still that worker: end it, so that
        # the GPU is free for what follows.
        children_of "$DAEMON" | grep -qx "$worker" && kill -9 "$worker" 2>/dev/null
        sleep 2
    else
        note="worker gone ${gone}s after the guest"
    fi
    # The driver may take a moment to reclaim a dead process's memory.
    after=$(gpu_mem_used)
    for _ in $(seq 10); do
        [ -n "$before" ] && [ -n "$after" ] && [ "$after" -gt $((before + 64)) ] || break
        sleep 1
        after=$(gpu_mem_used)
    done
    if [ -n "$before" ] && [ -n "$after" ]; then
        note="$note; used MiB before/during/after: $before/$during/$after"
        # The guest held 1 GiB: the reading must have seen it to mean anything.
        if [ -n "$during" ] && [ "$during" -lt $((before + 900)) ]; then
            note="$note (the 1 GiB never showed)"
        fi
        if [ "$after" -gt $((before + 64)) ]; then
            status=FAIL note="$note: memory not returned"
        fi
        # A worker's pid must not be listed as a compute process any more.
        if [ -n "$worker" ] && timeout 10 nvidia-smi --query-compute-apps=pid --format=csv,noheader 2>/dev/null |
            grep -qx "$worker"; then
            status=FAIL note="$note; nvidia-smi still lists pid $worker"
        fi
    elif [ $EMULATED = 1 ]; then
        note="$note; memory not measured (software GPU: it is the worker's own)"
    else
        note="$note; memory not measured (no nvidia-smi)"
    fi
    [ $status = FAIL ] && [ -z "$gone" ] && [ -n "$worker" ] && note="$note (killed by this script)"
    row "$name" - - "$([ -n "$gone" ] && echo "${gone}s" || echo running)" $status "$note"
}
if [ -n "$BENCH" ]; then
    ends_clean kill-mid-kernel 8000000000 KILL
    ends_clean endless-kernel 0 TERM
fi

# ------------------------------------------------------------------ 5. host log

errors=$(grep -c ' ERROR ' "$HOSTLOG")
panics=$(cat "$HOSTLOG" "$work"/*.vgpu.err "$work"/*-kernel.err 2>/dev/null | grep -c 'panicked')
if [ "$errors" -eq 0 ] && [ "$panics" -eq 0 ]; then
    row host-log - - clean PASS "no ERROR line, no panic ($(wc -l <"$HOSTLOG") lines)"
else
    first=$( (grep -h ' ERROR \|panicked' "$HOSTLOG" "$work"/*.vgpu.err "$work"/*-kernel.err 2>/dev/null || true) | head -n1)
    row host-log - - "$errors/$panics" FAIL "$errors ERROR lines, $panics panics; first: $first"
fi

# ------------------------------------------------------------------ 6. verdict

finish
