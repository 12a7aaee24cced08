"""Loader for LoDoPaB-CT, which users bring: `LoDoPaB` and its problem, `lodopab_problem`."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lpd.config import SETUPS, ProblemConfig
from lpd.data.ct_units import check_directory, grid_of, report, resample_to_grid
from lpd.data.pipelines import DataError, DataSourceMissing, ImageSet

__all__ = ["LODOPAB_MU_MAX", "LoDoPaB", "lodopab_problem", "LODOPAB_COUNTS", "LODOPAB_HOW"]


LODOPAB_MU_MAX = SETUPS["lodopab"].noise.mu
"""Attenuation (per m) that LoDoPaB-CT's ground truth divides by (3071 HU)."""

_LODOPAB_SHAPES = {"ground_truth": (362, 362), "observation": (1000, 513)}

LODOPAB_COUNTS = {"train": 35820, "validation": 3522, "test": 3553}
"""Samples in each part of LoDoPaB-CT."""

LODOPAB_HOW = (
    "download LoDoPaB-CT from Zenodo (https://zenodo.org/record/3384092: "
    "ground_truth_{train,validation,test}.zip and observation_*.zip) and unzip all "
    "into one directory; see data/README.md"
)
"""How to get LoDoPaB-CT (ends the messages that say how to get it)."""


def lodopab_problem() -> ProblemConfig:
    """The problem of LoDoPaB-CT: ``lpd.operators.SETUPS["lodopab"]``.

    362 x 362 pixels on ``[-0.13, 0.13]^2`` m, parallel beam, 1000 angles on
    ``[0, pi)``, 513 detector pixels (ODL's ``parallel_beam_geometry``), pre-log
    Poisson noise of 4096 photons with ``mu = LODOPAB_MU_MAX`` per m on the
    ground truth as stored (``units="native"``). Its observations are post-log:
    ``PoissonNoise.post_log`` of this model, except that LoDoPaB clamps zero
    counts at 0.1 photons, not 1.

    References
    ----------
    Leuschner J, Schmidt M, Otero Baguer D, Maass P. LoDoPaB-CT, a benchmark
    dataset for low-dose computed tomography reconstruction. Sci. Data 8, 2021.
    """
    return SETUPS["lodopab"]


