"""Triton kernels (with PyTorch reference twins) for masked linear layers and exact sparsity.

Installed as `maskedbert.kernels`; never imports transformers.
"""
from .bitpack import PACKED_FORMAT_VERSION, pack_mask, unpack_mask
from .masked_linear import masked_linear

__all__ = ["masked_linear", "pack_mask", "unpack_mask", "PACKED_FORMAT_VERSION"]
