"""MaskConfig: which linear layers get masks, and how the masks start and train.

A plain dataclass with a JSON round trip, so the resolved config can be saved beside every result.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any

from maskedbert._atomic import write_text_atomic
from maskedbert.errors import UsageError

# the MaskConfig apply_masks_ used, kept on the model until merge_and_unload (read when saving an adapter)
CONFIG_ATTR = "maskedbert_config"

MODES = ("scores", "fixed")
SCORE_INITS = ("magnitude", "magnitude_soft", "constant", "uniform", "kaiming")
SCOPES = ("layer", "global")
BACKENDS = ("auto", "torch", "triton", "triton_dense", "triton_fused")
ALL_LINEAR = "all-linear"
ADAPTER_CONFIG_NAME = "mask_config.json"  # the file of a mask adapter folder (maskedbert.adapters) that holds the config
SPARSITY_RULE = "a fraction of weights pruned, 0 <= sparsity < 1 (0 keeps every weight)"
# inits whose initial sparsity the `sparsity` field controls (exactly for magnitude, in expectation for uniform)
_SPARSITY_INITS = ("magnitude", "uniform")


@dataclass
class MaskConfig:
    """How `apply_masks_` / `MaskedLinear.from_linear` set up masks.

    Attributes:
        target_modules: None for the architecture's defaults (see maskedbert.architectures), a list of
            module-name suffixes ("attention.self.query" matches "bert.encoder.layer.0.attention.self.query"),
            a regular expression matched against the full module name (re.fullmatch), or "all-linear".
        exclude_modules: None, a list of suffixes or a regex string; matching layers are never masked.
        mode: "scores" (real-valued scores S, mask = S > threshold, trained with the straight-through
            estimator) or "fixed" (a fixed bit-packed mask, as in iterative magnitude pruning).
        train_weights: whether the weights train. None means the mode's default: False for "scores"
            (pure mask training), True for "fixed" (IMP retrains the kept weights). MaskedLinear.from_linear
            applies it to the wrapped weight and bias; apply_masks_ to every parameter of the base model
            (embeddings and LayerNorms included; the task head follows train_classifier).
        score_init: "magnitude" (2*threshold for the top (1 - sparsity) of |W|, 0 for the rest, as the
            SRNet code does), "magnitude_soft" (|W|), "constant" (every score kept), "uniform" (scores
            spread around the threshold so that a `sparsity` fraction starts pruned, in expectation) or
            "kaiming" (nn.Linear's kaiming-uniform init). Mode "fixed" supports "magnitude" only.
        threshold: tau; a weight is kept where its score > tau (strict).
        sparsity: fraction of each masked matrix (scope "layer") or of all masked weights together
            (scope "global") pruned at init, 0 <= sparsity < 1 (see check_sparsity). Only "magnitude"
            and "uniform" use it.
        scope: "layer" or "global" (one magnitude threshold over every targeted matrix).
        mask_classifier: also mask the task head (the linear layers outside the base model).
        train_classifier: the task head's parameters train (requires_grad=True) when True, freeze when False.
        backend: masked_linear backend: "auto", "torch", "triton", "triton_dense" or "triton_fused".
    """

    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    mode: str = "scores"
    train_weights: bool | None = None
    score_init: str = "magnitude"
    threshold: float = 1e-2  # SRNet / Zhao et al. (2020) use tau = 0.01 with scores initialised at 2*tau
    sparsity: float = 0.0  # no pruning unless asked: applying the default config keeps the model's outputs
    scope: str = "layer"
    mask_classifier: bool = False  # the head is usually new and small; SRNet masks the encoder only
    train_classifier: bool = True
    backend: str = "auto"

    def __post_init__(self) -> None:
        self.target_modules = _check_patterns("target_modules", self.target_modules, allow_all_linear=True)
        self.exclude_modules = _check_patterns("exclude_modules", self.exclude_modules, allow_all_linear=False)
        _check_choice("mode", self.mode, MODES)
        _check_choice("score_init", self.score_init, SCORE_INITS)
        _check_choice("scope", self.scope, SCOPES)
        _check_choice("backend", self.backend, BACKENDS)
        for name in ("mask_classifier", "train_classifier"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"MaskConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if self.train_weights is not None and not isinstance(self.train_weights, bool):
            raise TypeError(f"MaskConfig.train_weights must be a bool or None, got {self.train_weights!r}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) or not math.isfinite(
            self.threshold
        ):
            raise ValueError(f"MaskConfig.threshold must be a finite number, got {self.threshold!r}")
        self.threshold = float(self.threshold)
        self.sparsity = check_sparsity(self.sparsity, "MaskConfig.sparsity")
        if self.mode == "fixed" and self.score_init != "magnitude":
            raise ValueError(
                f"MaskConfig.score_init must be 'magnitude' when mode='fixed' (a fixed mask has no scores), "
                f"got {self.score_init!r}"
            )
        if self.sparsity > 0 and self.score_init not in _SPARSITY_INITS:
            raise ValueError(
                f"MaskConfig.sparsity={self.sparsity} has no effect with score_init={self.score_init!r}; "
                f"use one of {_SPARSITY_INITS} or sparsity=0"
            )
        if self.scope == "global" and self.score_init != "magnitude":
            raise ValueError(
                f"MaskConfig.scope='global' needs score_init='magnitude' (one magnitude threshold over all "
                f"matrices), got score_init={self.score_init!r}"
            )

    @property
    def weights_train(self) -> bool:
        """train_weights resolved against the mode's default."""
        if self.train_weights is None:
            return self.mode == "fixed"
        return self.train_weights

    # ---- JSON round trip -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MaskConfig":
        if not isinstance(data, dict):
            raise TypeError(f"MaskConfig.from_dict expects a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown MaskConfig field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "MaskConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"MaskConfig.from_json: text is not valid JSON ({err})") from err
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike) -> None:
        """Write the config as JSON, atomically (temp file in the same folder, then os.replace)."""
        write_text_atomic(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MaskConfig":
        """Read a config written by `save`, or the one inside a mask adapter: its folder or its
        mask_config.json (mb.save_pretrained's, which also records the base model and more)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            inner = os.path.join(path, ADAPTER_CONFIG_NAME)
            if not os.path.isfile(inner):
                raise UsageError(f"MaskConfig.load: {path!r} is a folder without {ADAPTER_CONFIG_NAME}; give a file "
                                 "written by MaskConfig.save or a mask adapter folder (mb.save_pretrained)")
            path = inner
        if not os.path.isfile(path):
            raise UsageError(f"MaskConfig.load: no such file {path!r}")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"MaskConfig.load: {path!r} is not valid JSON ({err})") from err
        if isinstance(data, dict) and "mask_config" in data and "format" in data:  # an adapter's mask_config.json
            return cls.from_dict(data["mask_config"])
        return cls.from_dict(data)

    @classmethod
    def resolve(cls, config: "MaskConfig | None") -> "MaskConfig":
        """`config`, or the default config for None; anything else is a TypeError."""
        if config is None:
            return cls()
        if not isinstance(config, cls):
            raise TypeError(f"config must be a MaskConfig or None, got {type(config).__name__}")
        return config

    def replace(self, **changes: Any) -> "MaskConfig":
        """A copy with some fields changed (validated); unknown names fail with the list of fields."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"unknown MaskConfig field(s) {unknown}; known fields: {sorted(known)}")
        return dataclasses.replace(self, **changes)


def check_sparsity(value: Any, name: str = "sparsity") -> float:
    """The one sparsity rule of maskedbert's configs and commands (MaskConfig, `example --sparsity`,
    `srnet --sparsities`): a fraction of weights pruned, 0 <= s < 1. Returns it as a float.

    1 is refused: a layer with every weight pruned outputs only its bias, and no method here aims
    there (the kernels' top-k functions still accept 1, as a plain operation). `name` is how the
    message refers to the value: a flag ("--sparsity") or a field ("MaskConfig.sparsity").
    """
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not 0.0 <= value < 1.0:  # NaN fails the comparison too
        raise UsageError(f"{name} must be {SPARSITY_RULE}, got {value!r}")
    return float(value)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"MaskConfig.{name} must be one of {choices}, got {value!r}")


def _check_patterns(name: str, value: Any, *, allow_all_linear: bool) -> list[str] | str | None:
    """None, a regex string (or "all-linear"), or a non-empty list of non-empty suffix strings."""
    if value is None:
        return None
    if isinstance(value, str):
        if value == ALL_LINEAR:
            if not allow_all_linear:
                raise ValueError(f"MaskConfig.{name} cannot be {ALL_LINEAR!r}")
            return value
        if not value:
            raise ValueError(f"MaskConfig.{name} must not be an empty string")
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"MaskConfig.{name} is not a valid regular expression: {value!r} ({err})") from err
        return value
    if isinstance(value, (list, tuple)):
        items = list(value)
        if not items:
            raise ValueError(f"MaskConfig.{name} must not be an empty list (use None for the defaults)")
        for item in items:
            if not isinstance(item, str) or not item or item.startswith(".") or item.endswith("."):
                raise ValueError(
                    f"MaskConfig.{name} entries must be module-name suffixes like 'attention.self.query', "
                    f"got {item!r}"
                )
        return items
    raise TypeError(
        f"MaskConfig.{name} must be None, a list of module-name suffixes or a regex string, "
        f"got {type(value).__name__}"
    )
