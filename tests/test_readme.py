"""The README's Python API snippet runs exactly as written (extracted from README.md, so the two cannot drift)."""
from __future__ import annotations

import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_blocks(section: str) -> list[str]:
    """The ```python blocks of one "## <section>" of the README, in order."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start:] if end < 0 else text[start:end]
    return re.findall(r"^```python\n(.*?)^```$", body, flags=re.DOTALL | re.MULTILINE)


def test_the_python_api_section_has_one_runnable_snippet():
    blocks = python_blocks("Python API")
    assert len(blocks) == 1
    for step in ("from_pretrained", "apply_masks_", "backward", "save_masks", "load_masks", "merge_and_unload"):
        assert step in blocks[0], step


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_python_api_snippet_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the snippet writes its files into the working directory
    code = python_blocks("Python API")[0]
    exec(compile(code, README + " (Python API)", "exec"), {"__name__": "__readme__"})
    # what the snippet says it wrote, and that the export reloads without maskedbert's modules
    assert os.path.getsize("masks.safetensors") > 0
    assert os.path.isfile(os.path.join("tiny-bert-pruned", "config.json"))
    from transformers import AutoModelForSequenceClassification

    import maskedbert as mb

    plain = AutoModelForSequenceClassification.from_pretrained("tiny-bert-pruned")
    assert not mb.patching.masked_modules(plain)
    query = plain.bert.encoder.layer[0].attention.self.query.weight
    assert 0.4 < (query == 0).float().mean().item() < 0.6  # the 50% mask is in the exported weights
