"""Triton kernels (with PyTorch reference twins) for masked linear layers and exact sparsity.

Installed as `maskedbert.kernels`; never imports transformers.
"""
from .bitpack import PACKED_FORMAT_VERSION, pack_mask, unpack_mask
from .masked_linear import masked_linear
from .magnitude import magnitude_masks
from .nm_mask import nm_mask
from .topk import TopkTracker, num_pruned, topk_mask, topk_masks

__all__ = ["masked_linear", "pack_mask", "unpack_mask", "PACKED_FORMAT_VERSION",
           "topk_mask", "topk_masks", "TopkTracker", "num_pruned", "magnitude_masks", "nm_mask"]
