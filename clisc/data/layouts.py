"""The dataset layouts clisc reads, declared as data: file patterns, which file (or channel) holds each
modality, and the map from a layout's label values to BraTS's (0 background, 1 necrosis/non-enhancing,
2 oedema, 4 enhancing). Labels are mapped on load, so the whole tumour is ``labels > 0`` in every layout
(``clisc.data.io.whole_tumour``). Sources of each map: docs/DATASETS.md.
"""
from __future__ import annotations

from dataclasses import dataclass

MODALITIES = ("FLAIR", "T2")
BRATS_LABELS = (0, 1, 2, 4)


@dataclass(frozen=True)
class Layout:
    """One dataset layout.

    ``images`` maps a modality to the image file's stem (``{case}`` = the case id) for per-case folder
    layouts, or to the channel name in ``dataset.json``'s ``modality`` for MSD. ``label_map`` maps every
    label value the layout may hold to a BraTS label (0 = not tumour).
    """

    name: str
    description: str
    images: dict[str, str]
    seg: str
    label_map: dict[int, int]
    channels: int | None = None  # the 4th dimension of a multi-channel image file (MSD)

    @property
    def tumour_labels(self) -> tuple[int, ...]:
        """The layout's own label values that are whole tumour."""
        return tuple(sorted(k for k, v in self.label_map.items() if v > 0))


LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    Layout("brats2020", "BraTS 2018/2020/2021: <case>/<case>_{flair,t1,t1ce,t2,seg}.nii[.gz]",
           images={"FLAIR": "{case}_flair", "T2": "{case}_t2"}, seg="{case}_seg",
           label_map={0: 0, 1: 1, 2: 2, 4: 4}),
    Layout("brats2023", "BraTS 2023/2024 GLI: BraTS-GLI-XXXXX-YYY/BraTS-GLI-XXXXX-YYY-{t1n,t1c,t2w,t2f,seg}.nii.gz; "
           "labels 1 NCR, 2 ED, 3 ET, and (2024) 4 resection cavity, which is not tumour",
           images={"FLAIR": "{case}-t2f", "T2": "{case}-t2w"}, seg="{case}-seg",
           label_map={0: 0, 1: 1, 2: 2, 3: 4, 4: 0}),
    Layout("msd", "Medical Segmentation Decathlon Task01_BrainTumour: dataset.json, imagesTr/BRATS_XXX.nii.gz "
           "(4D, channels named by dataset.json 'modality'), labelsTr/BRATS_XXX.nii.gz; labels 1 edema, "
           "2 non-enhancing tumour, 3 enhancing tumour",
           images={"FLAIR": "FLAIR", "T2": "T2w"}, seg="{case}",
           label_map={0: 0, 1: 2, 2: 1, 3: 4}, channels=4),
)}
SYNTH_LAYOUTS = tuple(LAYOUTS)


def get_layout(name: str) -> Layout:
    """The layout named ``name``; ValueError listing the known ones otherwise."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; known: {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def check_modality(modality: str) -> str:
    """``modality`` upper-cased; ValueError unless it is one of ``MODALITIES``."""
    upper = modality.upper()
    if upper not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; known: {', '.join(MODALITIES)}")
    return upper
