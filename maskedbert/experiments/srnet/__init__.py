"""Sparse and robust subnetworks (Liu et al., NeurIPS 2022): the `maskedbert srnet` study."""
