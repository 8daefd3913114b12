"""Greedy generation with llama.cpp's C API, for tests/llama.rs and
scripts/tiny-gguf.py.

The llama.cpp is the prebuilt one inside the pinned `cyllama-cuda12` wheel
(llama.cpp b9190, ggml 0.12.0, CUDA kernels for sm_75 with compute_75 PTX),
installed by `scripts/test-deps.sh llama` into `.cache/venv-llama`. We call
its `libllama` with ctypes instead of importing cyllama: cyllama's extension
module links `libggml-cuda` (and so `libcuda.so.1`, `libcudart.so.12`,
`libcublas.so.12`) at import, while the CPU reference must not touch CUDA
at all. ggml is built with dynamically loaded backends (GGML_BACKEND_DL), so
the CPU run loads only `libggml-cpu` and the CUDA run adds `libggml-cuda`,
the way Ollama loads its backends.

The three structs passed by value are laid out as in b9190's `llama.h`;
`check_layouts()` compares the defaults that b9190's own
`llama_*_default_params()` write with what that header documents, so a
different libllama fails loudly instead of reading garbage.

As a program:

    python llama_generate.py --model M.gguf --backend cpu|cuda \\
        [--flash-attn on|off] [--graphs on|off] [--threads N] [--json]

decodes PROMPT_1 + N_FIRST greedy tokens, then PROMPT_2 on the same KV cache
+ N_SECOND greedy tokens, and prints the tokens and, at every step, the TOP_K
(token, logit) pairs, as `key=value` lines (what tests/llama.rs reads):

    device name=CUDA0 type=GPU description="NVIDIA H100 PCIe"
    prompt_1 tokens=1,259,...
    step index=0 phase=1 decoded=6 token=502 margin=13.2 top=502:29.61,134:16.40,...
    text value="..."
    done steps=24 min_margin=4.87 seconds=1.9

or one JSON object with --json. Logits are printed exactly (Python's
shortest round-trip repr of the float). `--graphs off` sets
GGML_CUDA_DISABLE_GRAPHS=1 (read by ggml-cuda at each graph compute). Exit
status 0 only if everything ran; errors go to stderr as
`llama_generate: error: ...`.
"""
import argparse
import ctypes as C
import importlib.util
import json
import os
import re
import sys
import time

PROMPT_1 = "Once upon a time"
N_FIRST = 16
PROMPT_2 = " and then"
N_SECOND = 8
# Printed per step. The comparison in tests/llama.rs looks at the top 5 and
# uses the rest as slack: a token at rank 5 on one backend may sit a rank or
# three lower on the other when logits there are within the tolerance.
TOP_K = 8
N_CTX = 128

# ggml_backend_dev_type
DEV_TYPE_NAMES = {0: "CPU", 1: "GPU", 2: "IGPU", 3: "ACCEL"}
# ggml_log_level; GGML_LOG_LEVEL_CONT continues the previous message.
LOG_LEVELS = {"debug": 1, "info": 2, "warn": 3, "error": 4}
LOG_CONT = 5
# llama_flash_attn_type
FLASH_ATTN = {"off": 0, "on": 1}


class Error(Exception):
    pass


# ---------------------------------------------------------------- the wheel


def wheel_libs():
    """The directory of the wheel's shared libraries (auditwheel's
    `cyllama_cuda12.libs`, beside the `cyllama` package), found without
    importing cyllama."""
    spec = importlib.util.find_spec("cyllama")
    if spec is None or not spec.submodule_search_locations:
        raise Error("cyllama is not installed in this Python (run scripts/test-deps.sh llama)")
    pkg = list(spec.submodule_search_locations)[0]
    libs = os.path.join(os.path.dirname(pkg), "cyllama_cuda12.libs")
    if not os.path.isdir(libs):
        raise Error(f"{libs} is missing: is this the cyllama-cuda12 wheel?")
    return libs


