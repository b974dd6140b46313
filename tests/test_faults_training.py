"""Faults in one training run: stop signals, planted pickles, truncated checkpoints, torn logs, killed
writes, damaged mask files, a full disk. Each test is a few steps of tiny-bert."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from maskedbert._atomic import WriteError, atomic_path, remove_stale_temporaries, write_text_atomic
from maskedbert.data import PadCollator, encode_examples, synthetic_pair_examples, synthetic_pair_vocabulary
from maskedbert.models import load_model_and_tokenizer
from maskedbert.train import TrainConfig, Trainer
from maskedbert.train.checkpoint import UnreadableCheckpointError, load_checkpoint
from maskedbert.train.runlog import CorruptLogError, read_jsonl
from maskedbert.train.trainer import TrainingInterrupted

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _setup(seed=0):
    torch.manual_seed(seed)
    model, tok = load_model_and_tokenizer("tiny-bert", 2, vocab=synthetic_pair_vocabulary())
    data = encode_examples(synthetic_pair_examples("train", size=32), tok, max_length=24)
    return model, data, PadCollator(tok.pad_token_id)


def _config(out, **kw):
    base = dict(output_dir=str(out), max_steps=12, batch_size=8, lr=1e-3, warmup_ratio=0.1, log_every=1,
                progress=False, seed=5, checkpoint_every_seconds=None)
    base.update(kw)
    return TrainConfig(**base)


def _losses(run_dir):
    return [(r["step"], r["loss"]) for r in read_jsonl(os.path.join(run_dir, "log.jsonl")) if r["type"] == "train"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    model, data, collate = _setup()
    Trainer(model, _config(out), data, collate).train(resume=False)
    return {k: v.clone() for k, v in model.state_dict().items()}, _losses(out)


def _signal_at(step, signum):
    def callback(trainer, global_step):
        if global_step == step:
            os.kill(os.getpid(), signum)  # delivered now; the trainer acts on it at the end of this step
    return callback


def test_three_time_limit_attempts_finish_a_run_longer_than_one(tmp_path, reference):
    weights, losses = reference
    out = tmp_path / "run"
    for attempt, (step, signum) in enumerate([(3, signal.SIGTERM), (7, signal.SIGUSR1)]):
        model, data, collate = _setup(seed=100 * attempt)  # later attempts: other weights, the checkpoint's win
        before = signal.getsignal(signal.SIGTERM)
        with pytest.raises(TrainingInterrupted) as stopped:
            Trainer(model, _config(out), data, collate, step_callback=_signal_at(step, signum)).train()
        assert signal.getsignal(signal.SIGTERM) is before  # handlers restored
        assert stopped.value.step == step and isinstance(stopped.value, KeyboardInterrupt)
        assert load_checkpoint(str(out / "checkpoint.pt"))["global_step"] == step
    model, data, collate = _setup(seed=7)
    result = Trainer(model, _config(out), data, collate).train()
    assert result["global_step"] == 12
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key
    assert _losses(out) == losses


def test_wall_time_checkpoints_change_nothing(tmp_path, reference, monkeypatch):
    import maskedbert.train.trainer as trainer_module

    clock = iter(range(0, 10_000, 7))  # every step "takes" 7 s; checkpoints every 10 s
    monkeypatch.setattr(trainer_module.time, "monotonic", lambda: float(next(clock)))
    saved = []
    model, data, collate = _setup()
    trainer = Trainer(model, _config(tmp_path, checkpoint_every_seconds=10.0), data, collate,
                      step_callback=lambda t, s: saved.append(t._checkpointed_step))
    trainer.train(resume=False)
    assert len({s for s in saved if s is not None}) >= 4
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference[0][key]), key


class _Planted:
    """Unpickling this runs a command (what torch.load(weights_only=False) would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_planted_pickle_checkpoint_runs_nothing_and_the_run_starts_over(tmp_path, reference):
    marker = tmp_path / "pwned"
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"model": _Planted(marker), "global_step": 3}, out / "checkpoint.pt")
    torch.save({"w": _Planted(marker)}, out / "best_model.pt")
    model, data, collate = _setup()
    trainer = Trainer(model, _config(out), data, collate)
    with pytest.warns(RuntimeWarning, match="checkpoint.pt is unreadable"):
        trainer.train()
    with pytest.raises(UnreadableCheckpointError, match="best_model.pt"):
        trainer.load_best_model()
    assert not marker.exists()
    assert [p.name for p in out.iterdir() if ".unreadable-" in p.name] != []
    assert _losses(out) == reference[1]


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_damaged_checkpoint_is_named_set_aside_and_rebuilt(tmp_path, reference, damage):
    out = tmp_path / "run"
    model, data, collate = _setup()
    with pytest.raises(TrainingInterrupted):
        Trainer(model, _config(out), data, collate, step_callback=_signal_at(4, signal.SIGTERM)).train()
    path = out / "checkpoint.pt"
    data_bytes = path.read_bytes()
    path.write_bytes(data_bytes[: len(data_bytes) // 2] if damage == "truncated" else b"")
    model, data, collate = _setup()
    with pytest.warns(RuntimeWarning, match=str(path)):
        Trainer(model, _config(out), data, collate).train()
    assert _losses(out) == reference[1]
    assert load_checkpoint(str(path))["global_step"] == 12


def test_torn_last_log_line_is_dropped_with_a_warning_naming_the_file(tmp_path, reference):
    out = tmp_path / "run"
    model, data, collate = _setup()
    with pytest.raises(TrainingInterrupted):
        Trainer(model, _config(out), data, collate, step_callback=_signal_at(5, signal.SIGTERM)).train()
    log = out / "log.jsonl"
    with open(log, "a") as f:
        f.write('{"type": "train", "step": 6, "lo')  # killed mid-line (disk full, quota)
    with pytest.warns(RuntimeWarning, match=f"{log}: dropped a torn last line"):
        assert read_jsonl(log)[-1]["step"] == 5
    model, data, collate = _setup()
    with pytest.warns(RuntimeWarning, match="torn"):
        Trainer(model, _config(out), data, collate).train()
    assert _losses(out) == reference[1]
    lines = log.read_text().splitlines()
    bad = lines[:3] + ["not json"] + lines[3:]
    log.write_text("\n".join(bad) + "\n")
    with pytest.raises(CorruptLogError, match=f"{log}: line 4"):
        read_jsonl(log)


def test_temporaries_of_a_killed_write_are_removed_on_the_next_start(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = [out / ".checkpoint.pt.0123abcd.tmp", out / ".plot.png.89abcdef.png"]
    for path in stale:
        path.write_bytes(b"")
    keep = [out / ".hidden-user-file", out / "notes.tmp"]
    for path in keep:
        path.write_text("mine")
    model, data, collate = _setup()
    Trainer(model, _config(out, max_steps=1), data, collate).train()
    assert not any(p.exists() for p in stale)
    assert all(p.read_text() == "mine" for p in keep)
    assert remove_stale_temporaries(out) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EACCES])
def test_write_errors_name_the_target_not_the_temporary(tmp_path, code):
    target = tmp_path / "out.json"
    with pytest.raises(WriteError) as raised:
        with atomic_path(target) as tmp:
            raise OSError(code, os.strerror(code), tmp)
    assert str(raised.value) == f"cannot write {target}: {os.strerror(code)}"
    assert os.listdir(tmp_path) == []


_FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # writes past the limit fail with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
from maskedbert.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_full_disk_ends_in_one_line_naming_the_file(tmp_path):
    out = tmp_path / "ft"
    proc = subprocess.run([sys.executable, "-c", _FULL_DISK, "finetune", "--max-steps", "2", "--train-limit", "16",
                           "--dev-limit", "8", "--batch-size", "8", "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == f"maskedbert finetune: error: cannot write {out / 'checkpoint.pt'}: File too large", proc.stderr
    assert "Traceback" not in proc.stderr
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_bit_flips_in_mask_and_adapter_files_are_refused(tmp_path):
    import maskedbert as mb
    from maskedbert.checksums import ChecksumMismatchError

    model, _, _ = _setup()
    mb.apply_masks_(model, mb.MaskConfig(sparsity=0.5))
    mb.save_pretrained(model, tmp_path / "adapter", base_model=_setup(seed=1)[0])
    for name in ("masks.safetensors", "changed_parameters.safetensors"):
        path = tmp_path / "adapter" / name
        raw = bytearray(path.read_bytes())
        raw[-3] ^= 0x10  # a bit in the last tensor's data
        path.write_bytes(bytes(raw))
        with pytest.raises(ChecksumMismatchError, match=name):
            if name == "masks.safetensors":
                mb.load_masks(model, path)
            else:
                mb.from_pretrained(tmp_path / "adapter", base_model=_setup(seed=1)[0])
        raw[-3] ^= 0x10
        path.write_bytes(bytes(raw))
    mb.from_pretrained(tmp_path / "adapter", base_model=_setup(seed=1)[0])  # intact again: loads


def test_checkpoints_hold_only_weights_only_types(tmp_path):
    model, data, collate = _setup()
    Trainer(model, _config(tmp_path, max_steps=2), data, collate).train()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["global_step"] == 2
    write_text_atomic(tmp_path / "x.json", json.dumps({"a": 1}))
