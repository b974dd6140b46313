"""DistributedDataParallel smoke test: two CPU processes on gloo through torchrun.

Two ranks with batch 4 each must reach the same weights as one process with batch 8 (dropout off,
float64), every rank must end with identical weights, and only rank 0 writes the log.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from maskedbert.train import Trainer

WORKER = textwrap.dedent('''
    import os, sys, torch
    sys.path.insert(0, os.path.dirname(__file__))
    from setup_ddp import build
    from maskedbert.train import Trainer
    model, data, collate, config = build(sys.argv[1])
    trainer = Trainer(model, config, data, collate)
    assert trainer.distributed and trainer.world_size == 2
    result = trainer.train()
    rank = int(os.environ["RANK"])
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, os.path.join(sys.argv[1], f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()
''')

SETUP = textwrap.dedent('''
    import torch
    from maskedbert.data import PadCollator, encode_examples, synthetic_pair_examples, synthetic_pair_vocabulary
    from maskedbert.models import load_model_and_tokenizer
    from maskedbert.train import TrainConfig

    def build(out, batch_size=4):
        torch.manual_seed(0)
        model, tok = load_model_and_tokenizer("tiny-bert", 2, vocab=synthetic_pair_vocabulary(),
            config_overrides={"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
        data = encode_examples(synthetic_pair_examples("train", size=32), tok, max_length=32)
        config = TrainConfig(output_dir=out, num_epochs=1, batch_size=batch_size, lr=1e-3, log_every=1,
                             progress=False, seed=1, device="cpu")
        return model.double(), data, PadCollator(tok.pad_token_id), config
''')


@pytest.mark.slow
def test_two_gloo_processes_match_single_process(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    (tmp_path / "setup_ddp.py").write_text(SETUP)
    out = tmp_path / "ddp"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(tmp_path / "worker.py"), str(out)],
        env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rank0 = torch.load(out / "rank0.pt")
    rank1 = torch.load(out / "rank1.pt")
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    assert os.path.exists(out / "log.jsonl") and os.path.exists(out / "checkpoint.pt")

    sys.path.insert(0, str(tmp_path))
    try:
        from setup_ddp import build
    finally:
        sys.path.remove(str(tmp_path))
    model, data, collate, config = build(str(tmp_path / "single"), batch_size=8)
    Trainer(model, config, data, collate).train()
    single = model.state_dict()
    for key in rank0:
        torch.testing.assert_close(rank0[key], single[key], rtol=1e-9, atol=1e-11)
    initial = build(str(tmp_path / "unused"))[0].state_dict()
    assert any(not torch.equal(rank0[k], initial[k]) for k in rank0), "training changed no weight"
