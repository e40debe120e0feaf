"""SAM pseudo-labels: slices in, one mask per prompted slice out (paper section 2.2, Figure 1).

``SamSegmenter`` gives, slice for slice, what ``segment_anything.SamPredictor.set_image`` followed by
``predict(point_coords, point_labels, box, multimask_output=False)`` gives (the public code's loop),
but runs the image encoder once per batch of slices and never on slices without a prompt, and can
reuse image embeddings from an ``EmbeddingCache`` (the S3F pass prompts SAM again on the same slices).
Slices are ``HxW`` (``volume[:, :, z]``); prompts follow ``clisc.stages.prompts`` (x = column).
"""
from __future__ import annotations

import hashlib
import io
import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide
from tqdm import tqdm

from clisc.cache import atomic_write_bytes
from clisc.foundation.sam import model_tag as sam_model_tag
from clisc.stages.prompts import PromptSettings, SamPrompt, prompts_from_mask
from clisc.stages.slice_input import model_input_slices

logger = logging.getLogger(__name__)

EmbeddingKey = tuple[str, str]


def equalize_hist(image: np.ndarray) -> np.ndarray:
    """Histogram equalisation of an ``HxW`` uint8 image, computed as OpenCV's ``cv2.equalizeHist``.

    The lowest occupied grey level maps to 0 and the others to ``round(cdf_above_lowest x 255 /
    (pixels - count_of_lowest))`` (float32 arithmetic, round half to even as OpenCV's cvRound); a
    constant image is returned unchanged.
    """
    hist = np.bincount(image.ravel(), minlength=256)
    lowest = int(np.flatnonzero(hist)[0])
    total = image.size
    if hist[lowest] == total:
        return image.copy()
    scale = np.float32(255.0) / np.float32(total - hist[lowest])
    cumulative = np.cumsum(hist).astype(np.float32) - np.float32(hist[lowest])
    lut = np.clip(np.rint(cumulative * scale), 0, 255).astype(np.uint8)
    lut[: lowest + 1] = 0
    return lut[image]


def prepare_slice(image_slice: np.ndarray, equalize: bool = False) -> np.ndarray:
    """``HxW`` float slice -> ``HxWx3`` uint8 SAM input, as the public code prepares it.

    Min-max scaled to [0, 255] over the slice (``clisc.stages.slice_input.model_input_slices``; the
    pipeline hands in slices that already are model inputs, background black, for which this is the
    identity) and truncated to uint8 (a constant slice gives zeros), optionally
    histogram-equalised (``equalize_hist``), repeated on 3 identical channels.
    """
    unit = model_input_slices(np.asarray(image_slice)[None])[0]
    grey = (unit.astype(np.float64) * 255).astype(np.uint8)
    if equalize:
        grey = equalize_hist(grey)
    return np.repeat(grey[:, :, None], 3, axis=2)


