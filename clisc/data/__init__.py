"""BraTS data: discovery, loading + validation, preprocessing (+ cache), split, dataset check."""
from clisc.data.check import CaseCheck, check_dataset
from clisc.data.discovery import CaseFiles, dataset_fingerprint, discover_cases
from clisc.data.io import VALID_LABELS, RawCase, load_case, whole_tumour
from clisc.data.preprocessing import PreprocessedStore, PreprocessSettings, Volume, load_volumes, preprocess
from clisc.data.split import SPLITS, import_public_split, load_or_create_split, make_split, read_split_csv

__all__ = [
    "CaseCheck", "check_dataset", "CaseFiles", "dataset_fingerprint", "discover_cases", "VALID_LABELS",
    "RawCase", "load_case", "whole_tumour", "PreprocessedStore", "PreprocessSettings", "Volume",
    "load_volumes", "preprocess", "SPLITS", "import_public_split", "load_or_create_split", "make_split",
    "read_split_csv",
]