def one(libs, pattern):
    """The one library in `libs` whose name matches the regex `pattern`
    (auditwheel added a hash to every name)."""
    found = sorted(f for f in os.listdir(libs) if re.fullmatch(pattern, f))
    if len(found) != 1:
        raise Error(f"expected one {pattern} in {libs}, found {found}")
    return os.path.join(libs, found[0])


def nvidia_lib(package):
    """`nvidia/<package>/lib` of the venv (nvidia-cuda-runtime-cu12 and
    nvidia-cublas-cu12), which libggml-cuda needs but whose RPATH
    ($ORIGIN) does not reach."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None:
        raise Error("the nvidia-* CUDA 12 wheels are not installed (run scripts/test-deps.sh llama)")
    for root in spec.submodule_search_locations:
        d = os.path.join(root, package, "lib")
        if os.path.isdir(d):
            return d
    raise Error(f"nvidia/{package}/lib not found")


# ---------------------------------------------------------------- structs
# Offsets in the comments were read from b9190's default-params functions.


class ModelParams(C.Structure):
    _fields_ = [
        ("devices", C.c_void_p),  # 0x00
        ("tensor_buft_overrides", C.c_void_p),
        ("n_gpu_layers", C.c_int32),  # 0x10
        ("split_mode", C.c_int32),
        ("main_gpu", C.c_int32),
        ("tensor_split", C.c_void_p),  # 0x20
        ("progress_callback", C.c_void_p),
        ("progress_callback_user_data", C.c_void_p),
        ("kv_overrides", C.c_void_p),
        ("vocab_only", C.c_bool),  # 0x40
        ("use_mmap", C.c_bool),
        ("use_direct_io", C.c_bool),
        ("use_mlock", C.c_bool),
        ("check_tensors", C.c_bool),
        ("use_extra_bufts", C.c_bool),
        ("no_host", C.c_bool),
        ("no_alloc", C.c_bool),
    ]


class ContextParams(C.Structure):
    _fields_ = [
        ("n_ctx", C.c_uint32),
        ("n_batch", C.c_uint32),
        ("n_ubatch", C.c_uint32),
        ("n_seq_max", C.c_uint32),
        ("n_rs_seq", C.c_uint32),  # 0x10
        ("n_threads", C.c_int32),
        ("n_threads_batch", C.c_int32),
        ("ctx_type", C.c_int32),
        ("rope_scaling_type", C.c_int32),  # 0x20
        ("pooling_type", C.c_int32),
        ("attention_type", C.c_int32),
        ("flash_attn_type", C.c_int32),
        ("rope_freq_base", C.c_float),  # 0x30
        ("rope_freq_scale", C.c_float),
        ("yarn_ext_factor", C.c_float),
        ("yarn_attn_factor", C.c_float),
        ("yarn_beta_fast", C.c_float),  # 0x40
        ("yarn_beta_slow", C.c_float),
        ("yarn_orig_ctx", C.c_uint32),
        ("defrag_thold", C.c_float),
        ("cb_eval", C.c_void_p),  # 0x50
        ("cb_eval_user_data", C.c_void_p),
        ("type_k", C.c_int32),  # 0x60
        ("type_v", C.c_int32),
        ("abort_callback", C.c_void_p),
        ("abort_callback_data", C.c_void_p),
        ("embeddings", C.c_bool),  # 0x78
        ("offload_kqv", C.c_bool),
        ("no_perf", C.c_bool),
        ("op_offload", C.c_bool),
        ("swa_full", C.c_bool),
        ("kv_unified", C.c_bool),
        ("samplers", C.c_void_p),  # 0x80
        ("n_samplers", C.c_size_t),
    ]


class QuantizeParams(C.Structure):
    _fields_ = [
        ("nthread", C.c_int32),
        ("ftype", C.c_int32),
        ("output_tensor_type", C.c_int32),
        ("token_embedding_type", C.c_int32),
        ("allow_requantize", C.c_bool),  # 0x10
        ("quantize_output_tensor", C.c_bool),
        ("only_copy", C.c_bool),
        ("pure", C.c_bool),
        ("keep_split", C.c_bool),
        ("dry_run", C.c_bool),
        ("imatrix", C.c_void_p),  # 0x18
        ("kv_overrides", C.c_void_p),
        ("tt_overrides", C.c_void_p),
        ("prune_layers", C.c_void_p),
    ]


class Batch(C.Structure):
    _fields_ = [
        ("n_tokens", C.c_int32),
        ("token", C.POINTER(C.c_int32)),
        ("embd", C.POINTER(C.c_float)),
        ("pos", C.POINTER(C.c_int32)),
        ("n_seq_id", C.POINTER(C.c_int32)),
        ("seq_id", C.c_void_p),
        ("logits", C.POINTER(C.c_int8)),
    ]


# (struct, size, {field: b9190 default}); sizes from the same functions.
LAYOUTS = [
    ("llama_model_default_params", ModelParams, 0x48,
     {"n_gpu_layers": -1, "split_mode": 1, "main_gpu": 0, "use_mmap": True,
      "use_direct_io": False, "use_extra_bufts": True, "no_alloc": False}),
    ("llama_context_default_params", ContextParams, 0x90,
     {"n_ctx": 512, "n_batch": 2048, "n_ubatch": 512, "n_seq_max": 1,
      "n_threads": 4, "n_threads_batch": 4, "rope_scaling_type": -1,
      "flash_attn_type": -1, "yarn_ext_factor": -1.0, "yarn_orig_ctx": 0,
      "type_k": 1, "type_v": 1, "offload_kqv": True, "op_offload": True,
      "swa_full": True, "kv_unified": False, "n_samplers": 0}),
    ("llama_model_quantize_default_params", QuantizeParams, 0x38,
     {"nthread": 0, "ftype": 7, "output_tensor_type": 42,
      "quantize_output_tensor": True, "pure": False, "dry_run": False}),
]


class Llama:
    """libllama (and libggml, which owns the backend registry) of the wheel."""

    def __init__(self, log_level="info"):
        self.libs = wheel_libs()
        # RTLD_GLOBAL: the backends we load later resolve ggml-base from it.
        self.llama = C.CDLL(one(self.libs, r"libllama-[0-9a-f]{8}\.so[.0-9]*"), mode=C.RTLD_GLOBAL)
        self.ggml = C.CDLL(one(self.libs, r"libggml-[0-9a-f]{8}\.so[.0-9]*"), mode=C.RTLD_GLOBAL)
        L, G = self.llama, self.ggml
        G.ggml_backend_load.argtypes = [C.c_char_p]
        G.ggml_backend_load.restype = C.c_void_p
        G.ggml_backend_dev_count.restype = C.c_size_t
        G.ggml_backend_dev_get.argtypes = [C.c_size_t]
        G.ggml_backend_dev_get.restype = C.c_void_p
        for f in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
            getattr(G, f).argtypes = [C.c_void_p]
            getattr(G, f).restype = C.c_char_p
        G.ggml_backend_dev_type.argtypes = [C.c_void_p]
        G.ggml_backend_dev_type.restype = C.c_int
        L.llama_backend_init.restype = None
        L.llama_model_default_params.restype = ModelParams
        L.llama_context_default_params.restype = ContextParams
        L.llama_model_quantize_default_params.restype = QuantizeParams
        L.llama_model_load_from_file.argtypes = [C.c_char_p, ModelParams]
        L.llama_model_load_from_file.restype = C.c_void_p
        L.llama_init_from_model.argtypes = [C.c_void_p, ContextParams]
        L.llama_init_from_model.restype = C.c_void_p
        L.llama_model_get_vocab.argtypes = [C.c_void_p]
        L.llama_model_get_vocab.restype = C.c_void_p
        L.llama_vocab_n_tokens.argtypes = [C.c_void_p]
        L.llama_vocab_n_tokens.restype = C.c_int32
        L.llama_tokenize.argtypes = [C.c_void_p, C.c_char_p, C.c_int32,
                                     C.POINTER(C.c_int32), C.c_int32, C.c_bool, C.c_bool]
        L.llama_tokenize.restype = C.c_int32
        L.llama_token_to_piece.argtypes = [C.c_void_p, C.c_int32, C.c_char_p,
                                           C.c_int32, C.c_int32, C.c_bool]
        L.llama_token_to_piece.restype = C.c_int32
        L.llama_batch_get_one.argtypes = [C.POINTER(C.c_int32), C.c_int32]
        L.llama_batch_get_one.restype = Batch
        L.llama_decode.argtypes = [C.c_void_p, Batch]
        L.llama_decode.restype = C.c_int32
        L.llama_get_logits_ith.argtypes = [C.c_void_p, C.c_int32]
        L.llama_get_logits_ith.restype = C.POINTER(C.c_float)
        L.llama_free.argtypes = [C.c_void_p]
        L.llama_free.restype = None
        L.llama_model_free.argtypes = [C.c_void_p]
        L.llama_model_free.restype = None
        L.llama_model_quantize.argtypes = [C.c_char_p, C.c_char_p, C.POINTER(QuantizeParams)]
        L.llama_model_quantize.restype = C.c_uint32
        self.check_layouts()
        self.set_log_level(LOG_LEVELS[log_level])
        L.llama_backend_init()
        self.loaded = set()

    def set_log_level(self, least):
        """llama.cpp's and ggml's log (llama_log_set sets both) to stderr,
        messages below `least` dropped."""
        state = {"show": True}

        def log(level, text, _user):
            if level != LOG_CONT:
                state["show"] = level >= least
            if state["show"]:
                os.write(2, text)

        # Kept on self: ggml calls it for as long as the process lives.
        self._log_cb = C.CFUNCTYPE(None, C.c_int, C.c_char_p, C.c_void_p)(log)
        self.llama.llama_log_set.argtypes = [C.c_void_p, C.c_void_p]
        self.llama.llama_log_set.restype = None
        self.llama.llama_log_set(C.cast(self._log_cb, C.c_void_p), None)

    def check_layouts(self):
        """Each default-params function returns its struct through a hidden
        pointer (x86-64 SysV, > 16 bytes): call it on a poisoned buffer to see
        how many bytes it writes, and compare the documented defaults."""
        for fname, struct, size, defaults in LAYOUTS:
            if C.sizeof(struct) != size:
                raise Error(f"{struct.__name__} is {C.sizeof(struct)} bytes, b9190's is {size}")
            buf = (C.c_ubyte * 256)(*([0xA5] * 256))
            raw = C.CFUNCTYPE(C.c_void_p, C.c_void_p)(C.cast(getattr(self.llama, fname), C.c_void_p).value)
            raw(C.addressof(buf))
            last = max(i for i in range(256) if buf[i] != 0xA5)
            if not size - 8 <= last < size:
                raise Error(f"{fname} wrote up to byte {last}, expected a {size}-byte struct: "
                            "this libllama is not b9190's layout")
            got = getattr(self.llama, fname)()
            for field, want in defaults.items():
                if getattr(got, field) != want:
                    raise Error(f"{fname}: {field}={getattr(got, field)!r}, b9190 has {want!r}: "
                                "this libllama is not b9190's layout")

    def load_backend(self, name):
        """`ggml_backend_load` of the wheel's libggml-<name>; for CUDA, the
        CUDA 12 runtime and cuBLAS first (by path: their sonames then match
        libggml-cuda's DT_NEEDED). libcuda.so.1 comes from the library path:
        vgpu's shim under `vgpu run` and in tests/llama.rs."""
        if name in self.loaded:
            return
        if name == "cuda":
            for pkg, lib in (("cuda_runtime", "libcudart.so.12"),
                             ("cublas", "libcublasLt.so.12"), ("cublas", "libcublas.so.12")):
                C.CDLL(os.path.join(nvidia_lib(pkg), lib), mode=C.RTLD_GLOBAL)
        path = one(self.libs, rf"libggml-{name}-[0-9a-f]{{8}}\.so")
        if not self.ggml.ggml_backend_load(path.encode()):
            raise Error(f"ggml_backend_load({path}) failed (its log is above)")
        self.loaded.add(name)

    def devices(self):
        out = []
        for i in range(self.ggml.ggml_backend_dev_count()):
            d = self.ggml.ggml_backend_dev_get(i)
            out.append({
                "name": self.ggml.ggml_backend_dev_name(d).decode(),
                "description": self.ggml.ggml_backend_dev_description(d).decode(),
                "type": DEV_TYPE_NAMES.get(self.ggml.ggml_backend_dev_type(d), "?"),
            })
        return out

    def quantize(self, src, dst, ftype, nthread=2):
        """llama.cpp's own quantizer (what `llama-quantize` and `ollama
        create --quantize` run), to the llama_ftype `ftype`."""
        p = self.llama.llama_model_quantize_default_params()
        p.ftype = ftype
        p.nthread = nthread
        rc = self.llama.llama_model_quantize(src.encode(), dst.encode(), C.byref(p))
        if rc != 0:
            raise Error(f"llama_model_quantize({src} -> {dst}, ftype {ftype}) returned {rc}")


# ---------------------------------------------------------------- generation


class Model:
    def __init__(self, lib, path, gpu, flash_attn, threads):
        self.lib = lib
        L = lib.llama
        mp = L.llama_model_default_params()
        # All layers (and the output layer) on the GPU, or none.
        mp.n_gpu_layers = -1 if gpu else 0
        mp.use_mmap = False
        self.model = L.llama_model_load_from_file(path.encode(), mp)
        if not self.model:
            raise Error(f"llama_model_load_from_file({path}) failed (its log is above)")
        cp = L.llama_context_default_params()
        cp.n_ctx = N_CTX
        cp.n_batch = N_CTX
        cp.n_ubatch = N_CTX
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.flash_attn_type = FLASH_ATTN[flash_attn]
        cp.no_perf = True
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise Error("llama_init_from_model failed (its log is above)")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)

    def close(self):
        self.lib.llama.llama_free(self.ctx)
        self.lib.llama.llama_model_free(self.model)

    def tokenize(self, text, bos):
        raw = text.encode()
        buf = (C.c_int32 * (len(raw) + 8))()
        n = self.lib.llama.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), bos, False)
        if n < 0:
            raise Error(f"llama_tokenize({text!r}) returned {n}")
        return list(buf[:n])

    def piece(self, token):
        buf = C.create_string_buffer(64)
        n = self.lib.llama.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            raise Error(f"llama_token_to_piece({token}) returned {n}")
        return buf.raw[:n]

    def decode(self, tokens):
        """Decodes `tokens` at the next positions of sequence 0 and returns
        the last position's logits."""
        arr = (C.c_int32 * len(tokens))(*tokens)
        rc = self.lib.llama.llama_decode(self.ctx, self.lib.llama.llama_batch_get_one(arr, len(tokens)))
        if rc != 0:
            raise Error(f"llama_decode of {len(tokens)} tokens returned {rc}")
        p = self.lib.llama.llama_get_logits_ith(self.ctx, -1)
        if not p:
            raise Error("llama_get_logits_ith(-1) returned NULL")
        return [p[i] for i in range(self.n_vocab)]


