"""MaskFlipTracker: per-step fraction of score-mask entries flipped, and the share of steps above a level."""
import pytest
import torch
from torch import nn

from maskedbert.modules import MaskedLinear
from maskedbert.pruning.flips import MaskFlipTracker


def _model():
    torch.manual_seed(0)
    return nn.Sequential(MaskedLinear.from_linear(nn.Linear(5, 3), mode="scores", sparsity=0.4),
                         MaskedLinear.from_linear(nn.Linear(7, 5), mode="scores", sparsity=0.4))


def test_counts_flips_against_the_previous_step_over_all_layers():
    model = _model()
    tracker = MaskFlipTracker(model)
    total = 3 * 5 + 5 * 7
    first, second = model[0], model[1]
    with torch.no_grad():
        tau = float(first.threshold_tensor)
        tracker(1)  # nothing moved
        first.scores[0, 0] = tau + 1.0 if not bool(first.mask()[0, 0]) else tau - 1.0  # one flip
        second.scores[:2].copy_(torch.where(second.mask()[:2], tau - 1.0, tau + 1.0))  # 14 flips
        tracker(2)
        tracker(3)  # no change since step 2: compared with step 2's mask, not the initial one
        first.scores[0, 0] = tau + 1.0 if not bool(first.mask()[0, 0]) else tau - 1.0  # flips back
        tracker(4)
    assert tracker.fractions == pytest.approx([0.0, 15 / total, 0.0, 1 / total])
    assert tracker.shock_fraction(0.01) == pytest.approx(2 / 4)  # 15/50 and 1/50 are > 1%
    assert tracker.shock_fraction(0.1) == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="above"):
        tracker.shock_fraction(1.0)


def test_no_steps_and_no_score_layers():
    assert MaskFlipTracker(_model()).shock_fraction() == 0.0
    with pytest.raises(ValueError, match="mode 'scores'"):
        MaskFlipTracker(nn.Sequential(nn.Linear(3, 3)))
