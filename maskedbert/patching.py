"""Swap MaskedLinear layers into a (Hugging Face) model in place, and export a plain model back.

    model = AutoModelForSequenceClassification.from_pretrained(...)
    apply_masks_(model, MaskConfig(sparsity=0.5))        # in place, returns model
    optimizer = AdamW(mask_param_groups(model, lr_scores=1e-4, lr_weights=2e-5, weight_decay=0.01))
    ...train...
    print(sparsity_report(model))
    print_trainable_parameters(model)                    # trainable params: ... (mask scores ...) || all params ...
    with disable_masks(model):                           # the unmasked model (PEFT's disable_adapter)
        dense_logits = model(**batch).logits
    merge_and_unload(model).save_pretrained(out_dir)     # plain transformers model, weights W*M

Layers are chosen by MaskConfig.target_modules (the architecture's defaults when None, see
maskedbert.architectures), minus exclude_modules, the task head unless mask_classifier, and
filter_fn(module, fqn). A linear module reachable under several names (shared layers) gets ONE
MaskedLinear that replaces it everywhere.
"""
from __future__ import annotations

import contextlib
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from maskedbert.architectures import CONV1D_MODEL_TYPES, UnsupportedLayerError, default_target_modules
from maskedbert.config import ALL_LINEAR, CONFIG_ATTR, MaskConfig
from maskedbert.kernels import topk_masks
from maskedbert.masks import masked_modules  # one definition for the package; re-exported here
from maskedbert.modules import MaskedLinear
from maskedbert.save_guard import install_save_guard, remove_save_guard

__all__ = [
    "apply_masks_",
    "merge_and_unload",
    "sparsity_report",
    "SparsityReport",
    "LayerSparsity",
    "masked_modules",
    "mask_param_groups",
    "magnitude_prune_",
    "disable_masks",
    "trainable_parameters",
    "print_trainable_parameters",
    "MaskSparsityWarning",
]

_REQUIRES_GRAD_ATTR = "_maskedbert_requires_grad"  # parameter name -> requires_grad before apply_masks_


class MaskSparsityWarning(UserWarning):
    """A score mask config that prunes nothing at the start (sparsity 0)."""


@dataclass
class _Candidate:
    module: nn.Module
    names: list[str]  # every fqn under which the module is reachable (several when shared)
    is_head: bool
    weight_shared: bool  # its weight Parameter also belongs to another module (e.g. tied embeddings)