def top(logits, k):
    """The k largest (token, logit), largest first; ties by lower token id
    (llama.cpp's greedy sampler takes the first maximum too)."""
    order = sorted(range(len(logits)), key=lambda t: (-logits[t], t))
    return [(t, logits[t]) for t in order[:k]]


def generate(model):
    """PROMPT_1 + N_FIRST greedy tokens, then the last of them with PROMPT_2
    on the same KV cache + N_SECOND greedy tokens."""
    p1 = model.tokenize(PROMPT_1, bos=True)
    p2 = model.tokenize(PROMPT_2, bos=False)
    steps = []
    pending = p1
    for phase, n in ((1, N_FIRST), (2, N_SECOND)):
        if phase == 2:
            pending = pending + p2
        for _ in range(n):
            t0 = time.monotonic()
            best = top(model.decode(pending), TOP_K)
            steps.append({
                "phase": phase,
                "decoded": len(pending),
                "token": best[0][0],
                "top": [[t, l] for t, l in best],
                "seconds": round(time.monotonic() - t0, 4),
            })
            pending = [best[0][0]]
    tokens = [s["token"] for s in steps]
    text = b"".join(model.piece(t) for t in tokens)
    return {
        "prompt_1": p1,
        "prompt_2": p2,
        "tokens": tokens,
        "text": text.decode("utf-8", errors="backslashreplace"),
        "steps": steps,
    }


