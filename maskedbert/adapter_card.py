"""README.md model card of a mask adapter: Hub metadata (base_model, library_name, tags, mask_sparsity)
and how to load and merge it.

A folder that already holds a README.md written by someone else (e.g. transformers.Trainer's
training summary) keeps its text: the metadata is updated and a maskedbert section is appended once.

`base_model` goes into the metadata only when the base is a Hub model id: the Hub refuses a commit
whose card names a local folder there (transformers issue 33922), so a local base is named in the text
alone (and in mask_config.json, which is what mb.from_pretrained reads).
"""
from __future__ import annotations

import os
import re
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from maskedbert._atomic import write_text_atomic

README_NAME = "README.md"
_MARKER = "<!-- maskedbert mask adapter -->"
_TAGS = ["maskedbert", "mask-adapter", "pruning"]


def write_model_card(folder: str, payload: dict[str, Any], *, repo_id: str | None = None) -> str:
    """Write or update `<folder>/README.md` for the adapter described by `payload` (mask_config.json's
    content); returns the card's path."""
    path = os.path.join(folder, README_NAME)
    base = payload["base_model"].get("name_or_path")
    section = _section(payload, repo_id or folder)
    if os.path.isfile(path):
        card = ModelCard.load(path)
        data, text = card.data, card.text
        at = text.find(_MARKER)  # our section is rewritten, text before it kept
        before = (text if at < 0 else text[:at]).strip()
        text = (before + "\n\n" if before else "") + section
    else:
        data, text = ModelCardData(), section
    hub_base = hub_model_id(base)
    if hub_base:
        data.base_model = hub_base
    elif data.base_model and not hub_model_id(data.base_model if isinstance(data.base_model, str) else None):
        data.base_model = None  # e.g. a local path another writer put there: the Hub would refuse the card
    data.library_name = "maskedbert"  # transformers cannot load the folder: the Hub shows how maskedbert does
    data.tags = sorted(set(data.tags or []) | set(_TAGS))
    setattr(data, "mask_sparsity", round(float(payload["sparsity"]), 6))
    write_text_atomic(path, f"---\n{data.to_yaml()}\n---\n\n{text.lstrip()}")
    return path


def hub_model_id(name: str | None) -> str | None:
    """`name` if it reads as a Hub model id ("name" or "org/name") and is no local path, else None."""
    if not name or os.path.isabs(name) or os.path.exists(name) or name.startswith("."):
        return None
    return name if re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?", name) else None


def _section(payload: dict[str, Any], where: str) -> str:
    base = payload["base_model"].get("name_or_path") or "(not recorded: pass base_model= when loading)"
    config = payload["mask_config"]
    changed = payload["changed_parameters"]
    return "\n".join([
        _MARKER,
        "# maskedbert mask adapter",
        "",
        f"A binary mask over the linear layers of `{base}` ({payload['model_class']}), stored bit-packed.",
        "",
        f"- sparsity of the masked matrices: **{payload['sparsity']:.2%}** pruned",
        f"- mask mode `{config['mode']}`, threshold {config['threshold']:g}, scope `{config['scope']}`",
        f"- parameters stored besides the masks: {len(changed)}"
        + (f" ({', '.join(changed[:4])}{', ...' if len(changed) > 4 else ''})" if changed else ""),
        "",
        "This folder is not a transformers checkpoint (`AutoModel.from_pretrained` cannot read it). Load it",
        "with maskedbert, which loads the base model and applies the masks:",
        "",
        "```python",
        "import maskedbert as mb",
        f'model = mb.from_pretrained("{where}")          # base model + masks',
        "plain = mb.merge_and_unload(model)          # a plain transformers model, weights W*M",
        "```",
        "",
    ])