def apply_masks_(
    model: nn.Module,
    config: MaskConfig | None = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> nn.Module:
    """Replace the targeted nn.Linear layers of `model` by MaskedLinear, in place; returns `model`.

    Raises ValueError when the model already has masks, when target_modules matches no layer (the
    message lists the layers it could have matched), when a target suffix matches nothing, and
    maskedbert.architectures.UnsupportedLayerError (a UsageError and a TypeError) for GPT-2 style
    Conv1D layers, whatever target_modules says.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    config = MaskConfig.resolve(config)
    if config.mode == "scores" and config.sparsity == 0.0 and config.score_init in ("magnitude", "uniform"):
        warnings.warn(
            f"MaskConfig(sparsity=0, score_init={config.score_init!r}): every weight starts kept and nothing is "
            "pruned until the scores train below the threshold. Give MaskConfig(sparsity=...) for a starting "
            "sparsity, or let a schedule set it (maskedbert.integrations.MaskTrainingCallback, "
            "maskedbert.pruning.exact_sparsity_)", MaskSparsityWarning, stacklevel=2)
    if filter_fn is not None and not callable(filter_fn):
        raise TypeError(f"filter_fn must be None or a callable (module, fqn) -> bool, got {type(filter_fn).__name__}")
    if masked_modules(model):
        raise ValueError("model already has MaskedLinear layers: masks cannot be applied twice "
                         "(call merge_and_unload(model) first to start over)")

    selected = _select(model, config, filter_fn)
    requires_grad_before = {name: p.requires_grad for name, p in model.named_parameters()}
    # magnitude masks are picked for all layers in one batched top-k below, so layers start dense here
    batched_magnitude = config.score_init == "magnitude" and config.sparsity > 0
    overrides = {"sparsity": 0.0} if batched_magnitude else {}
    try:  # build every layer before touching the model, so a failure leaves it as it was
        layers = [MaskedLinear.from_linear(cand.module, config, **overrides) for cand in selected]
        if batched_magnitude:
            _set_magnitude_masks(layers, config.sparsity, config.scope)
    except BaseException:
        for name, param in model.named_parameters():
            param.requires_grad_(requires_grad_before[name])
        raise
    for cand, layer in zip(selected, layers):
        for name in cand.names:
            _set_submodule(model, name, layer)
    setattr(model, CONFIG_ATTR, config)
    install_save_guard(model)  # model.save_pretrained would silently save the dense weights
    # the base model's parameters follow train_weights, the task head's train_classifier
    _set_trainable(model, body=config.weights_train, head=config.train_classifier, before=requires_grad_before)
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Replace every MaskedLinear by a plain nn.Linear with weight W*M, in place; returns `model`.

    The result has no maskedbert modules, so save_pretrained / from_pretrained work without maskedbert.
    (Before the merge, the model's own save_pretrained raises: see maskedbert.save_guard.)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    aliases = _module_aliases(model, lambda m: isinstance(m, MaskedLinear))
    if not aliases:
        raise ValueError("model has no MaskedLinear layers to merge (was apply_masks_ called on it?)")
    for module, names in aliases:
        linear = module.to_linear()
        for name in names:
            _set_submodule(model, name, linear)
    if hasattr(model, CONFIG_ATTR):
        delattr(model, CONFIG_ATTR)
    remove_save_guard(model)
    _restore_trainable(model)
    return model


@contextlib.contextmanager
def disable_masks(model: nn.Module) -> Iterator[nn.Module]:
    """Inside this block `model` computes with its unmasked weights (PEFT's `disable_adapter()`); the
    masks are back on exit, even after an error.

    Each MaskedLinear is swapped for a plain nn.Linear that holds the same weight and bias Parameters
    (no copy; optimizers keep pointing at them), and swapped back afterwards.
    """
    aliases = _module_aliases(model, lambda m: isinstance(m, MaskedLinear))
    if not aliases:
        raise ValueError("disable_masks: model has no MaskedLinear layers (was apply_masks_ called on it?)")
    swapped = []
    try:
        for module, names in aliases:
            plain = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None, device="meta")
            plain.weight = module.weight
            if module.bias is not None:
                plain.bias = module.bias
            for name in names:
                _set_submodule(model, name, plain)
            swapped.append((module, names))
        yield model
    finally:
        for module, names in swapped:
            for name in names:
                _set_submodule(model, name, module)


def trainable_parameters(model: nn.Module) -> dict[str, int | float]:
    """Counts of `model`'s parameters (shared ones once): trainable, of which mask scores, and all."""
    scores = {id(m.scores) for m in masked_modules(model).values() if m.scores is not None}
    params = list(model.parameters())  # parameters() yields a shared Parameter once
    trainable = sum(p.numel() for p in params if p.requires_grad)
    trainable_scores = sum(p.numel() for p in params if p.requires_grad and id(p) in scores)
    total = sum(p.numel() for p in params)
    return {"trainable": trainable, "trainable_mask_scores": trainable_scores,
            "trainable_other": trainable - trainable_scores, "all": total,
            "trainable_percent": 100.0 * trainable / total if total else 0.0}


def print_trainable_parameters(model: nn.Module) -> str:
    """Print (and return) PEFT's one-line summary, with the mask scores counted separately."""
    counts = trainable_parameters(model)
    line = (f"trainable params: {counts['trainable']:,} (mask scores {counts['trainable_mask_scores']:,}, other "
            f"{counts['trainable_other']:,}) || all params: {counts['all']:,} || "
            f"trainable%: {counts['trainable_percent']:.4f}")
    print(line)
    return line


def mask_param_groups(
    model: nn.Module, *, lr_scores: float, lr_weights: float, weight_decay: float = 0.0
) -> list[dict]:
    """Optimizer parameter groups: mask scores, weights with decay, and the rest without decay.

    - "mask_scores": every MaskedLinear.scores, lr=lr_scores, no weight decay.
    - "weights": trainable parameters with 2+ dims (matrices, embeddings), lr=lr_weights, weight_decay.
    - "no_decay": trainable 1-D parameters (biases, LayerNorm), lr=lr_weights, no weight decay (BERT's rule).
    Frozen parameters are left out, shared parameters appear once, empty groups are dropped. Each
    group carries a "name" key (torch optimizers keep extra keys).
    """
    for name, value in (("lr_scores", lr_scores), ("lr_weights", lr_weights), ("weight_decay", weight_decay)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    score_ids = {id(m.scores) for m in masked_modules(model).values() if m.scores is not None}
    groups = {"mask_scores": [], "weights": [], "no_decay": []}
    for _, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if id(param) in score_ids:
            groups["mask_scores"].append(param)
        elif param.dim() >= 2:
            groups["weights"].append(param)
        else:
            groups["no_decay"].append(param)
    settings = {"mask_scores": (lr_scores, 0.0), "weights": (lr_weights, weight_decay), "no_decay": (lr_weights, 0.0)}
    return [
        {"name": name, "params": params, "lr": float(settings[name][0]), "weight_decay": float(settings[name][1])}
        for name, params in groups.items()
        if params
    ]


@torch.no_grad()
def magnitude_prune_(model: nn.Module, sparsity: float, scope: str = "layer") -> nn.Module:
    """Set every mask so that exactly round(sparsity * numel) weights are pruned, smallest |W| first.

    Weights already pruned stay pruned (IMP: each round prunes more of what is left), so `sparsity`
    must be at least the current sparsity of each matrix (scope "layer") or of all masked weights
    together (scope "global"). Works in both modes.
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be a number in [0, 1], got {sparsity!r}")
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    layers = list(masked_modules(model).values())
    if not layers:
        raise ValueError("model has no MaskedLinear layers (call apply_masks_ first)")
    pruned_now = {id(layer): layer.weight.numel() - int(layer.mask().sum()) for layer in layers}
    groups = [layers] if scope == "global" else [[layer] for layer in layers]
    for group in groups:
        numel = sum(layer.weight.numel() for layer in group)
        already = sum(pruned_now[id(layer)] for layer in group)
        if round(sparsity * numel) < already:
            what = "all masked weights" if scope == "global" else f"a {tuple(group[0].weight.shape)} matrix"
            raise ValueError(f"sparsity={sparsity} is below the current sparsity of {what} "
                             f"({already / numel:.4f}); pruned weights stay pruned")
    _set_magnitude_masks(layers, sparsity, scope)
    return model


# ---- selection ---------------------------------------------------------------------------------

def _select(model: nn.Module, config: MaskConfig, filter_fn) -> list[_Candidate]:
    candidates = _candidates(model)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    target = config.target_modules
    explicit = target is not None and target != ALL_LINEAR
    if target is None:
        if model_type is None:
            raise ValueError(
                "model has no config.model_type, so there are no default target_modules; pass "
                "MaskConfig(target_modules=[...suffixes...]), a regex string, or 'all-linear'"
            )
        suffixes = list(default_target_modules(model_type))
        matches = lambda name: _suffix_match(name, suffixes)  # noqa: E731
    elif target == ALL_LINEAR:
        if model_type in CONV1D_MODEL_TYPES:
            default_target_modules(model_type)  # raises the Conv1D error
        matches = lambda name: True  # noqa: E731
    elif isinstance(target, list):
        matches = lambda name: _suffix_match(name, target)  # noqa: E731
    else:
        matches = lambda name: re.fullmatch(target, name) is not None  # noqa: E731
    _refuse_conv1d(model, matches if explicit else None)

    exclude = config.exclude_modules
    if exclude is None:
        excluded = lambda name: False  # noqa: E731
    elif isinstance(exclude, list):
        excluded = lambda name: _suffix_match(name, exclude)  # noqa: E731
    else:
        excluded = lambda name: re.fullmatch(exclude, name) is not None  # noqa: E731

    if isinstance(target, list):
        _check_every_suffix_matches(target, candidates, config.mask_classifier)

    selected = []
    for cand in candidates:
        by_pattern = any(matches(n) for n in cand.names)
        if cand.is_head:
            chosen = config.mask_classifier
        else:
            chosen = by_pattern
        if not chosen or any(excluded(n) for n in cand.names):
            continue
        if cand.weight_shared:
            if explicit and by_pattern:
                raise ValueError(
                    f"cannot mask {cand.names[0]!r}: its weight is shared with another module (tied "
                    "embeddings?), and masking one user of a shared weight would untie it; exclude it"
                )
            continue
        if filter_fn is not None and not any(filter_fn(cand.module, n) for n in cand.names):
            continue
        selected.append(cand)
    if not selected:
        head_hits = [c.names[0] for c in candidates if c.is_head and explicit and any(matches(n) for n in c.names)]
        hint = (f"; it matches only task-head layers ({', '.join(head_hits)}): set mask_classifier=True to mask them"
                if head_hits and not config.mask_classifier else "")
        raise ValueError(
            f"target_modules={target!r} (exclude_modules={exclude!r}, mask_classifier={config.mask_classifier}"
            f"{', with filter_fn' if filter_fn is not None else ''}) matched no nn.Linear layer of "
            f"{type(model).__name__}; linear layers it could have matched: {_summarise(candidates)}{hint}"
        )
    return selected


def _candidates(model: nn.Module) -> list[_Candidate]:
    owners: dict[int, set[int]] = defaultdict(set)
    for _, module in model.named_modules(remove_duplicate=False):
        for param in module._parameters.values():
            if param is not None:
                owners[id(param)].add(id(module))
    base_prefix = _base_prefix(model)
    result = []
    for module, names in _module_aliases(model, _is_plain_linear):
        is_head = base_prefix is not None and not any(n == base_prefix or n.startswith(base_prefix + ".")
                                                      for n in names)
        shared = len(owners[id(module.weight)]) > 1
        result.append(_Candidate(module, names, is_head, shared))
    return result


def _is_plain_linear(module: nn.Module) -> bool:
    # nn.MultiheadAttention reads its out_proj (this subclass) weight directly: swapping it would do nothing
    return isinstance(module, nn.Linear) and type(module).__name__ != "NonDynamicallyQuantizableLinear"


def _base_prefix(model: nn.Module) -> str | None:
    """Name of the base model inside a task model (e.g. "bert"), None when `model` is the base model."""
    prefix = getattr(model, "base_model_prefix", None)
    if not prefix or not isinstance(prefix, str):
        return None
    base = getattr(model, prefix, None)
    if isinstance(base, nn.Module) and base is not model:
        return prefix
    return None


def _check_every_suffix_matches(suffixes: list[str], candidates: list[_Candidate], mask_classifier: bool) -> None:
    for suffix in suffixes:
        hits = [c for c in candidates if any(_suffix_match(n, [suffix]) for n in c.names)]
        if not hits:
            raise ValueError(
                f"target_modules entry {suffix!r} matches no nn.Linear layer; linear layers it could have "
                f"matched: {_summarise(candidates)}"
            )
        if all(c.is_head for c in hits) and not mask_classifier:
            raise ValueError(
                f"target_modules entry {suffix!r} only matches task-head layers "
                f"({', '.join(c.names[0] for c in hits)}); set MaskConfig(mask_classifier=True) to mask the head"
            )


def _refuse_conv1d(model: nn.Module, matches) -> None:
    conv_names = [name for name, m in model.named_modules() if type(m).__name__ == "Conv1D"]
    if not conv_names:
        return
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if matches is None or any(matches(n) for n in conv_names):
        if matches is None and model_type not in CONV1D_MODEL_TYPES:
            return  # defaults of a known nn.Linear architecture never name Conv1D layers
        raise UnsupportedLayerError(
            f"{type(model).__name__} uses transformers' Conv1D layers (e.g. {conv_names[0]!r}; weight stored "
            "[in, out]); maskedbert masks torch.nn.Linear only"
        )


def _suffix_match(name: str, suffixes: list[str]) -> bool:
    return any(name == s or name.endswith("." + s) for s in suffixes)


def _summarise(candidates: list[_Candidate]) -> str:
    """Linear layer names with layer indices collapsed to '*', so the list stays readable."""
    if not candidates:
        return "(none: the model has no nn.Linear layers)"
    seen = []
    for cand in candidates:
        pattern = re.sub(r"\.\d+(?=\.|$)", ".*", cand.names[0]) + (" [head]" if cand.is_head else "")
        if pattern not in seen:
            seen.append(pattern)
    return ", ".join(seen)


# ---- module surgery ----------------------------------------------------------------------------

def _module_aliases(model: nn.Module, predicate) -> list[tuple[nn.Module, list[str]]]:
    """[(module, [every fqn reaching it])] for modules satisfying predicate, in first-seen order."""
    found: dict[int, tuple[nn.Module, list[str]]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if predicate(module):
            found.setdefault(id(module), (module, []))[1].append(name)
    return list(found.values())


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    if not name:
        raise ValueError("cannot replace the model itself; pass a model that contains linear layers")
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    parent._modules[child] = new  # works for attributes and ModuleList/ModuleDict entries alike


def _set_trainable(model: nn.Module, *, body: bool, head: bool, before: dict[str, bool]) -> None:
    """requires_grad of every parameter but the scores: the base model's follow `body`, the head's `head`.

    `before` (the flags before apply_masks_) is kept on the model so that merge_and_unload restores it.
    """
    prefix = _base_prefix(model)
    score_ids = {id(m.scores) for m in masked_modules(model).values() if m.scores is not None}
    for name, param in model.named_parameters():
        if id(param) in score_ids:
            continue
        in_head = prefix is not None and not name.startswith(prefix + ".")
        param.requires_grad_(head if in_head else body)
    setattr(model, _REQUIRES_GRAD_ATTR, before)


def _restore_trainable(model: nn.Module) -> None:
    before = getattr(model, _REQUIRES_GRAD_ATTR, None)
    if before is None:
        return
    for name, param in model.named_parameters():
        if name in before:
            param.requires_grad_(before[name])
    delattr(model, _REQUIRES_GRAD_ATTR)


# ---- magnitude masks ---------------------------------------------------------------------------

def _prune_priority(layer: MaskedLinear) -> torch.Tensor:
    """|W| as fp32, with already-pruned weights at -1 so they are pruned first (they stay pruned)."""
    magnitude = layer.weight.detach().abs().float()
    return torch.where(layer.mask(), magnitude, torch.full_like(magnitude, -1.0))


@torch.no_grad()
def _set_magnitude_masks(layers: list[MaskedLinear], sparsity: float, scope: str) -> None:
    """Exactly round(sparsity * numel) smallest |W| pruned per layer, or in all layers together (one
    threshold) with scope "global"; one batched top-k select for all layers."""
    masks, _ = topk_masks([_prune_priority(layer) for layer in layers], sparsity, scope=scope)
    for layer, mask in zip(layers, masks):
        layer.set_mask_(mask.reshape(layer.weight.shape))


# ---- sparsity report ---------------------------------------------------------------------------

@dataclass
class LayerSparsity:
    name: str
    shape: tuple[int, int]
    numel: int
    pruned: int
    aliases: tuple[str, ...] = ()  # other names of a shared module

    @property
    def sparsity(self) -> float:
        return self.pruned / self.numel if self.numel else 0.0


@dataclass
class SparsityReport:
    """Per-matrix and total sparsity. str(report) is a table; report.to_dict() is for code.

    Rows are the MaskedLinear layers (pruned = masked out); for a model without masks (e.g. after
    merge_and_unload) they are its nn.Linear layers (pruned = exact zeros). The whole-model total
    counts every parameter once, embeddings included, mask scores excluded.
    """

    layers: list[LayerSparsity]
    model_numel: int
    masked: bool  # rows come from MaskedLinear masks (else from zeros in nn.Linear weights)

    @property
    def matrices_numel(self) -> int:
        return sum(layer.numel for layer in self.layers)

    @property
    def matrices_pruned(self) -> int:
        return sum(layer.pruned for layer in self.layers)

    @property
    def matrices_sparsity(self) -> float:
        return self.matrices_pruned / self.matrices_numel if self.matrices_numel else 0.0

    @property
    def model_sparsity(self) -> float:
        return self.matrices_pruned / self.model_numel if self.model_numel else 0.0

    def to_dict(self) -> dict:
        return {
            "layers": {
                layer.name: {"shape": list(layer.shape), "numel": layer.numel, "pruned": layer.pruned,
                             "sparsity": layer.sparsity, "aliases": list(layer.aliases)}
                for layer in self.layers
            },
            "matrices": {"count": len(self.layers), "numel": self.matrices_numel, "pruned": self.matrices_pruned,
                         "sparsity": self.matrices_sparsity, "source": "masks" if self.masked else "zeros"},
            "model": {"numel": self.model_numel, "pruned": self.matrices_pruned, "sparsity": self.model_sparsity},
        }

    def __str__(self) -> str:
        rows = [(layer.name + (f" (+{len(layer.aliases)} shared)" if layer.aliases else ""),
                 "x".join(map(str, layer.shape)), f"{layer.pruned:,} / {layer.numel:,}", f"{layer.sparsity:.2%}")
                for layer in self.layers]
        kind = "masked matrices" if self.masked else "linear matrices (zeros)"
        rows.append((f"{kind} ({len(self.layers)})", "", f"{self.matrices_pruned:,} / {self.matrices_numel:,}",
                     f"{self.matrices_sparsity:.2%}"))
        rows.append(("whole model (embeddings included)", "", f"{self.matrices_pruned:,} / {self.model_numel:,}",
                     f"{self.model_sparsity:.2%}"))
        header = ("module", "shape", "pruned / total", "sparsity")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
        fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
        rule = "-" * len(fmt(header))
        body = [fmt(r) for r in rows]
        return "\n".join([fmt(header), rule, *body[:-2], rule, *body[-2:]])


@torch.no_grad()
def sparsity_report(model: nn.Module) -> SparsityReport:
    """Sparsity of each masked matrix, of all of them, and of the whole model (see SparsityReport)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    masked = _module_aliases(model, lambda m: isinstance(m, MaskedLinear))
    layers = []
    for module, names in masked or _module_aliases(model, _is_plain_linear):
        numel = module.weight.numel()
        if masked:
            pruned = numel - int(module.mask().sum().item())
        else:
            pruned = int((module.weight == 0).sum().item())
        layers.append(LayerSparsity(names[0], tuple(module.weight.shape), numel, pruned, tuple(names[1:])))
    score_ids = {id(m.scores) for m, _ in masked if m.scores is not None}
    model_numel = sum(p.numel() for p in model.parameters() if id(p) not in score_ids)
    return SparsityReport(layers, model_numel, bool(masked))
