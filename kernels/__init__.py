"""Triton kernels (with PyTorch reference twins) for masked linear layers and exact sparsity.

Installed as `maskedbert.kernels`; never imports transformers.

Run from the repository root, Python puts the root first on `sys.path`, where this folder would be
found as a top-level `kernels` package. That name belongs to the PyPI package `kernels`, which
transformers imports. Imported under that name, this file steps aside: it loads the next `kernels`
on the path (or raises ModuleNotFoundError as if the folder were not there), so the project's folder
is never used as `kernels`.
"""
import sys as _sys

if __name__ == "kernels":
    import importlib.machinery as _machinery
    import importlib.util as _util
    import os as _os

    _root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    _rest = [p for p in _sys.path if _os.path.abspath(p or _os.getcwd()) != _root]
    _spec = _machinery.PathFinder.find_spec("kernels", _rest)
    del _sys.modules["kernels"]
    if _spec is None or _spec.loader is None:
        raise ModuleNotFoundError("No module named 'kernels'", name="kernels")
    _module = _util.module_from_spec(_spec)
    _sys.modules["kernels"] = _module
    try:
        _spec.loader.exec_module(_module)
    except BaseException:
        _sys.modules.pop("kernels", None)
        raise
else:
    from .bitpack import PACKED_FORMAT_VERSION, pack_mask, unpack_mask
    from .magnitude import magnitude_masks
    from .masked_linear import masked_linear
    from .nm_mask import nm_mask
    from .topk import TopkTracker, num_pruned, topk_mask, topk_masks

    __all__ = ["masked_linear", "pack_mask", "unpack_mask", "PACKED_FORMAT_VERSION",
               "topk_mask", "topk_masks", "TopkTracker", "num_pruned", "magnitude_masks", "nm_mask"]
