"""The data sources: training images by name, what is installed, and how to get the rest.

`training_images` gives the images that a training configuration names (one of
`lpd.config.TRAINING_IMAGES`). `data_sources` lists every source (the generated
phantoms, the real CT that installs offline, `lpd.data.packaged_ct`'s chest CT,
`lpd.data.brain_mri`'s brain MRI, and the Mayo and LoDoPaB data that users
bring); `describe_sources` is the table that ``lpd datasets`` prints.

Environment variables (both optional): ``LPD_MAYO_DIR`` and ``LPD_LODOPAB_DIR``
(directories that `describe_sources` reports on). See ``data/README.md``.
"""

from __future__ import annotations

import importlib
import math
import os
from pathlib import Path

from lpd.config import TRAINING_IMAGES
from lpd.data import brain_mri, packaged_ct
from lpd.data.ct_units import read_dicom, source_entry
from lpd.data.head_ct import HEAD_CT_SPLITS, PYDICOM_CT_FILES, head_ct_path, load_inv3, pydicom_path
from lpd.data.lodopab import LODOPAB_COUNTS, LODOPAB_HOW
from lpd.data.mayo import DICOM_SUFFIXES, MAYO_HOW, scan_mayo_file
from lpd.data.pipelines import DataError, ImageSource, RandomPhantoms

__all__ = ["training_images", "source_entry", "data_sources", "describe_sources"]


def training_images(name: str, setup, split: str = "train") -> ImageSource:
    """The training (or validation) images called ``name``, on ``setup``'s grid.

    A phantom family gives `RandomPhantoms` (the same for every split: each
    sample is a new draw); a real set gives its ``split`` (``"train"``,
    ``"validation"``, ...) as an `ImageSet`.

    Raises
    ------
    ValueError
        For a name that is not in `lpd.config.TRAINING_IMAGES` (the message
        lists them).
    """
    try:
        provider = TRAINING_IMAGES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown training images {name!r}; choose one of "
                         f"{', '.join(TRAINING_IMAGES)}") from None
    if provider == "phantoms":
        return RandomPhantoms(name, tuple(setup.space.shape))
    module, _, function = provider.partition(":")
    return getattr(importlib.import_module(module), function)(setup, split)


def data_sources(mayo_dir: str | os.PathLike | None = None,
                 lodopab_dir: str | os.PathLike | None = None) -> list[dict]:
    """Every data source lpd knows, with what is installed and how to get the rest.

    Cheap: files are listed and headers read, pixel data are not decoded.

    Parameters
    ----------
    mayo_dir, lodopab_dir : path, optional
        Where the user keeps these data sets; by default the environment
        variables ``LPD_MAYO_DIR`` and ``LPD_LODOPAB_DIR``.

    Returns
    -------
    list of dict
        One per source: ``name``, ``kind`` (``"generated"``, ``"installed"`` or
        ``"user"``), ``available``, ``summary`` (counts and shapes),
        ``location`` and ``how_to_get``.
    """
    out = [
        source_entry("ellipses", "generated", True,
                "random ellipse phantoms of the paper's training set, any grid "
                "(Poisson(50) ellipses)"),
        source_entry("rectangles", "generated", True,
                "random rotated rectangles with the ellipses' statistics (generalisation tests)"),
        source_entry("shepp_logan", "generated", True, "modified Shepp-Logan phantom, any grid"),
    ]
    try:
        path = head_ct_path()
        volume, spacing = load_inv3(path)
        counts = ", ".join(f"{split} {sum(hi - lo for lo, hi in blocks)}"
                           for split, blocks in HEAD_CT_SPLITS.items())
        out.append(source_entry(
            "head_ct", "installed", True,
            f"{volume.shape[0]} slices of {volume.shape[1]} x {volume.shape[2]} HU, "
            f"{spacing[0]:.3g} mm pixels, {spacing[2]:.3g} mm apart; splits: {counts}",
            str(path)))
    except DataError as err:
        out.append(source_entry("head_ct", "installed", False, "real head CT (invesalius-examples)",
                           "", str(err)))
    found, problems, shapes = [], [], []
    for name in PYDICOM_CT_FILES:
        try:
            import pydicom

            path = pydicom_path(name)
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            found.append(name)
            shapes.append(f"{ds.Rows} x {ds.Columns}")
        except (DataError, ImportError, OSError, ValueError) as err:
            problems.append(str(err))
    out.append(source_entry(
        "pydicom_ct", "installed", len(found) == len(PYDICOM_CT_FILES),
        f"{len(found)} of {len(PYDICOM_CT_FILES)} CT slices of other patients "
        f"({', '.join(f'{n} {s}' for n, s in zip(found, shapes, strict=True))}): "
        "split 'other_patients'",
        "pydicom / pydicom-data packages", "; ".join(problems) or ""))
    out.append(_brain_mri_source())  # packaged_ct's entries go in before it, below

    mayo_dir = mayo_dir or os.environ.get("LPD_MAYO_DIR")
    if mayo_dir and Path(mayo_dir).is_dir():
        out.append(_mayo_source(Path(mayo_dir)))
    else:
        out.append(source_entry("mayo", "user", False,
                           "Mayo/AAPM low-dose CT challenge (the paper's human data)",
                           str(mayo_dir or ""),
                           f"set LPD_MAYO_DIR or pass the directory; {MAYO_HOW}"))

    lodopab_dir = lodopab_dir or os.environ.get("LPD_LODOPAB_DIR")
    if lodopab_dir and Path(lodopab_dir).is_dir():
        parts = []
        for part, expected in LODOPAB_COUNTS.items():
            gt = len(list(Path(lodopab_dir).glob(f"ground_truth_{part}_*.hdf5")))
            obs = len(list(Path(lodopab_dir).glob(f"observation_{part}_*.hdf5")))
            parts.append(f"{part}: {gt} ground-truth / {obs} observation files "
                         f"(complete: {math.ceil(expected / 128)} files, {expected} samples)")
        have = any(Path(lodopab_dir).glob("ground_truth_*_*.hdf5"))
        out.append(source_entry("lodopab", "user", have,
                           "; ".join(parts) + "; ground truth 362 x 362, observations "
                           "1000 x 513", str(lodopab_dir), "" if have else LODOPAB_HOW))
    else:
        out.append(source_entry("lodopab", "user", False,
                           "LoDoPaB-CT (35 820 / 3 522 / 3 553 slices, 362 x 362)",
                           str(lodopab_dir or ""),
                           f"set LPD_LODOPAB_DIR or pass the directory; {LODOPAB_HOW}"))
    out[5:5] = packaged_ct.describe()  # after the head CT and the pydicom slices
    return out


