"""Foundation models: CLIP (``clip``), SAM (``sam``), ResNet50 (``resnet``) and the weights registry.

Submodules are imported on use (``from clisc.foundation.clip import load_clip``) so that importing the
package does not pull in open_clip or segment_anything.
"""
from clisc.foundation.weights import (
    WEIGHTS,
    WeightSpec,
    WeightsRecord,
    default_cache_dir,
    resolve_weights,
    sha256_file,
)

__all__ = ["WEIGHTS", "WeightSpec", "WeightsRecord", "default_cache_dir", "resolve_weights", "sha256_file"]
