"""Synthetic BraTS-format FLAIR dataset (MNI152 anatomy + irregular gliomas): the embedded default data."""
from clisc.data.synth.writer import case_id, synthesize_case, synthesize_dataset

__all__ = ["case_id", "synthesize_case", "synthesize_dataset"]