def _brain_mri_source() -> dict:
    """The entry of `data_sources` for the Colin27 brain MRI (its header read, not its voxels)."""
    try:
        path = brain_mri.brain_mri_path()
        shape, spacing = brain_mri.read_colin27_header(path)
    except DataError as err:
        return source_entry("brain_mri", "installed", False,
                            "real brain MRI: Colin27 T1 volume (mricron-data)", "", str(err))
    counts = ", ".join(f"{split} {len(brain_mri.split_slices(split))}"
                       for split in brain_mri.BRAIN_MRI_SPLITS)
    voxels = " x ".join(f"{s:.3g}" for s in spacing)
    return source_entry(
        "brain_mri", "installed", True,
        f"T1 brain MRI (Colin27, one averaged subject): {' x '.join(map(str, shape))} voxels "
        f"of {voxels} mm, axial slices in [0, 1]; splits: {counts} "
        "(--images brain_mri)", str(path))


def _mayo_source(root: Path) -> dict:
    """The Mayo entry of `data_sources`: what was read, not only what is named like it.

    Counts the DICOM files of each series and reads the first file of each
    (its header and pixel-data size), so that a tree of files that are not CT
    slices is reported as unreadable, with the reason.
    """
    patients = sorted(p.name for p in root.iterdir() if p.is_dir())
    counts, shapes, problems = [], set(), []
    readable = 0
    for series in ("full_3mm", "quarter_3mm", "full_1mm", "quarter_1mm"):
        n = 0
        for patient in patients:
            files = sorted(f for f in (root / patient / series).rglob("*")
                           if f.is_file() and f.suffix.lower() in DICOM_SUFFIXES)
            n += len(files)
            if files:
                try:
                    scan_mayo_file(files[0], None)
                    ds = read_dicom(str(files[0]), None)
                    shapes.add(f"{int(ds.Rows)} x {int(ds.Columns)}")
                    readable += len(files)
                except DataError as err:
                    problems.append(str(err))
        counts.append(f"{series} {n}")
    available = bool(patients) and readable > 0
    summary = (f"{len(patients)} patients ({', '.join(patients[:12])}"
               f"{' ...' if len(patients) > 12 else ''}); files: {', '.join(counts)}")
    if shapes:
        summary += f"; {', '.join(sorted(shapes))}"
    if problems:
        summary += (f"; unreadable: {'; '.join(problems[:3])}"
                    f"{f' (and {len(problems) - 3} more)' if len(problems) > 3 else ''}")
    return source_entry("mayo", "user", available, summary, str(root),
                   "" if available else MAYO_HOW)


def describe_sources(mayo_dir: str | os.PathLike | None = None,
                     lodopab_dir: str | os.PathLike | None = None) -> str:
    """A readable table of `data_sources` (what ``lpd datasets`` prints)."""
    lines = ["Data sources of lpd (see data/README.md)", ""]
    for source in data_sources(mayo_dir, lodopab_dir):
        status = {"generated": "generated", "installed": "installed",
                  "user": "found"}[source["kind"]]
        if not source["available"]:
            status = "MISSING" if source["kind"] != "user" else "not found"
        lines.append(f"{source['name']:<12} {status:<10} {source['summary']}")
        if source["location"]:
            lines.append(f"{'':<12} {'':<10} at {source['location']}")
        if source["how_to_get"]:
            lines.append(f"{'':<12} {'':<10} to get it: {source['how_to_get']}")
    return "\n".join(lines)