class EmbeddingCache:
    """SAM image embeddings (``CxhXw`` float32) keyed by (model tag, sha1 of the prepared slice).

    Held in memory (least recently used first out beyond ``max_in_memory`` entries, unbounded if None)
    and, with ``directory``, also as ``directory/<model tag>/<sha1>.npy`` written atomically, so that
    a later pass or run reuses them. ViT-B embeddings are ``256x64x64`` float32: 4 MiB per slice.
    ``hits`` and ``misses`` count lookups.
    """

    def __init__(self, directory: str | Path | None = None, max_in_memory: int | None = None):
        self.directory = Path(directory) if directory is not None else None
        self.max_in_memory = max_in_memory
        self._memory: OrderedDict[EmbeddingKey, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(model_tag: str, prepared: np.ndarray) -> EmbeddingKey:
        """Key of a prepared ``HxWx3`` uint8 slice for a model (its shape is hashed with its bytes)."""
        digest = hashlib.sha1(str(prepared.shape).encode())
        digest.update(np.ascontiguousarray(prepared).tobytes())
        return model_tag, digest.hexdigest()

    def _path(self, key: EmbeddingKey) -> Path | None:
        return None if self.directory is None else self.directory / key[0] / f"{key[1]}.npy"

    def _remember(self, key: EmbeddingKey, embedding: np.ndarray) -> None:
        self._memory[key] = embedding
        self._memory.move_to_end(key)
        while self.max_in_memory is not None and len(self._memory) > self.max_in_memory:
            self._memory.popitem(last=False)

    def get(self, key: EmbeddingKey) -> np.ndarray | None:
        """The cached embedding (memory first, then disk) or None; counts a hit or a miss."""
        embedding = self._memory.get(key)
        path = self._path(key)
        if embedding is None and path is not None and path.is_file():
            embedding = np.load(path)
        if embedding is None:
            self.misses += 1
            return None
        self.hits += 1
        self._remember(key, embedding)
        return embedding

    def put(self, key: EmbeddingKey, embedding: np.ndarray) -> None:
        """Store an embedding in memory and, with a directory, on disk (atomically)."""
        embedding = np.ascontiguousarray(embedding, dtype=np.float32)
        self._remember(key, embedding)
        path = self._path(key)
        if path is not None and not path.is_file():
            buffer = io.BytesIO()
            np.save(buffer, embedding)
            atomic_write_bytes(path, buffer.getvalue())

    def __len__(self) -> int:
        return len(self._memory)


class SamSegmenter:
    """Batched, cached SAM inference over 2D slices with one prompt set per slice.

    ``batch_size`` slices go through ``sam.image_encoder`` in one forward; ``equalize`` applies the
    public code's histogram equalisation in ``prepare_slice``; ``cache`` reuses embeddings, keyed by
    ``model_tag`` (default: ``clisc.foundation.sam.model_tag(sam)``, a hash of the weights).
    """

    def __init__(
        self,
        sam: Sam,
        batch_size: int = 8,
        equalize: bool = False,
        cache: EmbeddingCache | None = None,
        device: str | torch.device = "cpu",
        model_tag: str | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sam = sam.to(device).eval()
        self.batch_size = batch_size
        self.equalize = equalize
        self.cache = cache
        self.device = torch.device(device)
        self.transform = ResizeLongestSide(sam.image_encoder.img_size)
        self._model_tag = model_tag

    @property
    def model_tag(self) -> str:
        if self._model_tag is None:
            self._model_tag = sam_model_tag(self.sam)
        return self._model_tag

    @torch.inference_mode()
    def _encode(self, resized: Sequence[np.ndarray]) -> torch.Tensor:
        """Resized ``hxwx3`` uint8 images -> ``BxCxh'xw'`` embeddings, one image_encoder forward."""
        batch = torch.stack([
            self.sam.preprocess(torch.as_tensor(image, device=self.device).permute(2, 0, 1).contiguous())
            for image in resized
        ])
        return self.sam.image_encoder(batch)

    def embed(self, prepared: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Embeddings ``Cxh'xw'`` of prepared ``HxWx3`` uint8 slices: cached ones looked up, all the
        others encoded together in ONE forward (``segment_logits`` passes ``batch_size`` at a time)."""
        cache = self.cache
        keys = [EmbeddingCache.key(self.model_tag, p) for p in prepared] if cache is not None else []
        found = [cache.get(k) for k in keys] if cache is not None else [None] * len(prepared)
        embeddings = [None if e is None else torch.as_tensor(e, device=self.device) for e in found]
        todo = [i for i, e in enumerate(embeddings) if e is None]
        if todo:
            encoded = self._encode([self.transform.apply_image(prepared[i]) for i in todo])
            for i, embedding in zip(todo, encoded):
                embeddings[i] = embedding
                if cache is not None:
                    cache.put(keys[i], embedding.cpu().numpy())
        return embeddings  # type: ignore[return-value]

    @torch.inference_mode()
    def _decode(self, embedding: torch.Tensor, prompt: SamPrompt, original_size: tuple[int, int]
                ) -> torch.Tensor:
        """Mask logits ``HxW`` for one slice: prompt_encoder + mask_decoder (single mask) + postprocess."""
        points = boxes = None
        if prompt.has_points:
            coords = self.transform.apply_coords(prompt.points, original_size)
            points = (
                torch.as_tensor(coords, dtype=torch.float, device=self.device)[None],
                torch.as_tensor(prompt.point_labels, dtype=torch.int, device=self.device)[None],
            )
        if prompt.box is not None:
            box = self.transform.apply_boxes(prompt.box, original_size)
            boxes = torch.as_tensor(box, dtype=torch.float, device=self.device)
        sparse, dense = self.sam.prompt_encoder(points=points, boxes=boxes, masks=None)
        low_res, _ = self.sam.mask_decoder(
            image_embeddings=embedding[None],
            image_pe=self.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        input_size = self.transform.get_preprocess_shape(*original_size, self.transform.target_length)
        return self.sam.postprocess_masks(low_res, input_size, original_size)[0, 0]

    def segment_logits(self, slices: Sequence[np.ndarray], prompts: Sequence[SamPrompt | None]) -> np.ndarray:
        """SAM mask logits ``NxHxW`` float32 for ``N`` same-shaped ``HxW`` slices; -inf where no prompt."""
        if len(slices) != len(prompts):
            raise ValueError(f"{len(slices)} slices but {len(prompts)} prompts")
        if len(slices) == 0:
            return np.zeros((0, 0, 0), dtype=np.float32)
        shape = tuple(np.shape(slices[0]))
        if any(np.shape(s) != shape for s in slices):
            raise ValueError("all slices must have the same HxW shape")
        logits = np.full((len(slices), *shape), -np.inf, dtype=np.float32)
        prompted = [i for i, p in enumerate(prompts) if p is not None]
        batches = range(0, len(prompted), self.batch_size)
        for start in tqdm(batches, desc="SAM", unit="batch", disable=None, leave=False):
            chunk = prompted[start : start + self.batch_size]
            embeddings = self.embed([prepare_slice(slices[i], self.equalize) for i in chunk])
            for i, embedding in zip(chunk, embeddings):
                logits[i] = self._decode(embedding, prompts[i], shape).cpu().numpy()  # type: ignore[arg-type]
        if self.cache is not None:
            logger.debug("embedding cache: %d hits, %d misses", self.cache.hits, self.cache.misses)
        return logits

    def segment(self, slices: Sequence[np.ndarray], prompts: Sequence[SamPrompt | None]) -> np.ndarray:
        """SAM masks ``NxHxW`` bool (logits > ``sam.mask_threshold``); empty where the prompt is None."""
        return self.segment_logits(slices, prompts) > self.sam.mask_threshold


def segment_volume(
    image: np.ndarray,
    masks: np.ndarray,
    settings: PromptSettings,
    segmenter: SamSegmenter,
    cams: np.ndarray | None = None,
) -> np.ndarray:
    """SAM pseudo-label ``XxYxZ`` bool of a volume from its per-slice ROI masks (``XxYxZ``).

    Slice z is prompted from ``masks[:, :, z]`` (and ``cams[:, :, z]`` for the "official" variant);
    slices with an empty ROI stay empty and are never encoded.
    """
    if image.ndim != 3 or masks.shape != image.shape or (cams is not None and cams.shape != image.shape):
        raise ValueError(f"image, masks (and cams) must share one XxYxZ shape; got {image.shape}, "
                         f"{masks.shape}")
    depth = image.shape[2]
    if depth == 0:
        return np.zeros(image.shape, dtype=bool)
    slices = [image[:, :, z] for z in range(depth)]
    prompts = [
        prompts_from_mask(masks[:, :, z], settings, None if cams is None else cams[:, :, z], slices[z])
        for z in range(depth)
    ]
    return np.moveaxis(segmenter.segment(slices, prompts), 0, -1)