class LoDoPaB:
    """The files of one part of LoDoPaB-CT, checked and indexed.

    Reads ``ground_truth_<part>_NNN.hdf5`` (and ``observation_<part>_NNN.hdf5``
    where present), each with one dataset ``data`` of ``samples_per_file``
    samples, the last file shorter: ground truth ``(n, 362, 362)`` in ``[0, 1]``
    (attenuation / `LODOPAB_MU_MAX` per m), observations ``(n, 1000, 513)``
    post-log. Files are opened when the object is made (structure and shapes
    checked); values are checked when read.

    Parameters
    ----------
    directory : path
        Directory holding the unzipped ``.hdf5`` files.
    part : {"train", "validation", "test"}
        Which part.
    samples_per_file : int
        Samples in every file but the last (128 in LoDoPaB-CT).
    skip_bad : bool
        Report (as a warning) and skip unreadable or malformed files
        instead of raising.
    check_values : bool
        Read every file now and check for NaN (slow for the training part).

    Attributes
    ----------
    has_observations : bool
        Whether observation files were found for every ground-truth file.
    skipped : list of str
        Files left out by ``skip_bad``, with the reason.

    References
    ----------
    Leuschner J et al. LoDoPaB-CT, a benchmark dataset for low-dose computed
    tomography reconstruction. Sci. Data 8, 2021.
    """

    def __init__(self, directory: str | os.PathLike, part: str = "train", *,
                 samples_per_file: int = 128, skip_bad: bool = False,
                 check_values: bool = False):
        try:
            import h5py  # noqa: F401
        except ImportError as err:
            raise DataSourceMissing("reading LoDoPaB-CT needs h5py: pip install h5py") from err
        if part not in LODOPAB_COUNTS:
            raise ValueError(f"part must be one of {', '.join(LODOPAB_COUNTS)}, got {part!r}")
        self.directory = check_directory(directory, LODOPAB_HOW)
        self.part = part
        self.samples_per_file = int(samples_per_file)
        self.skipped: list[str] = []
        pattern = re.compile(rf"ground_truth_{part}_(\d{{3}})\.hdf5$")
        numbered = sorted((int(m.group(1)), p) for p in self.directory.iterdir()
                          if (m := pattern.match(p.name)))
        if not numbered:
            raise DataError(f"{self.directory}: no ground_truth_{part}_NNN.hdf5 files; "
                            f"{LODOPAB_HOW}")
        numbers = [n for n, _ in numbered]
        gaps = sorted(set(range(numbers[-1] + 1)) - set(numbers))
        if gaps and not skip_bad:
            raise DataError(f"{self.directory}: missing ground_truth_{part}_"
                            f"{gaps[0]:03d}.hdf5 (files must be numbered from 000 on)")
        last = numbers[-1]
        self._files: list[tuple[Path, Path | None, int]] = []
        for number, gt_path in numbered:
            obs_path = self.directory / f"observation_{part}_{number:03d}.hdf5"
            try:
                count = self._check_file(gt_path, "ground_truth", number == last,
                                         check_values)
                if obs_path.exists():
                    obs_count = self._check_file(obs_path, "observation", number == last,
                                                 check_values)
                    if obs_count != count:
                        raise DataError(f"{obs_path}: {obs_count} samples but "
                                        f"{gt_path.name} has {count}")
                else:
                    obs_path = None
            except DataError as err:
                if not skip_bad:
                    raise
                self.skipped.append(f"skipped: {err}")
                report(f"skipped: {err}")
                continue
            self._files.append((gt_path, obs_path, count))
        if not self._files:
            raise DataError(f"{self.directory}: no usable LoDoPaB-CT {part} files")
        self.has_observations = all(obs is not None for _, obs, _ in self._files)
        self._offsets = np.cumsum([0] + [count for _, _, count in self._files])

    def _check_file(self, path: Path, kind: str, is_last: bool, check_values: bool) -> int:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                if "data" not in f:
                    raise DataError(f"{path}: no dataset 'data'")
                data = f["data"]
                shape = tuple(data.shape)
                if len(shape) != 3 or shape[1:] != _LODOPAB_SHAPES[kind]:
                    raise DataError(f"{path}: dataset 'data' of shape {shape}, expected "
                                    f"(n, {', '.join(map(str, _LODOPAB_SHAPES[kind]))})")
                if not (1 <= shape[0] <= self.samples_per_file) or (
                        not is_last and shape[0] != self.samples_per_file):
                    raise DataError(f"{path}: {shape[0]} samples, expected "
                                    f"{self.samples_per_file} (fewer only in the last file)")
                if check_values and not np.all(np.isfinite(data[()])):
                    raise DataError(f"{path}: data contain NaN or infinite values")
        except OSError as err:
            raise DataError(f"{path}: not a readable HDF5 file ({err})") from err
        return shape[0]

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _locate(self, index: int) -> tuple[int, int]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        file = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return file, index - int(self._offsets[file])

    def _read(self, path: Path, local: int) -> np.ndarray:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                sample = np.asarray(f["data"][local], dtype=np.float32)
        except OSError as err:
            raise DataError(f"{path}: cannot read sample {local} ({err})") from err
        if not np.all(np.isfinite(sample)):
            raise DataError(f"{path}: sample {local} contains NaN or infinite values")
        return sample

    def ground_truth_sample(self, index: int) -> np.ndarray:
        """Ground truth ``index`` as stored: float32 ``(362, 362)`` in ``[0, 1]``.

        LoDoPaB stores images as ODL elements of `lodopab_problem`'s space (its
        observations are the ray transform of the arrays as stored).
        """
        file, local = self._locate(index)
        return self._read(self._files[file][0], local)

    def observation(self, index: int) -> np.ndarray:
        """Observation ``index``: float32 ``(1000, 513)`` post-log sinogram."""
        file, local = self._locate(index)
        path = self._files[file][1]
        if path is None:
            raise DataSourceMissing(
                f"{self.directory}: no observation_{self.part}_NNN.hdf5 files; {LODOPAB_HOW}")
        return self._read(path, local)

    def pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(observation, ground truth)`` of sample ``index`` (for `measured_pairs`).

        """
        return self.observation(index), self.ground_truth_sample(index)

    def ground_truth(self, grid: Any = None, *, units: Literal["native", "attenuation"] =
                     "native", scale: Literal["physical", "pixels"] = "physical") -> ImageSet:
        """The ground truth as an image source.

        Parameters
        ----------
        grid : optional
            ``None`` keeps LoDoPaB's own 362 x 362 grid (`lodopab_problem`).
            Otherwise a target grid as in `real_ct_slices` (lengths in mm; the
            images cover 260 mm).
        units : {"native", "attenuation"}
            ``"native"``: as stored. ``"attenuation"``: relative to water, as
            `hu_to_attenuation` gives (LoDoPaB's mu_water is 20 per m, air 0.02).
        scale : {"physical", "pixels"}
            See `resample_to_grid`.

        Returns
        -------
        ImageSet
            Images indexed like ODL elements, labelled ``"<file>[<sample>]"``.
        """
        if units not in ("native", "attenuation"):
            raise ValueError(f"units must be 'native' or 'attenuation', got {units!r}")
        target = None if grid is None else grid_of(grid)

        def load(i):
            image = self.ground_truth_sample(i)
            if units == "attenuation":
                mu = image.astype(np.float64) * LODOPAB_MU_MAX
                image = np.maximum((mu - 0.02) / (20.0 - 0.02), 0.0).astype(np.float32)
            if target is None:
                return image
            shape, min_pt, max_pt = target
            spacing = 260.0 / 362
            # Stored (x, y): its transpose has rows along +y.
            return resample_to_grid(image.T, (spacing, spacing), shape, min_pt, max_pt,
                                    scale=scale, rows_up=True)

        labels = []
        for path, _, count in self._files:
            labels.extend(f"{path.name}[{k}]" for k in range(count))
        shape = (362, 362) if target is None else target[0]
        return ImageSet(load, len(self), shape, labels, f"lodopab/{self.part}", self.skipped)

    def __repr__(self) -> str:
        return f"LoDoPaB({str(self.directory)!r}, part={self.part!r}, {len(self)} samples)"
