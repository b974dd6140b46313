"""The many-seed fine-tuning stability study (Mosbach et al., ICLR 2021) behind `maskedbert stability`."""
