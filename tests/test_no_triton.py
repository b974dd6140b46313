"""maskedbert without triton (macOS, Windows, CPU-only Linux): the PyTorch twins do all the work.

Each check runs in a fresh interpreter (triton may already be imported in this one) that refuses
`import triton` the way tests/conftest.py does under MASKEDBERT_BLOCK_TRITON=1.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_BLOCK = """
import sys

class _BlockTriton:
    def find_spec(self, name, path=None, target=None):
        if name == "triton" or name.startswith("triton."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _BlockTriton())
"""

_TRAIN_TINY_BERT = """
import torch
import transformers

import maskedbert as mb
import maskedbert.kernels as K
from maskedbert.kernels import masked_linear, topk_mask

torch.manual_seed(0)
config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=24, max_position_embeddings=16, num_labels=3)
model = transformers.BertForSequenceClassification(config)
mb.apply_masks_(model, mb.MaskConfig(sparsity=0.5))
masked = [m for m in model.modules() if isinstance(m, mb.MaskedLinear)]
assert len(masked) == 13, len(masked)  # 6 per layer + pooler
scores = [m.scores for m in masked]
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
ids = torch.randint(0, 50, (4, 7))
labels = torch.randint(0, 3, (4,))
before = [s.detach().clone() for s in scores]
loss = model(input_ids=ids, labels=labels).loss
loss.backward()
assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in scores)
opt.step()
assert any(not torch.equal(b, s) for b, s in zip(before, scores)), "scores did not train"
assert torch.isfinite(loss)
# the kernels' public ops on their twins
x = torch.randn(3, 5, requires_grad=True)
w = torch.randn(4, 5)
y = masked_linear(x, w, scores=torch.randn(4, 5), threshold=0.0)
y.sum().backward()
assert topk_mask(torch.randn(10), 0.3).sum() == 7
assert K.unpack_mask(K.pack_mask(torch.ones(3, 9, dtype=torch.bool)), 9).all()
# asking for Triton names the fix
for backend in ("triton", "triton_dense", "triton_fused"):
    try:
        masked_linear(x, w, scores=torch.randn(4, 5), backend=backend)
    except ImportError as e:
        assert "pip install triton" in str(e) and "backend='torch'" in str(e) and repr(backend) in str(e), e
    else:
        raise AssertionError(f"backend={backend!r} ran without triton")
try:
    topk_mask(torch.randn(10), 0.3, backend="triton")
except ImportError as e:
    assert "pip install triton" in str(e), e
else:
    raise AssertionError("topk_mask(backend='triton') ran without triton")
assert "triton" not in sys.modules
print("OK", float(loss))
"""


def _run(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "MASKEDBERT_BLOCK_TRITON")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_masks_apply_and_a_masked_bert_trains_without_triton():
    proc = _run(_BLOCK + _TRAIN_TINY_BERT)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_cpu_work_never_imports_the_triton_kernels():
    # triton installed, but nothing on the CPU path needs it: maskedbert's import and mask application
    # leave it alone, and the CPU ops never load a Triton kernel module. (torch itself probes for
    # triton when the first registered op runs: its dynamo import asks whether the package exists.)
    code = """
    import sys
    import torch
    import maskedbert as mb
    from maskedbert.kernels import masked_linear, nm_mask, topk_masks
    lin = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    mb.apply_masks_(lin, mb.MaskConfig(target_modules="all-linear", sparsity=0.5))
    print("triton imported by maskedbert:", "triton" in sys.modules)
    lin(torch.randn(3, 6)).sum().backward()
    topk_masks([torch.randn(20), torch.randn(4, 4)], 0.5)
    nm_mask(torch.randn(4, 8))
    loaded = sorted(m for m in sys.modules if m.startswith("maskedbert.kernels.")
                    and (m.endswith("_kernel") or m.endswith("topk_radix")))
    print("kernel modules:", loaded)
    """
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "triton imported by maskedbert: False" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    assert "kernel modules: []" in proc.stdout, proc.stdout
