"""SAM pseudo-labels: slices in, one mask per prompted slice out (paper section 2.2, Figure 1).

``SamSegmenter`` gives, slice for slice, what ``segment_anything.SamPredictor.set_image`` followed by
``predict(point_coords, point_labels, box, multimask_output=False)`` gives (the public code's loop),
but runs the image encoder once per batch of slices and never on slices without a prompt, and can
reuse image embeddings from an ``EmbeddingCache`` (the S3F pass prompts SAM again on the same slices).
Slices are ``HxW`` = YxX (``volume[:, :, z].T``, ``clisc.stages.slice_input``); prompts follow ``clisc.stages.prompts`` (x = column).
"""
from __future__ import annotations

import hashlib
import io
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from segment_anything.modeling import MaskDecoder, Sam
from segment_anything.utils.transforms import ResizeLongestSide
from tqdm import tqdm

from clisc.cache import atomic_write_bytes
from clisc.compute import autocast, check_precision, prefetch
from clisc.foundation.sam import model_tag as sam_model_tag
from clisc.stages.prompts import PromptSettings, SamPrompt, prompts_from_mask
from clisc.stages.slice_input import axial_slices, model_input_slices, volume_from_slices

logger = logging.getLogger(__name__)

EmbeddingKey = tuple[str, str]
Embedding = np.ndarray | torch.Tensor


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
    """SAM image embeddings (``Cxhxw``) keyed by (model tag, sha1 of the prepared slice).

    Held in memory as given (a torch tensor, on the GPU for a CUDA segmenter; least recently used
    first out beyond ``max_in_memory`` entries, unbounded if None) and, with ``directory``, also as
    ``directory/<model tag>/<sha1>.npy`` written atomically, so that a later pass or run reuses them.
    ViT-B embeddings are ``256x64x64``: 4 MiB per slice in float32, 2 MiB in float16 (the dtype the
    segmenter stores for half precision). Disk writes run in a background thread (at most
    ``MAX_PENDING_WRITES`` queued; :meth:`flush` waits for them), so the GPU does not wait for the
    disk. ``hits`` and ``misses`` count lookups; the cache is safe to use from the segmenter's
    prefetch thread.
    """

    MAX_PENDING_WRITES = 32

    def __init__(self, directory: str | Path | None = None, max_in_memory: int | None = None):
        self.directory = Path(directory) if directory is not None else None
        self.max_in_memory = max_in_memory
        self._memory: OrderedDict[EmbeddingKey, Embedding] = OrderedDict()
        self._lock = threading.Lock()
        self._writer: ThreadPoolExecutor | None = None
        self._pending: deque[Future] = deque()
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

    def _remember(self, key: EmbeddingKey, embedding: Embedding) -> None:
        with self._lock:
            self._memory[key] = embedding
            self._memory.move_to_end(key)
            while self.max_in_memory is not None and len(self._memory) > self.max_in_memory:
                self._memory.popitem(last=False)

    def get(self, key: EmbeddingKey) -> Embedding | None:
        """The cached embedding (memory first, then disk as numpy) or None; counts a hit or a miss."""
        with self._lock:
            embedding = self._memory.get(key)
        path = self._path(key)
        if embedding is None and path is not None and not path.is_file() and self._pending:
            self.flush()  # it may be on its way to the disk
        if embedding is None and path is not None and path.is_file():
            embedding = np.load(path)
        with self._lock:
            if embedding is None:
                self.misses += 1
                return None
            self.hits += 1
        self._remember(key, embedding)
        return embedding

    def put(self, key: EmbeddingKey, embedding: Embedding) -> None:
        """Store a copy of an embedding in memory and, with a directory, on disk (atomically, its dtype)."""
        embedding = embedding.clone() if isinstance(embedding, torch.Tensor) else np.array(embedding)
        self._remember(key, embedding)
        path = self._path(key)
        if path is not None and not path.is_file():
            with self._lock:
                if self._writer is None:
                    self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sam-embedding-writer")
                self._pending.append(self._writer.submit(_write_npy, path, embedding))
                oldest = self._pending.popleft() if len(self._pending) > self.MAX_PENDING_WRITES else None
            if oldest is not None:
                oldest.result()

    def flush(self) -> None:
        """Wait until every embedding put so far is on disk (re-raising a failed write)."""
        with self._lock:
            pending, self._pending = list(self._pending), deque()
        for future in pending:
            future.result()

    def __len__(self) -> int:
        return len(self._memory)


def _write_npy(path: Path, embedding: Embedding) -> None:
    array = embedding.cpu().numpy() if isinstance(embedding, torch.Tensor) else embedding
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array))
    atomic_write_bytes(path, buffer.getvalue())