def margins(result):
    """top-1 minus top-2 logit at every step."""
    return [s["top"][0][1] - s["top"][1][1] for s in result["steps"]]


def run(lib, path, backend, flash_attn, threads):
    lib.load_backend("cpu")
    if backend == "cuda":
        lib.load_backend("cuda")
        if not any(d["type"] == "GPU" for d in lib.devices()):
            raise Error(f"the CUDA backend loaded but lists no GPU: {lib.devices()}")
    model = Model(lib, path, backend == "cuda", flash_attn, threads)
    try:
        return generate(model)
    finally:
        model.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--backend", choices=("cpu", "cuda"), required=True)
    ap.add_argument("--flash-attn", choices=("on", "off"), default="off")
    ap.add_argument("--graphs", choices=("on", "off"), default="on")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--log", choices=tuple(LOG_LEVELS), default="info",
                    help="least level of llama.cpp's log shown on stderr")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    a = ap.parse_args()
    if a.graphs == "off":
        os.environ["GGML_CUDA_DISABLE_GRAPHS"] = "1"
    else:
        os.environ.pop("GGML_CUDA_DISABLE_GRAPHS", None)
    t0 = time.monotonic()
    try:
        lib = Llama(log_level=a.log)
        result = run(lib, a.model, a.backend, a.flash_attn, a.threads)
    except Error as e:
        print(f"llama_generate: error: {e}", file=sys.stderr, flush=True)
        return 1
    out = {
        "model": os.path.basename(a.model),
        "backend": a.backend,
        "flash_attn": a.flash_attn,
        "graphs": a.graphs,
        "devices": lib.devices(),
        **result,
        "min_margin": min(margins(result)),
        "seconds": round(time.monotonic() - t0, 3),
    }
    if a.json:
        print(json.dumps(out), flush=True)
    else:
        print_lines(out)
    return 0


def quote(text):
    """A `key="value"` value: no quote or line break inside."""
    return '"' + text.replace("\\", "\\\\").replace('"', "\\x22").replace("\n", "\\n") + '"'


def print_lines(out):
    print(f"model file={out['model']} backend={out['backend']} flash_attn={out['flash_attn']} "
          f"graphs={out['graphs']}")
    for d in out["devices"]:
        print(f"device name={d['name']} type={d['type']} description={quote(d['description'])}")
    for key in ("prompt_1", "prompt_2"):
        print(f"{key} tokens={','.join(map(str, out[key]))}")
    for i, st in enumerate(out["steps"]):
        top = ",".join(f"{t}:{l!r}" for t, l in st["top"])
        print(f"step index={i} phase={st['phase']} decoded={st['decoded']} token={st['token']} "
              f"margin={st['top'][0][1] - st['top'][1][1]!r} seconds={st['seconds']} top={top}")
    print(f"tokens value={','.join(map(str, out['tokens']))}")
    print(f"text value={quote(out['text'])}")
    print(f"done steps={len(out['steps'])} min_margin={out['min_margin']!r} seconds={out['seconds']}",
          flush=True)

if __name__ == "__main__":
    sys.exit(main())
