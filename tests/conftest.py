"""Shared fixtures: the real BraTS sample (skipped when absent) and tiny synthetic BraTS folders."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import importlib.util

import nibabel as nib
import numpy as np
import pytest

BRATS_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats-sample"
TINY_SHAPE = (32, 32, 24)
TINY_AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 31.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])


def write_brats_case(root: Path, case_id: str, seed: int = 0, shape: tuple[int, int, int] = TINY_SHAPE,
                     suffix: str = ".nii.gz") -> tuple[Path, Path]:
    """Write ``root/<case>/<case>_flair`` (int16) and ``_seg`` (uint8, labels 1/2/4 in a blob).

    The brain is an ellipsoid of intensity ~100 with zero background, the tumour a bright sphere
    (radius ~ shape/6) inside it. Returns the (flair, seg) paths.
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"))
    centre = np.array(shape, dtype=float)[:, None, None, None] / 2
    radii = np.array(shape, dtype=float)[:, None, None, None] * 0.4
    brain = (((grid - centre) / radii) ** 2).sum(0) <= 1
    tumour_centre = centre + rng.uniform(-0.15, 0.15, size=(3, 1, 1, 1)) * radii
    distance = np.sqrt(((grid - tumour_centre) ** 2).sum(0))
    radius = min(shape) / 6
    seg = np.zeros(shape, dtype=np.uint8)
    seg[(distance <= radius) & brain] = 2
    seg[(distance <= 0.6 * radius) & brain] = 1
    seg[(distance <= 0.3 * radius) & brain] = 4
    flair = np.where(brain, rng.normal(100, 10, size=shape), 0.0)
    flair[seg > 0] += 120
    folder = root / case_id
    folder.mkdir(parents=True, exist_ok=True)
    flair_path, seg_path = folder / f"{case_id}_flair{suffix}", folder / f"{case_id}_seg{suffix}"
    nib.save(nib.Nifti1Image(np.clip(flair, 1, None).astype(np.int16) * brain, TINY_AFFINE), flair_path)
    nib.save(nib.Nifti1Image(seg, TINY_AFFINE), seg_path)
    return flair_path, seg_path


def write_reoriented_case(case_dir: Path, root: Path, axcodes: tuple[str, str, str]) -> Path:
    """Copy every NIfTI file of ``case_dir`` into ``root/<case>/`` with its voxels reordered to
    nibabel axis codes ``axcodes`` (same world coordinates, same voxel values); returns the folder."""
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    folder = root / case_dir.name
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(case_dir.glob("*.nii*")):
        image = nib.load(path)
        image = image.as_reoriented(ornt_transform(io_orientation(image.affine), axcodes2ornt(axcodes)))
        nib.save(image, folder / path.name)
    return folder


PROJECT_REPORTS = Path(__file__).resolve().parents[1] / "reports"


def _report_files() -> set[Path]:
    return set(PROJECT_REPORTS.rglob("*")) if PROJECT_REPORTS.is_dir() else set()


@pytest.fixture(autouse=True)
def _project_reports_untouched():
    """No test writes into the project's reports/ (a search's plots once landed in reports/search/)."""
    before = _report_files()
    yield
    new = sorted(str(p.relative_to(PROJECT_REPORTS)) for p in _report_files() - before)
    assert not new, f"this test wrote into the project's reports/: {new[:5]}"


@pytest.fixture(scope="session", autouse=True)
def _split_folder(tmp_path_factory: pytest.TempPathFactory):
    """Split files go to a session temp folder ($CLISC_SPLITS_DIR), never to the checkout's splits/."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLISC_SPLITS_DIR", str(tmp_path_factory.mktemp("splits")))
        yield


@pytest.fixture
def reoriented_case_writer() -> Callable[..., Path]:
    """:func:`write_reoriented_case`: a case stored in another voxel order."""
    return write_reoriented_case


@pytest.fixture(scope="session")
def brats_sample() -> Path:
    """The 12 real BraTS 2018 cases in ``<repo>/../shared/data/brats-sample``; skips when absent."""
    if not BRATS_SAMPLE.is_dir():
        pytest.skip(f"BraTS sample not found at {BRATS_SAMPLE}")
    return BRATS_SAMPLE


@pytest.fixture
def tiny_brats_dir(tmp_path: Path) -> Path:
    """A folder with 3 synthetic cases ``BraTS20_Training_001..003`` (32x32x24) in BraTS2020 layout."""
    root = tmp_path / "brats"
    for index in range(1, 4):
        write_brats_case(root, f"BraTS20_Training_{index:03d}", seed=index)
    return root


@pytest.fixture
def brats_case_writer() -> Callable[..., tuple[Path, Path]]:
    """:func:`write_brats_case` for tests that need other names, shapes or suffixes."""
    return write_brats_case


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 small synthetic BraTS-format cases (96x96x64, split 7/1/2), made once per test session for
    the end-to-end pipeline, experiment and search tests (with the ``tiny`` profile)."""
    from clisc.data.synth import synthesize_dataset

    root = tmp_path_factory.mktemp("synthetic")
    synthesize_dataset(root, 10, seed=0, shape=(96, 96, 64), progress=False)
    return root


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-integration", action="store_true",
                     help="run the integration tests (real PostgreSQL and MLflow servers; make test-integration)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration tests are skipped unless --run-integration (make test-integration) asks for them."""
    if config.getoption("--run-integration"):
        return
    skip = pytest.mark.skip(reason="integration test (real servers): run with `make test-integration`")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


def _load_fakes():
    """tests/tracking/fakes.py (fake MethodResults, MLflow store template) as a module, whatever sys.path is."""
    spec = importlib.util.spec_from_file_location("clisc_test_fakes", Path(__file__).with_name("tracking") / "fakes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_FAKES = _load_fakes()


@pytest.fixture(scope="session")
def fakes():
    """The fake-results helpers (tests/tracking/fakes.py)."""
    return _FAKES


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One empty SQLite MLflow store per test module, copied from the session's migrated template."""
    return _FAKES.fresh_store(tmp_path_factory)
