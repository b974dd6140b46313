"""Mask files: save/load round trips (model and dict), metadata, atomic writes, and errors that change nothing."""
from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from maskedbert.kernels import pack_mask, topk_mask, unpack_mask
from maskedbert.masks import load_mask_dict, load_masks, read_metadata, save_masks


class StandInMasked(nn.Module):
    """The three members of the MaskedLinear contract that mask I/O uses."""

    def __init__(self, out_features: int, in_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self._mask = torch.ones(out_features, in_features, dtype=torch.bool)

    def mask(self) -> torch.Tensor:
        return self._mask.clone()

    def set_mask_(self, mask: torch.Tensor) -> "StandInMasked":
        assert mask.dtype == torch.bool and mask.shape == self.weight.shape
        self._mask = mask.clone()
        return self


class Tiny(nn.Module):
    def __init__(self, shapes=((6, 13), (13, 6), (3, 9))):
        super().__init__()
        self.layers = nn.ModuleList(StandInMasked(*s) for s in shapes)
        self.shared = self.layers[0]  # ALBERT-style sharing: named_modules lists it once
        self.head = nn.Linear(4, 2)


TYPES = (StandInMasked,)


def _randomize(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, StandInMasked):
            m.set_mask_(torch.rand(m.weight.shape, generator=gen) > 0.4)
            out[name] = m.mask()
    return out


def test_pack_unpack_round_trip_odd_widths():
    gen = torch.Generator().manual_seed(0)
    for shape in [(1, 1), (3, 7), (5, 8), (4, 9), (2, 130)]:
        mask = torch.rand(shape, generator=gen) > 0.5
        packed = pack_mask(mask)
        assert packed.shape == (shape[0], (shape[1] + 7) // 8)
        assert torch.equal(unpack_mask(packed, shape[1]), mask)


def test_model_round_trip_and_metadata(tmp_path):
    source = Tiny()
    expected = _randomize(source, seed=1)
    assert sorted(expected) == ["layers.0", "layers.1", "layers.2"]  # the shared alias is not repeated
    path = tmp_path / "masks.safetensors"
    save_masks(source, path, module_types=TYPES)

    target = Tiny()
    load_masks(target, path, module_types=TYPES)
    for name, m in target.named_modules():
        if isinstance(m, StandInMasked):
            assert torch.equal(m.mask(), expected[name])
    assert torch.equal(target.shared.mask(), expected["layers.0"])

    meta = read_metadata(path)
    assert meta["format_version"] == 1
    assert meta["maskedbert_version"]
    total = sum(m.numel() for m in expected.values())
    kept = sum(int(m.sum()) for m in expected.values())
    assert meta["sparsity"] == pytest.approx(1 - kept / total)
    entry = meta["masks"]["layers.1"]
    assert entry["shape"] == [13, 6] and entry["kept"] == int(expected["layers.1"].sum())
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_stored_tensors_are_the_lead_bit_packing(tmp_path):
    from safetensors.torch import load_file

    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, 0] = mask[0, 9] = mask[1, 3] = True
    path = tmp_path / "m.safetensors"
    save_masks({"w": mask}, path)
    raw = load_file(path)["w"]
    assert raw.dtype == torch.uint8 and raw.tolist() == [[1, 2], [8, 0]]


def test_dict_round_trip_any_shape(tmp_path):
    gen = torch.Generator().manual_seed(2)
    masks = {
        "sparsity_0.1/layer.0": torch.rand(7, 11, generator=gen) > 0.5,
        "vector": torch.rand(19, generator=gen) > 0.5,
        "cube": torch.rand(2, 3, 5, generator=gen) > 0.5,
        "empty": torch.zeros(0, 4, dtype=torch.bool),
        "topk": topk_mask(torch.randn(9, 9, generator=gen), 0.5),
    }
    path = tmp_path / "sub" / "imp_round_1.safetensors"  # the folder is created
    save_masks(masks, path)
    loaded = load_mask_dict(path)
    assert sorted(loaded) == sorted(masks)
    for name, mask in masks.items():
        assert loaded[name].dtype == torch.bool and torch.equal(loaded[name], mask)


def test_overwrite_is_atomic_and_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_masks({"a": torch.ones(3, 3, dtype=torch.bool)}, path)
    before = path.read_bytes()

    import maskedbert.masks

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(maskedbert.masks, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_masks({"a": torch.zeros(3, 3, dtype=torch.bool)}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_wrong_names_or_shapes_fail_and_change_nothing(tmp_path):
    source = Tiny()
    _randomize(source, seed=3)
    path = tmp_path / "m.safetensors"
    save_masks(source, path, module_types=TYPES)

    def snapshot(model):
        return {n: m.mask() for n, m in model.named_modules() if isinstance(m, StandInMasked)}

    other_shapes = Tiny(shapes=((6, 13), (13, 6), (3, 10)))
    before = snapshot(other_shapes)
    with pytest.raises(ValueError, match=r"layers\.2: file \(3, 9\), model \(3, 10\)"):
        load_masks(other_shapes, path, module_types=TYPES)
    assert all(torch.equal(before[n], m) for n, m in snapshot(other_shapes).items())

    fewer = Tiny(shapes=((6, 13), (13, 6)))
    before = snapshot(fewer)
    with pytest.raises(ValueError, match=r"layers the model lacks \['layers\.2'\]"):
        load_masks(fewer, path, module_types=TYPES)
    assert all(torch.equal(before[n], m) for n, m in snapshot(fewer).items())
    load_masks(fewer, path, strict=False, module_types=TYPES)  # the common layers load
    assert torch.equal(fewer.layers[1].mask(), source.layers[1].mask())


def test_bad_files_and_arguments(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(FileNotFoundError):
        load_mask_dict(tmp_path / "missing.safetensors")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2, 2, dtype=torch.uint8)}, plain)
    with pytest.raises(ValueError, match="not a maskedbert mask file"):
        load_mask_dict(plain)
    future = tmp_path / "future.safetensors"
    meta = {"format_version": 99, "masks": {"w": {"shape": [2, 2]}}}
    save_file({"w": torch.zeros(2, 1, dtype=torch.uint8)}, future, metadata={"maskedbert": json.dumps(meta)})
    with pytest.raises(ValueError, match="format version 99"):
        load_mask_dict(future)
    lying = tmp_path / "lying.safetensors"
    meta = {"format_version": 1, "masks": {"w": {"shape": [2, 20]}}}
    save_file({"w": torch.zeros(2, 1, dtype=torch.uint8)}, lying, metadata={"maskedbert": json.dumps(meta)})
    with pytest.raises(ValueError, match=r"uint8 \[2, 3\]"):
        load_mask_dict(lying)

    broken = tmp_path / "broken.safetensors"
    meta = {"format_version": 1, "masks": {"w": {"shape": "2x2"}}}
    save_file({"w": torch.zeros(2, 1, dtype=torch.uint8)}, broken, metadata={"maskedbert": json.dumps(meta)})
    with pytest.raises(ValueError, match="no valid 'shape'"):
        load_mask_dict(broken)

    with pytest.raises(TypeError, match="bool tensor"):
        save_masks({"w": torch.ones(2, 2)}, tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="model_or_masks"):
        save_masks([torch.ones(2, 2, dtype=torch.bool)], tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="no masked layers"):
        save_masks(nn.Linear(2, 2), tmp_path / "x.safetensors", module_types=TYPES)
    assert not (tmp_path / "x.safetensors").exists()


def test_real_masked_linear_round_trip(tmp_path):
    modules = pytest.importorskip("maskedbert.modules")
    gen = torch.Generator().manual_seed(4)

    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(13, 9), nn.ReLU(), nn.Linear(9, 5))

    for mode in ("scores", "fixed"):
        model = build()
        model[0] = modules.MaskedLinear.from_linear(model[0], mode=mode, sparsity=0.5)
        model[2] = modules.MaskedLinear.from_linear(model[2], mode=mode, sparsity=0.0)
        model[2].set_mask_(torch.rand(5, 9, generator=gen) > 0.3)
        x = torch.randn(4, 13, generator=gen)
        expected = model(x)
        path = tmp_path / f"{mode}.safetensors"
        save_masks(model, path)
        assert sorted(load_mask_dict(path)) == ["0", "2"]

        fresh = build()
        fresh[0] = modules.MaskedLinear.from_linear(fresh[0], mode=mode)
        fresh[2] = modules.MaskedLinear.from_linear(fresh[2], mode=mode)
        load_masks(fresh, path)
        assert torch.equal(fresh[0].mask(), model[0].mask())
        assert torch.equal(fresh[2].mask(), model[2].mask())
        torch.testing.assert_close(fresh(x), expected, rtol=0, atol=0)


@pytest.mark.gpu
def test_cuda_masks_round_trip(tmp_path, cuda_device):
    modules = pytest.importorskip("maskedbert.modules")
    model = nn.Sequential(nn.Linear(64, 48), nn.Linear(48, 10)).to(cuda_device)
    model[0] = modules.MaskedLinear.from_linear(model[0], mode="fixed", sparsity=0.7)
    model[1] = modules.MaskedLinear.from_linear(model[1], mode="scores", sparsity=0.3)
    path = tmp_path / "cuda.safetensors"
    save_masks(model, path)
    fresh = nn.Sequential(nn.Linear(64, 48), nn.Linear(48, 10)).to(cuda_device)
    fresh[0] = modules.MaskedLinear.from_linear(fresh[0], mode="fixed")
    fresh[1] = modules.MaskedLinear.from_linear(fresh[1], mode="scores")
    load_masks(fresh, path)
    for a, b in zip(model, fresh):
        assert b.mask().device.type == "cuda" and torch.equal(a.mask(), b.mask())
