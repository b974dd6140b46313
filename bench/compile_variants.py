"""The kernel variants a GPU would compile, found by running the launchers on small CPU inputs.

Run in a process that imported the kernels WITHOUT TRITON_INTERPRET=1 (the mode is fixed when a
kernel is decorated), so every launcher takes its GPU branch: all autotune configs, no fp32 upcast
of the dot, the GPU tile shapes of top-k, split-K chosen for 132 SMs. Nothing is launched: each
kernel on its module is swapped for a recorder while the public ops run on CPU tensors (outputs
stay uninitialised), then put back. Each recorded launch is specialised exactly as Triton's own
launcher would do it for a CUDA target (`create_function_from_signature` + `_pack_args`, the code
path of `JITFunction.run`): argument types, constexprs, divisibility-by-16 attributes, options.

What the scenarios cover: masked_linear forward and backward on both Triton paths (triton_dense,
triton_fused), weight gradients both ways (cuBLAS + epilogue, fused Triton GEMM) for fp32 (IEEE and TF32), fp16, bf16 and autocast over fp32 weights; scores with a
number or a device threshold, bool and bit-packed masks; with and without bias; mask training,
IMP (trained weight), both, and inference; one and several token splits (split-K atomics off and
on); divisible and odd shapes. pack_mask / unpack_mask. topk_masks per layer and global, with and
without a bracket (TopkTracker), with pruned_max, on aligned and misaligned storage. nm_mask for
the N:M patterns in NM_PATTERNS (its constexprs are the user's n and m: other patterns compile
their own variants, not checked here).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os

import torch

# the SM count the launchers see (H100 SXM / H200: 132); CPU tensors would report 8
GPU_SM_COUNT = 132
NM_PATTERNS = ((2, 4), (4, 8), (1, 3), (16, 32))
# where the Triton kernels live, and the launchers that call them (patched while recording)
KERNEL_MODULES = ("mask_prep_kernel", "masked_matmul_kernel", "ste_grad_kernel", "ste_epilogue_kernel",
                  "nm_mask_kernel", "topk_radix")
LAUNCHER_MODULES = ("mask_prep", "masked_matmul", "ste_grad", "ste_epilogue", "nm_mask", "topk_launch", "_runtime")


@dataclasses.dataclass
class Launch:
    kernel: str  # module.name
    tuner: object  # the @triton.autotune object, or None
    fn: object  # the JITFunction
    args: tuple
    kwargs: dict
    odd_shape: bool  # launched for sizes that are not multiples of 16 (other alignment attributes)


@dataclasses.dataclass
class Variant:
    """One compile of one kernel: what triton.compile gets."""
    kernel: str
    config: str  # "BLOCK_J=128 ... w8 s3"; "default w4 s3" for kernels without autotune
    config_index: int  # position in the autotune list (-1: no autotune)
    variant: str  # the non-config constexprs and argument types, readable
    dtype: str  # the compute dtype (first floating pointer argument), e.g. bf16
    signature: tuple
    constexprs: tuple
    attrs: tuple
    options: tuple
    odd_shape: bool
    spec: tuple = dataclasses.field(default=(), repr=False, compare=False)  # triton.compile's inputs

    def key(self):
        """Variants differing only in which integer arguments are multiples of 16 (or == 1) are one
        compile: the first recorded; odd sizes are their own (a separate scenario)."""
        return (self.kernel, self.config, tuple(self.variant.split(" | ")[:2]), self.odd_shape, self.options)


def _kernel_modules():
    import importlib

    return {name: importlib.import_module(f"maskedbert.kernels.{name}") for name in KERNEL_MODULES}


def kernel_objects() -> dict[str, object]:
    """Every Triton kernel of kernels/ (module-level JITFunction or Autotuner named *_kernel)."""
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    found = {}
    for mod_name, mod in _kernel_modules().items():
        for name, obj in vars(mod).items():
            if name.endswith("_kernel") and isinstance(obj, (JITFunction, Autotuner)):
                if getattr(obj, "fn", obj).__module__ == mod.__name__:
                    found[f"{mod_name}.{name}"] = obj
    return found


_odd_shape = [False]  # set by the scenarios while they run odd sizes


class _Recorder:
    def __init__(self, qualname, obj, launches):
        self.qualname, self.obj, self.launches = qualname, obj, launches

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            tuner = self.obj if hasattr(self.obj, "configs") else None
            fn = self.obj.fn if tuner is not None else self.obj
            self.launches.append(Launch(self.qualname, tuner, fn, args, dict(kwargs), _odd_shape[0]))

        return launch


@contextlib.contextmanager
def _recording(launches):
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("record launches in a process without TRITON_INTERPRET=1 (the GPU code path)")
    import maskedbert.kernels  # noqa: F401

    saved = []

    def patch(mod, name, value):
        saved.append((mod, name, getattr(mod, name)))
        setattr(mod, name, value)

    import importlib

    mods = _kernel_modules()
    launchers = [importlib.import_module(f"maskedbert.kernels.{name}") for name in LAUNCHER_MODULES]
    for mod in [*mods.values(), *launchers]:
        if hasattr(mod, "check_triton_tensors"):  # CPU tensors stand in for CUDA ones
            patch(mod, "check_triton_tensors", lambda **tensors: None)
        if hasattr(mod, "num_sms"):
            patch(mod, "num_sms", lambda t: GPU_SM_COUNT)
    for qualname, obj in kernel_objects().items():
        mod_name, name = qualname.split(".")
        patch(mods[mod_name], name, _Recorder(qualname, obj, launches))
    try:
        yield
    finally:
        for mod, name, value in reversed(saved):
            setattr(mod, name, value)


def _misaligned(shape, dtype=torch.float32):
    """A tensor whose storage starts 4 bytes past a 16-byte boundary (a view at an odd offset)."""
    n = 1
    for s in shape:
        n *= s
    return torch.randn(n + 1, dtype=dtype)[1:].view(shape)


def _masked_linear_scenarios():
    from maskedbert.kernels import masked_linear, pack_mask

    dtypes = [(torch.float32, None, False), (torch.float32, None, True), (torch.float16, None, False),
              (torch.bfloat16, None, False), (torch.float32, torch.bfloat16, False),
              (torch.float32, torch.float16, False)]  # (weight/x dtype, autocast dtype, allow_tf32)
    shapes = [(16, 64, 64), (4096, 64, 64), (33, 40, 24)]  # M, N, K: one split; split-K; odd sizes
    trains = ["scores", "weight", "both", "none"]
    sources = ["scores", "scores_tensor_threshold", "bool", "packed"]
    # the weight gradients both ways: cuBLAS + the epilogue kernel (default), the fused Triton GEMM
    for ste in ("cublas", "triton"):
        with _environ(MASKEDBERT_STE_GRAD=ste):
            _masked_linear_scenarios_for(masked_linear, pack_mask, dtypes, shapes, trains, sources)


@contextlib.contextmanager
def _environ(**values):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _masked_linear_scenarios_for(masked_linear, pack_mask, dtypes, shapes, trains, sources):
    for dtype, autocast, tf32 in dtypes:
        for backend in ("triton_dense", "triton_fused"):
            for M, N, K in shapes:
                for source in sources:
                    for train in trains:
                        if source != "scores" and train in ("scores", "both"):
                            continue  # a fixed mask has no scores to train
                        for has_bias in (False, True):
                            if (M, N, K) == (33, 40, 24) and (has_bias or source == "scores_tensor_threshold"):
                                continue  # odd sizes: the alignment variants, not every flag again
                            _odd_shape[0] = (M, N, K) == (33, 40, 24)
                            _run_masked_linear(masked_linear, pack_mask, dtype, autocast, tf32, backend,
                                               M, N, K, source, train, has_bias)


def _run_masked_linear(masked_linear, pack_mask, dtype, autocast, tf32, backend, M, N, K, source, train, has_bias):
    x = torch.randn(M, K, dtype=dtype, requires_grad=train != "none")
    weight = torch.randn(N, K, dtype=dtype, requires_grad=train in ("weight", "both"))
    bias = torch.randn(N, dtype=dtype, requires_grad=train != "none") if has_bias else None
    kwargs = {}
    if source.startswith("scores"):
        kwargs["scores"] = torch.randn(N, K, requires_grad=train in ("scores", "both"))
        kwargs["threshold"] = torch.zeros(1) if source == "scores_tensor_threshold" else 0.1
    else:
        mask = torch.rand(N, K) > 0.5
        kwargs["mask"] = mask if source == "bool" else pack_mask(mask, backend="torch")
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        ctx = torch.autocast("cpu", dtype=autocast) if autocast else contextlib.nullcontext()
        with ctx, torch.set_grad_enabled(train != "none"):
            y = masked_linear(x, weight, bias, backend=backend, **kwargs)
        if train != "none":
            y.float().sum().backward()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def _mask_io_scenarios():
    from maskedbert.kernels import pack_mask, unpack_mask

    for N, K in ((64, 64), (40, 27)):
        _odd_shape[0] = K % 16 != 0
        packed = pack_mask(torch.rand(N, K) > 0.5, backend="triton")
        unpack_mask(packed, K, backend="triton")


def _topk_scenarios():
    from maskedbert.kernels import TopkTracker, nm_mask, topk_mask, topk_masks

    tensors = [torch.randn(96, 64), torch.randn(3000)]
    for scope in ("layer", "global"):
        for pruned_max in (False, True):
            topk_masks(tensors, 0.9, scope=scope, backend="triton", pruned_max=pruned_max)
        tracker = TopkTracker()
        for _ in range(3):  # the first call has no bracket; later ones do
            tracker(tensors, 0.5, scope=scope, backend="triton", pruned_max=True)
    topk_mask(_misaligned((64, 48)), 0.5, backend="triton")
    for n, m in NM_PATTERNS:
        nm_mask(torch.randn(8, 4 * m), n, m, backend="triton")


def record_launches() -> list[Launch]:
    """Every launch the public ops make in the scenarios above, on the GPU code path."""
    launches: list[Launch] = []
    with _recording(launches):
        try:
            _masked_linear_scenarios()
            _mask_io_scenarios()
            _odd_shape[0] = False
            _topk_scenarios()
        finally:
            _odd_shape[0] = False
    return launches


# ----------------------------------------------------------------------------- specialisation


def _dtype_of(signature: dict) -> str:
    for ty in signature.values():
        if isinstance(ty, str) and ty.startswith("*") and ty[1:] in ("fp32", "fp16", "bf16"):
            return ty[1:]
    return "-"


def config_label(cfg) -> str:
    if cfg is None:
        return "default"
    blocks = " ".join(f"{k}={v}" for k, v in cfg.kwargs.items())
    return f"{blocks} w{cfg.num_warps} s{cfg.num_stages}"


def _specialise(launch: Launch, cfg, target, backend, binders):
    """(signature, constexprs, attrs, options, label): what JITFunction.run would hand to
    triton.compile for this launch in this config, by the installed Triton's own code."""
    import inspect

    from triton.runtime.jit import create_function_from_signature

    if len(inspect.signature(create_function_from_signature).parameters) == 2:
        return _specialise_triton30(launch, cfg, backend, binders)
    fn = launch.fn
    if launch.kernel not in binders:
        binders[launch.kernel] = create_function_from_signature(fn.signature, fn.params, backend)
    kwargs = dict(launch.kwargs)
    if cfg is not None:
        kwargs.update(cfg.all_kwargs())
    bound, specialization, options = binders[launch.kernel](*launch.args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    config_keys = set(cfg.kwargs) if cfg is not None else set()
    names = fn.arg_names
    shown = []
    for path, value in sorted(constexprs.items()):
        name = names[path[0]]
        if name not in config_keys and name in launch.kwargs:
            shown.append(f"{name}={int(value) if isinstance(value, bool) else value}")
    types = ",".join(v for v in signature.values() if v != "constexpr")
    ones = [names[p[0]] for p, v in constexprs.items() if names[p[0]] not in launch.kwargs
            and names[p[0]] not in config_keys]  # arguments Triton specialised as constexpr (== 1)
    label = " ".join(shown) + f" | {types}" + (f" | =1: {','.join(ones)}" if ones else "")
    undivisible = [names[p[0]] for p, a in attrs.items() if not a and signature[names[p[0]]] != "constexpr"]
    if undivisible:
        label += f" | not 16-divisible: {','.join(undivisible)}"
    return signature, constexprs, attrs, options, label


def _specialise_triton30(launch: Launch, cfg, backend, binders):
    """The same for Triton 3.0/3.1 (JITFunction.run there: a binder without a backend, an
    AttrsDescriptor of parameter indices divisible by 16 or equal to 1, constants keyed by name)."""
    from triton.runtime.jit import create_function_from_signature

    fn = launch.fn
    if launch.kernel not in binders:
        binders[launch.kernel] = create_function_from_signature(fn.signature, fn.params)
    kwargs = dict(launch.kwargs)
    if cfg is not None:
        kwargs.update(cfg.all_kwargs())
    kwargs["debug"] = fn.debug
    bound, sig_and_spec, _, _, _ = binders[launch.kernel](*launch.args, **kwargs)
    options = backend.parse_options(kwargs)
    params = fn.params
    sig_names = [p.name for p in params if not p.is_constexpr]
    signature = {k: ("*i8" if v == "none" else v) for k, v in zip(sig_names, sig_and_spec[:len(sig_names)])}
    values = tuple(bound.values())
    attrs = fn._get_config(*values)
    constexprs = {p.name: v for v, p in zip(values, params)
                  if p.is_constexpr or p.num in attrs.equal_to_1 or v is None}
    config_keys = set(cfg.kwargs) if cfg is not None else set()
    shown = [f"{name}={int(v) if isinstance(v, bool) else v}" for name, v in sorted(constexprs.items())
             if name not in config_keys and name in launch.kwargs]
    types = ",".join(signature.values())
    ones = [params[i].name for i in sorted(attrs.equal_to_1)]
    label = " ".join(shown) + f" | {types}" + (f" | =1: {','.join(ones)}" if ones else "")
    undivisible = [p.name for p in params if not p.is_constexpr and p.num not in attrs.divisible_by_16
                   and not p.do_not_specialize]
    if undivisible:
        label += f" | not 16-divisible: {','.join(undivisible)}"
    return signature, constexprs, attrs, options, label


def _freeze(d):
    if hasattr(d, "to_dict"):  # Triton 3.0's AttrsDescriptor
        d = d.to_dict()
    return tuple(sorted((str(k), repr(v)) for k, v in d.items()))


def pruned_configs(launch: Launch, shared_limit: int, wgmma: bool):
    """(kept, pruned) autotune configs for this launch on a GPU with `shared_limit` bytes per block
    (and Hopper's wgmma or not), by the kernel's own prune_configs_by (none: all kept)."""
    if launch.tuner is None:
        return [None], []
    configs = list(launch.tuner.configs)
    prune = launch.tuner.early_config_prune
    if not prune or len(configs) <= 1:
        return configs, []
    from maskedbert.kernels import _runtime

    named = dict(zip(launch.tuner.arg_names, launch.args))
    saved = _runtime.shared_memory_limit, _runtime.has_wgmma
    _runtime.shared_memory_limit = lambda device: shared_limit
    _runtime.has_wgmma = lambda device: wgmma
    try:
        kept = prune(configs, named, **launch.kwargs)
    finally:
        _runtime.shared_memory_limit, _runtime.has_wgmma = saved
    return kept, [c for c in configs if c not in kept]


def variants(launches: list[Launch], target, shared_limit: int):
    """(every distinct Variant for this target, pruned rows). Variants of autotuned kernels come
    once per surviving config."""
    from triton.compiler import make_backend

    backend = make_backend(target)
    binders, seen, out, pruned = {}, set(), [], []
    for launch in launches:
        kept, dropped = pruned_configs(launch, shared_limit, target.arch == 90)
        all_configs = list(launch.tuner.configs) if launch.tuner is not None else [None]
        for cfg in kept:
            signature, constexprs, attrs, options, label = _specialise(launch, cfg, target, backend, binders)
            index = all_configs.index(cfg) if cfg is not None else -1
            v = Variant(launch.kernel, config_label(cfg), index, label, _dtype_of(signature),
                        tuple(signature.items()), _freeze(constexprs), _freeze(attrs),
                        _freeze({k: v for k, v in options.__dict__.items() if k in ("num_warps", "num_stages", "num_ctas")}),
                        launch.odd_shape)
            if v.key() not in seen:
                seen.add(v.key())
                v.spec = (launch.fn, signature, constexprs, attrs, options.__dict__)
                out.append(v)
        dtype = next((str(a.dtype).removeprefix("torch.").replace("float", "fp").replace("bfp16", "bf16")
                      for a in launch.args if isinstance(a, torch.Tensor) and a.is_floating_point()), "-")
        for cfg in dropped:
            pruned.append((launch.kernel, config_label(cfg), dtype))
    return out, sorted(set(pruned))


def _flags_on(label: str) -> int:
    return sum(token.endswith("=1") for token in label.split(" | ")[0].split())


def _factors(v: Variant) -> list[str]:
    """What a variant is made of: each non-config constexpr (NAME=value), its compute dtype and the
    set of pointer element types it takes."""
    constexprs, types = v.variant.split(" | ")[:2]
    pointers = sorted({t for t in types.split(",") if t.startswith("*")})
    return constexprs.split() + [f"dtype={v.dtype}", "pointers=" + "".join(pointers)]


def ci_selection(all_variants: list[Variant]) -> list[Variant]:
    """The CI subset, per kernel:
    - autotuned kernels: every config once, on the bf16 variant with the most flags on (the heaviest);
    - in its first config (the first the kernel's pruning keeps for it): variants chosen greedily (recording order) until every pair of factors
      (two constexpr values, or a constexpr value and the argument types) that occurs in any variant
      occurs in a chosen one -- all-pairs coverage instead of every combination;
    - the first odd-size variant (sizes not multiples of 16: other alignment attributes).
    `--full` compiles every variant in every config instead."""
    by_kernel: dict[str, list[Variant]] = {}
    for v in all_variants:
        by_kernel.setdefault(v.kernel, []).append(v)
    chosen = []
    for kernel, vs in by_kernel.items():
        # a variant's "first config": the first its launch kept after the kernel's pruning
        first = {}
        for v in vs:
            first[(v.variant, v.odd_shape)] = min(first.get((v.variant, v.odd_shape), v.config_index), v.config_index)
        bf16 = [v for v in vs if v.dtype == "bf16" and not v.odd_shape]
        # fewest fp32 pointers: fp32 master weights under autocast would prune big configs on sm_80
        heaviest = max({v.variant for v in bf16},
                       key=lambda label: (_flags_on(label), -label.count("*fp32"), label)) if bf16 else None
        covered: set = set()
        picked = []
        for v in vs:
            if v.config_index != first[(v.variant, v.odd_shape)]:
                if v.variant == heaviest and not v.odd_shape:
                    picked.append(v)
                continue
            if v.odd_shape:
                if not any(p.odd_shape for p in picked):
                    picked.append(v)
                continue
            factors = _factors(v)
            pairs = {(a, b) for i, a in enumerate(factors) for b in factors[i + 1:]} or {(v.variant,)}
            if v.variant == heaviest or not pairs <= covered:
                picked.append(v)
                covered |= pairs
        chosen += picked
    return chosen