@dataclass
class _Batch:
    """One batch of prompted slices made ready on the host (possibly in the prefetch thread)."""

    index: list[int]  # positions in the caller's slice list
    keys: list[EmbeddingKey]
    found: list[Embedding | None]  # cached embeddings
    pixels: torch.Tensor | None  # Bxhxwx3 uint8 resized slices still to encode (pinned on CUDA)


def capped(indices: Sequence[int], max_slices: int | None) -> list[int]:
    """At most ``max_slices`` of ``indices`` (sorted), evenly spaced: the centres of ``max_slices``
    equal parts (one slice: the middle one, where the brain is largest): the schedule-length cap on the
    slices SAM sees (``sam.max_slices``: the paper-size smoke run on CPU)."""
    indices = list(indices)
    if max_slices is None or len(indices) <= max_slices:
        return indices
    n = len(indices)
    picks = sorted({min(int((i + 0.5) * n / max_slices), n - 1) for i in range(max_slices)})
    return [indices[j] for j in picks]


def logits_canvas(slices: Sequence[np.ndarray], prompts: Sequence[SamPrompt | None],
                  max_slices: int | None) -> tuple[np.ndarray, list[int]]:
    """``NxHxW`` float32 logits filled with -inf (no prompt) for ``N`` same-shaped ``HxW`` slices, and the
    prompted indices a segmenter fills (:func:`capped` by ``max_slices``); refuses mismatched inputs."""
    if len(slices) != len(prompts):
        raise ValueError(f"{len(slices)} slices but {len(prompts)} prompts")
    if len(slices) == 0:
        return np.zeros((0, 0, 0), dtype=np.float32), []
    shape = tuple(np.shape(slices[0]))
    if any(np.shape(s) != shape for s in slices):
        raise ValueError("all slices must have the same HxW shape")
    logits = np.full((len(slices), *shape), -np.inf, dtype=np.float32)
    return logits, capped([i for i, p in enumerate(prompts) if p is not None], max_slices)


