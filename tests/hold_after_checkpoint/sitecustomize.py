"""Test hook for tests/test_sweep_stability.py, loaded by Python at start-up when this folder is on PYTHONPATH.

With MASKEDBERT_TEST_HOLD_STUDY set to a study folder, a training run that has just written its checkpoint
while another cell of that study is done stays there until it is killed, and says so with a file named
after its cell in MASKEDBERT_TEST_HOLD_MARKERS. A launch that the test kills is then in the state the test
asks for (one cell done, another mid-run) however fast or slow the machine.
"""
import glob
import os
import time

_STUDY = os.environ.get("MASKEDBERT_TEST_HOLD_STUDY")
_MARKERS = os.environ.get("MASKEDBERT_TEST_HOLD_MARKERS", "")

if _STUDY:
    from maskedbert.train import trainer as _trainer

    _save_checkpoint = _trainer.Trainer.save_checkpoint

    def _save_then_hold(self) -> None:
        _save_checkpoint(self)
        own_cell = os.path.dirname(os.path.abspath(self.checkpoint_path))
        markers = glob.glob(os.path.join(os.path.abspath(_STUDY), "*", "*", "sweep_done.json"))
        done = [os.path.dirname(p) for p in markers]
        if any(cell != own_cell for cell in done):
            name = os.path.relpath(own_cell, os.path.abspath(_STUDY)).replace(os.sep, "_")
            with open(os.path.join(_MARKERS, name), "w"):
                pass
            while True:  # held mid-run, checkpoint on disk, until the test kills the launch
                time.sleep(1)

    _trainer.Trainer.save_checkpoint = _save_then_hold
