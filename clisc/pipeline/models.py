"""Foundation models for a run, loaded once per process and shared by every method of an experiment."""
from __future__ import annotations

import functools

from clisc.pipeline.settings import FoundationSettings, SamSettings

TINY = "tiny"


def clip_arch(fs: FoundationSettings) -> str:
    return TINY if fs.size == TINY else fs.clip_arch


def sam_arch(fs: FoundationSettings, sam: SamSettings) -> str:
    """The SAM-stage model to build: ``sam.model``, or at ``foundation.size=tiny`` the tiny random-weight
    model of its family (``SamArch.tiny``: SAM, MedSAM's normalisation, or a small Hiera)."""
    from clisc.foundation.sam import SAM_ARCHS

    return SAM_ARCHS[sam.model].tiny if fs.size == TINY else sam.model


@functools.lru_cache(maxsize=4)
def load_clip_cached(arch: str, weights: str, device: str):
    """``ClipModel`` (see clisc.foundation.clip); random weights are seeded so runs repeat."""
    import torch

    from clisc.foundation.clip import load_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return load_clip(arch=arch, weights=weights, device=device)


@functools.lru_cache(maxsize=4)
def load_sam_cached(arch: str, weights: str, device: str):
    """``(Sam, WeightsRecord)``; random weights are seeded so runs repeat."""
    import torch

    from clisc.foundation.sam import load_sam

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return load_sam(arch=arch, weights=weights, device=device)


def new_resnet(fs: FoundationSettings, head: str, seed: int):
    """A fresh classifier (ImageNet or random init, seeded head) and its weights record."""
    import torch

    from clisc.foundation.resnet import build_resnet50

    weights = "random" if fs.weights == "random" else "imagenet"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_resnet50(weights=weights, size=fs.size, head=head)