class SamSegmenter:
    """Batched, cached SAM inference over 2D slices with one prompt set per slice.

    ``batch_size`` slices go through ``sam.image_encoder`` in one forward and through the prompt
    encoder + mask decoder in one forward per prompt layout; ``equalize`` applies the public code's
    histogram equalisation in ``prepare_slice``; ``cache`` reuses embeddings, keyed by
    ``model_tag`` (default: ``clisc.foundation.sam.model_tag(sam)``, a hash of the weights, plus the
    precision when it is not fp32). ``max_slices`` caps the prompted slices of one ``segment`` call
    (``capped``; the others stay empty, as unprompted ones). ``precision`` "bf16"/"fp16" autocasts the image encoder on CUDA
    (the decoder stays fp32); on CUDA the next batch is prepared in a background thread and copied
    through pinned memory while the current one runs.
    """

    def __init__(
        self,
        sam: Sam,
        batch_size: int = 8,
        equalize: bool = False,
        cache: EmbeddingCache | None = None,
        device: str | torch.device = "cpu",
        model_tag: str | None = None,
        precision: str = "fp32",
        max_slices: int | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        check_precision(precision, device, "sam.precision")
        self.sam = sam.to(device).eval()
        self.batch_size = batch_size
        self.equalize = equalize
        self.cache = cache
        self.device = torch.device(device)
        self.precision = precision
        self.transform = ResizeLongestSide(sam.image_encoder.img_size)
        self._model_tag = model_tag
        if max_slices is not None and max_slices < 1:
            raise ValueError(f"max_slices must be >= 1 or None, got {max_slices}")
        self.max_slices = max_slices

    @property
    def key_tag(self) -> str:
        """``model_tag`` plus the slice cap when there is one: what SAM stages put in their keys (the
        embedding cache stays keyed by ``model_tag``: a slice's embedding does not depend on the cap)."""
        return self.model_tag if self.max_slices is None else f"{self.model_tag}-max{self.max_slices}slices"

    @property
    def model_tag(self) -> str:
        """Names the weights AND the encoder precision: half-precision embeddings are cached apart."""
        if self._model_tag is None:
            self._model_tag = sam_model_tag(self.sam)
        return self._model_tag if self.precision == "fp32" else f"{self._model_tag}-{self.precision}"

    @property
    def _storage_dtype(self) -> torch.dtype:
        return torch.float32 if self.precision == "fp32" else torch.float16

    def _prepare(self, prepared: list[np.ndarray], index: list[int]) -> _Batch:
        """Host side of a batch of prepared ``HxWx3`` uint8 slices: cache lookups and the resized
        pixels still to encode."""
        cache = self.cache
        keys = [EmbeddingCache.key(self.model_tag, p) for p in prepared] if cache is not None else []
        found = [cache.get(k) for k in keys] if cache is not None else [None] * len(index)
        todo = [self.transform.apply_image(p) for p, e in zip(prepared, found) if e is None]
        pixels = torch.from_numpy(np.stack(todo)) if todo else None
        if pixels is not None and self.device.type == "cuda":
            pixels = pixels.pin_memory()
        return _Batch(index, keys, found, pixels)

    def _prepare_slices(self, slices: Sequence[np.ndarray], index: list[int]) -> _Batch:
        return self._prepare([prepare_slice(slices[i], self.equalize) for i in index], index)

    @torch.inference_mode()
    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Resized ``Bxhxwx3`` uint8 images -> ``BxCxh'xw'`` float32 embeddings, one encoder forward."""
        batch = pixels.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        with autocast(self.device, self.precision):
            embeddings = self.sam.image_encoder(self._normalise(batch))
        return embeddings.to(self._storage_dtype).float()  # what the cache will hand back later

    def _normalise(self, batch: torch.Tensor) -> torch.Tensor:
        """Resized ``Bx3xhxw`` float 0-255 pixels -> the encoder's input: SAM's ``(x - mean) / std`` and
        zero-padding to a square (``Sam.preprocess``); MedSAM overrides it (``sam_variants``)."""
        return self.sam.preprocess(batch)

    def _upsample(self, low_res: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """Low-resolution logits ``Bx1xh''xw''`` -> ``BxHxW`` logits of the original slice (SAM's
        ``postprocess_masks``: upscale to the padded input, crop the padding, resize)."""
        input_size = self.transform.get_preprocess_shape(*original_size, self.transform.target_length)
        return self.sam.postprocess_masks(low_res, input_size, original_size)[:, 0]

    def _embeddings(self, batch: _Batch) -> list[torch.Tensor]:
        """Embeddings ``Cxh'xw'`` (float32, on the device) of a prepared batch; new ones are cached."""
        embeddings = [None if e is None else torch.as_tensor(e, device=self.device).float() for e in batch.found]
        if batch.pixels is not None:
            todo = [j for j, e in enumerate(embeddings) if e is None]
            for j, embedding in zip(todo, self._encode(batch.pixels)):
                embeddings[j] = embedding
                if self.cache is not None:
                    self.cache.put(batch.keys[j], embedding.to(self._storage_dtype))
        return embeddings  # type: ignore[return-value]

    def embed(self, prepared: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Embeddings ``Cxh'xw'`` of prepared same-shaped ``HxWx3`` uint8 slices: cached ones looked
        up, all the others encoded together in ONE forward."""
        embeddings = self._embeddings(self._prepare(list(prepared), list(range(len(prepared)))))
        if self.cache is not None:
            self.cache.flush()
        return embeddings

    @torch.inference_mode()
    def _decode(self, embeddings: torch.Tensor, prompts: Sequence[SamPrompt], original_size: tuple[int, int]
                ) -> torch.Tensor:
        """Mask logits ``BxHxW`` of B slices sharing one prompt layout (same number of points, box or
        not): ``embeddings`` ``BxCxh'xw'``; prompt encoder + mask decoder (single mask) + postprocess."""
        points = boxes = None
        if prompts[0].has_points:
            coords = np.stack([self.transform.apply_coords(p.points, original_size) for p in prompts])
            labels = np.stack([p.point_labels for p in prompts])
            points = (torch.as_tensor(coords, dtype=torch.float, device=self.device),
                      torch.as_tensor(labels, dtype=torch.int, device=self.device))
        if prompts[0].box is not None:
            box = self.transform.apply_boxes(np.stack([p.box for p in prompts]), original_size)
            boxes = torch.as_tensor(box, dtype=torch.float, device=self.device)
        sparse, dense = self.sam.prompt_encoder(points=points, boxes=boxes, masks=None)
        low_res = _predict_masks(self.sam.mask_decoder, embeddings, self.sam.prompt_encoder.get_dense_pe(),
                                 sparse, dense)
        return self._upsample(low_res, original_size)

    def _decode_batch(self, embeddings: list[torch.Tensor], prompts: Sequence[SamPrompt],
                      original_size: tuple[int, int]) -> np.ndarray:
        """Mask logits ``BxHxW`` float32 (host) of a batch, decoded one prompt layout at a time."""
        layouts: dict[tuple[int, bool], list[int]] = {}
        for j, prompt in enumerate(prompts):
            layouts.setdefault((len(prompt.points), prompt.box is not None), []).append(j)
        out = np.empty((len(prompts), *original_size), dtype=np.float32)
        for group in layouts.values():
            stacked = torch.stack([embeddings[j] for j in group])
            out[group] = self._decode(stacked, [prompts[j] for j in group], original_size).float().cpu().numpy()
        return out

    def segment_logits(self, slices: Sequence[np.ndarray], prompts: Sequence[SamPrompt | None]) -> np.ndarray:
        """SAM mask logits ``NxHxW`` float32 for ``N`` same-shaped ``HxW`` slices; -inf where no prompt."""
        logits, prompted = logits_canvas(slices, prompts, self.max_slices)
        if len(slices) == 0:
            return logits
        shape = logits.shape[1:]
        chunks = [prompted[s:s + self.batch_size] for s in range(0, len(prompted), self.batch_size)]
        for batch in tqdm(self._batches(slices, chunks), total=len(chunks), desc="SAM", unit="batch",
                          disable=None, leave=False):
            embeddings = self._embeddings(batch)
            logits[batch.index] = self._decode_batch(embeddings, [prompts[i] for i in batch.index], shape)
        if self.cache is not None:
            self.cache.flush()  # on disk before the stage is published
            logger.debug("embedding cache: %d hits, %d misses", self.cache.hits, self.cache.misses)
        return logits

    def _batches(self, slices: Sequence[np.ndarray], chunks: list[list[int]]) -> Iterator[_Batch]:
        """Prepared batches in order; on CUDA the next ones are prepared in a thread meanwhile."""
        return prefetch((self._prepare_slices(slices, chunk) for chunk in chunks), self.device.type == "cuda")

    def segment(self, slices: Sequence[np.ndarray], prompts: Sequence[SamPrompt | None]) -> np.ndarray:
        """SAM masks ``NxHxW`` bool (logits > ``sam.mask_threshold``); empty where the prompt is None."""
        return self.segment_logits(slices, prompts) > self.sam.mask_threshold


def _predict_masks(decoder: MaskDecoder, embeddings: torch.Tensor, image_pe: torch.Tensor,
                   sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """Low-resolution mask logits ``Bx1xh''xw''`` (the single-mask output) of B images, each with its
    own prompt set: segment_anything's ``MaskDecoder.predict_masks`` pairs ONE image with B prompt
    sets (``repeat_interleave`` of the image embedding); this pairs ``embeddings[b]`` with
    ``sparse[b]``/``dense[b]``, the same computation batched over slices."""
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1), sparse), dim=1)
    src = embeddings + dense
    pos_src = image_pe.expand(src.shape[0], -1, -1, -1)
    b, c, h, w = src.shape
    hs, src = decoder.transformer(src, pos_src, tokens)
    mask_tokens_out = hs[:, 1:(1 + decoder.num_mask_tokens), :]
    upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
    hyper_in = decoder.output_hypernetworks_mlps[0](mask_tokens_out[:, 0, :])[:, None]  # mask 0: single output
    b, c, h, w = upscaled.shape
    return (hyper_in @ upscaled.view(b, c, h * w)).view(b, 1, h, w)


