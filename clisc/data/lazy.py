"""Per-case data read from disk on access, so that memory does not grow with the number of cases.

``LazyVolumes`` is a sequence of preprocessed volumes backed by the preprocessed cache (only the
few most recently read are held); ``MappedSequence`` and ``LazyMapping`` give views of one field
(``volumes.images()``, labels by case id) without loading anything; ``NpzFolder`` is a mapping from
case id to the ``<case>.npz`` files of a stage's output folder (read on access, written atomically).
The iteration ``for v in volumes`` loads one volume at a time.
"""
from __future__ import annotations

import io
import operator
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

import numpy as np
from tqdm import tqdm

from clisc.cache import atomic_write_bytes
from clisc.data.discovery import CaseFiles
from clisc.data.preprocessing import PreprocessedStore, Volume

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class MappedSequence(Sequence[T], Generic[T]):
    """``fn(source[i])`` for each item ``i`` of ``source``, computed on access (nothing is held).

    Picklable when ``source`` and ``fn`` are (e.g. ``operator.attrgetter``), so DataLoader workers
    can be handed one.
    """

    def __init__(self, source: Sequence[Any], fn: Callable[[Any], T]):
        self.source, self.fn = source, fn

    def __len__(self) -> int:
        return len(self.source)

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> MappedSequence[T]: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return MappedSequence(self.source[index], self.fn)
        return self.fn(self.source[index])


class LazyMapping(Mapping[K, T], Generic[K, T]):
    """A read-only mapping over ``keys`` whose value ``fn(key)`` is computed on access."""

    def __init__(self, keys: Iterable[K], fn: Callable[[K], T]):
        self._keys, self.fn = list(keys), fn
        self._set = set(self._keys)

    def __getitem__(self, key: K) -> T:
        if key not in self._set:
            raise KeyError(key)
        return self.fn(key)

    def __iter__(self) -> Iterator[K]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


class LazyVolumes(Sequence[Volume]):
    """Preprocessed volumes of ``cases`` (in order), read from ``store`` on access.

    On construction every case missing from the preprocessed cache is preprocessed and written
    there, one at a time. Then ``volumes[i]`` reads the cache entry (a few tens of milliseconds for
    a BraTS volume); the ``keep`` most recently read volumes stay in memory, so reading the image
    and then the label of one case costs one read. ``case_ids`` needs no read.
    """

    def __init__(self, cases: Sequence[CaseFiles], store: PreprocessedStore, keep: int = 2,
                 progress: bool = False, _checked: bool = False):
        self.cases = list(cases)
        self.store = store
        self.keep = keep
        self.case_ids = [c.case_id for c in self.cases]
        self._index = {case_id: i for i, case_id in enumerate(self.case_ids)}
        self._recent: OrderedDict[int, Volume] = OrderedDict()
        if not _checked:
            missing = [c for c in self.cases if not store.path(c).is_file()]
            desc = f"preprocess ({store.settings.mode})"
            for files in tqdm(missing, desc=desc, unit="case", disable=not progress or not missing):
                store.load(files)  # computed and cached; not kept

    def __len__(self) -> int:
        return len(self.cases)

    @overload
    def __getitem__(self, index: int) -> Volume: ...

    @overload
    def __getitem__(self, index: slice) -> LazyVolumes: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return LazyVolumes(self.cases[index], self.store, self.keep, _checked=True)
        index = range(len(self.cases))[index]  # negative indices, IndexError
        volume = self._recent.get(index)
        if volume is None:
            volume = self.store.load(self.cases[index])
            self._recent[index] = volume
            while len(self._recent) > self.keep:
                self._recent.popitem(last=False)
        self._recent.move_to_end(index)
        return volume

    def __iter__(self) -> Iterator[Volume]:
        for i in range(len(self)):
            yield self[i]

    def by_id(self, case_id: str) -> Volume:
        """The volume of ``case_id`` (KeyError if it is not in this sequence)."""
        return self[self._index[case_id]]

    def select(self, case_ids: Iterable[str]) -> LazyVolumes:
        """The volumes of ``case_ids`` (a subset, in the given order)."""
        return LazyVolumes([self.cases[self._index[c]] for c in case_ids], self.store, self.keep, _checked=True)

    def images(self) -> MappedSequence[np.ndarray]:
        """``XxYxZ`` float32 images, read on access."""
        return MappedSequence(self, operator.attrgetter("image"))

    def labels(self) -> MappedSequence[np.ndarray]:
        """``XxYxZ`` uint8 whole-tumour labels, read on access."""
        return MappedSequence(self, operator.attrgetter("label"))

    def labels_by_id(self) -> LazyMapping[str, np.ndarray]:
        """``{case_id: XxYxZ label}``, read on access."""
        return LazyMapping(self.case_ids, self._label_of)

    def _label_of(self, case_id: str) -> np.ndarray:
        return self.by_id(case_id).label


class NpzFolder(MutableMapping[str, Any]):
    """``{case_id: arrays}`` over the files ``folder/<case_id>.npz``, read on access.

    With ``field`` a value is that one array of the file (only it is decompressed), else a dict of
    all of them; ``keys`` restricts the mapping to some cases (default: every file present).
    Assigning ``folder[case] = array`` (stored as ``field``) or ``= {name: array}`` writes the file
    atomically (compressed).
    """

    def __init__(self, folder: str | Path, field: str | None = None, keys: Iterable[str] | None = None):
        self.folder = Path(folder)
        self.field = field
        self._keys = None if keys is None else list(keys)

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def keys_present(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.npz")) if self.folder.is_dir() else []

    def __getitem__(self, key: str) -> Any:
        path = self._path(key)
        if (self._keys is not None and key not in self._keys) or not path.is_file():
            raise KeyError(key)
        with np.load(path, allow_pickle=False) as data:
            if self.field is not None:
                return data[self.field]
            return {name: data[name] for name in data.files}

    def __setitem__(self, key: str, value: np.ndarray | Mapping[str, np.ndarray]) -> None:
        if not isinstance(value, Mapping) and self.field is None:
            raise ValueError("an NpzFolder without a field stores dicts of arrays, not one array")
        arrays = dict(value) if isinstance(value, Mapping) else {self.field: np.asarray(value)}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        atomic_write_bytes(self._path(key), buffer.getvalue())
        if self._keys is not None and key not in self._keys:
            self._keys.append(key)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._path(key).unlink()
        if self._keys is not None:
            self._keys.remove(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys_present() if self._keys is None else list(self._keys))

    def __len__(self) -> int:
        return len(self.keys_present() if self._keys is None else self._keys)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (self._keys is None or key in self._keys) and self._path(key).is_file()

    def view(self, field: str | None = None, keys: Iterable[str] | None = None) -> NpzFolder:
        """The same files seen through another ``field`` and/or restricted to ``keys``."""
        return NpzFolder(self.folder, field, self._keys if keys is None else keys)
