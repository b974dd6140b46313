"""Default masked layers per Hugging Face architecture, keyed by `model.config.model_type`.

Following the BERT lottery-ticket and SRNet setups, the defaults mask every weight matrix of the
attention and feed-forward blocks (plus the pooler where the base model has one) and leave the
embeddings (including embedding projections such as ALBERT's embedding_hidden_mapping_in and
ELECTRA's embeddings_project) unmasked. Task heads (linear layers outside the base model, e.g.
`classifier`, RoBERTa's `classifier.dense`/`classifier.out_proj`, DeBERTa's `pooler.dense`, BART's
`classification_head.*`) are masked only with MaskConfig.mask_classifier=True.

DeBERTa (v1) computes query, key and value with one fused matrix `attention.self.in_proj` [3*hidden,
hidden]: it is masked as ONE matrix (scope "layer" prunes the fused matrix as a whole, not each third).
Its relative-position projections (`pos_proj`, `pos_q_proj`) stay dense, as DeBERTa-v2's
`pos_key_proj`/`pos_query_proj` do: they act on position embeddings, not on the token stream.

Entries are module-name suffixes: "attention.self.query" matches "bert.encoder.layer.3.attention.self.query".

GPT-2 style models (transformers' Conv1D, weight stored [in, out]) are refused with
`UnsupportedLayerError` on every path (defaults, "all-linear", explicit suffixes or regexes). It is a
`maskedbert.errors.UsageError` (so a ValueError) and also a TypeError, so code catching either keeps working.
"""
from __future__ import annotations

from maskedbert.errors import UsageError


class UnsupportedLayerError(UsageError, TypeError):
    """The model's projections are not torch.nn.Linear (GPT-2's Conv1D): maskedbert cannot mask them."""

_BERT_LIKE = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",  # also matches attention.output.dense, listed above for readability
    "pooler.dense",  # present only when the base model has a pooler
)

_BART_LIKE = tuple(
    f"{block}.{proj}" for block in ("self_attn", "encoder_attn") for proj in ("q_proj", "k_proj", "v_proj", "out_proj")
) + ("fc1", "fc2")

DEFAULT_TARGET_MODULES: dict[str, tuple[str, ...]] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "camembert": _BERT_LIKE,
    "electra": _BERT_LIKE,
    # ALBERT shares one layer's modules across depth: those modules get one shared MaskedLinear
    "albert": ("attention.query", "attention.key", "attention.value", "attention.dense", "ffn", "ffn_output",
               "pooler"),
    "distilbert": ("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin", "ffn.lin1",
                   "ffn.lin2"),
    "deberta-v2": (
        "attention.self.query_proj",
        "attention.self.key_proj",
        "attention.self.value_proj",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ),
    "deberta": (
        "attention.self.in_proj",  # fused query/key/value, one matrix
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ),
    "mpnet": (
        "attention.attn.q",
        "attention.attn.k",
        "attention.attn.v",
        "attention.attn.o",
        "intermediate.dense",
        "output.dense",
        "pooler.dense",  # MPNetModel's pooler; the classification model has none
    ),
    "bart": _BART_LIKE,  # encoder and decoder
    "mbart": _BART_LIKE,
}

# Architectures whose projections are transformers' Conv1D (weight stored [in, out]), not nn.Linear.
CONV1D_MODEL_TYPES = ("gpt2", "openai-gpt", "gpt_bigcode", "imagegpt")


def default_target_modules(model_type: str | None) -> tuple[str, ...]:
    """The default suffix list for `model_type`; ValueError (listing the known types) when there is none,
    UnsupportedLayerError for Conv1D architectures."""
    if model_type in CONV1D_MODEL_TYPES:
        raise UnsupportedLayerError(
            f"model_type {model_type!r} uses transformers' Conv1D layers (weight stored [in, out]), which "
            "maskedbert does not mask; MaskedLinear wraps torch.nn.Linear only"
        )
    if model_type not in DEFAULT_TARGET_MODULES:
        raise ValueError(
            f"no default target_modules for model_type {model_type!r} (known: {sorted(DEFAULT_TARGET_MODULES)}); "
            "pass MaskConfig(target_modules=[...suffixes...]), a regex, or 'all-linear'"
        )
    return DEFAULT_TARGET_MODULES[model_type]