def segment_volume(
    image: np.ndarray,
    masks: np.ndarray,
    settings: PromptSettings,
    segmenter: SamSegmenter,
    cams: np.ndarray | None = None,
) -> np.ndarray:
    """SAM pseudo-label ``XxYxZ`` bool of a volume from its per-slice ROI masks (``XxYxZ``).

    Slice z is seen as ``image[:, :, z].T`` (``clisc.stages.slice_input.axial_slices``) and prompted
    from ``masks[:, :, z].T`` (and ``cams[:, :, z].T`` for the "official" variant); SAM's masks are
    transposed back;
    slices with an empty ROI stay empty and are never encoded.
    """
    if image.ndim != 3 or masks.shape != image.shape or (cams is not None and cams.shape != image.shape):
        raise ValueError(f"image, masks (and cams) must share one XxYxZ shape; got {image.shape}, "
                         f"{masks.shape}")
    depth = image.shape[2]
    if depth == 0:
        return np.zeros(image.shape, dtype=bool)
    slices = list(axial_slices(image))  # each HxW = YxX, the display layout (clisc.stages.slice_input)
    rois = axial_slices(masks)
    cams_2d = None if cams is None else axial_slices(cams)
    prompts = [
        prompts_from_mask(rois[z], settings, None if cams_2d is None else cams_2d[z], slices[z])
        for z in range(depth)
    ]
    return volume_from_slices(segmenter.segment(slices, prompts))
