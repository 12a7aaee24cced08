"""Tests of lpd.data.brain_mri: the Colin27 brain MRI of mricron-data, its splits and grids."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lpd.config import SETUPS
from lpd.data import brain_mri as B
from lpd.data.pipelines import DataError, DataSourceMissing, ImageSet


def _colin27_or_skip():
    """The decoded volume, or a skip saying why it is not there."""
    pytest.importorskip("nibabel")
    try:
        return B.load_colin27()
    except DataSourceMissing as err:
        pytest.skip(str(err))


def _z(images: ImageSet) -> list[int]:
    return [int(label.split("=")[1]) for label in images.labels]


def _write_nifti(path, data, affine):
    nib = pytest.importorskip("nibabel")
    nib.save(nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=float)), str(path))
    return path


# ---------------------------------------------------------------------------
# Splits (no data needed)
# ---------------------------------------------------------------------------

def test_splits_are_disjoint_with_gaps():
    z = {split: B.split_slices(split) for split in B.BRAIN_MRI_SPLITS}
    assert set(z) == {"train", "validation", "test"}
    assert [len(z[s]) for s in ("train", "validation", "test")] == [72, 10, 21]
    for split, blocks in B.BRAIN_MRI_SPLITS.items():
        assert all(lo < hi for lo, hi in blocks), split
        assert len(set(z[split])) == len(z[split])
    # At least 4 slices (4 mm) between a held-out slice and any other split's slice.
    for held_out in ("validation", "test"):
        for other in set(z) - {held_out}:
            assert min(abs(a - b) for a in z[held_out] for b in z[other]) >= 5, (held_out, other)
    assert len(B.BRAIN_MRI_SPLITS["test"]) == len(B.BRAIN_MRI_SPLITS["validation"]) == 1
    everything = sorted(k for ks in z.values() for k in ks)
    assert everything[0] == 22 and everything[-1] == 140
    with pytest.raises(ValueError, match="train.*validation.*test"):
        B.split_slices("everything")
    with pytest.raises(ValueError, match="unknown split"):
        B.brain_mri_slices("brain_mri_small", "everything")


# ---------------------------------------------------------------------------
# Missing and bad files
# ---------------------------------------------------------------------------

def test_missing_volume_says_how_to_get_it(tmp_path, monkeypatch):
    with pytest.raises(DataSourceMissing, match="apt-get install mricron-data"):
        B.load_colin27(tmp_path / "ch2.nii.gz")
    monkeypatch.setenv("LPD_BRAIN_MRI", str(tmp_path / "elsewhere.nii.gz"))
    with pytest.raises(DataSourceMissing, match="LPD_BRAIN_MRI"):
        B.brain_mri_path()
    with pytest.raises(DataSourceMissing, match="mricron-data"):
        B.brain_mri_slices("brain_mri_small", "test")


def test_garbage_files_are_data_errors(tmp_path):
    pytest.importorskip("nibabel")
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"this is not a NIfTI volume" * 40)
    with pytest.raises(DataError, match="garbage.nii.gz.*not a readable NIfTI") as info:
        B.load_colin27(garbage)
    assert not isinstance(info.value, DataSourceMissing)
    flat = _write_nifti(tmp_path / "flat.nii", np.ones((4, 5), np.float32), np.eye(4))
    with pytest.raises(DataError, match="3-D volume"):
        B.load_colin27(flat)
    oblique = np.eye(4)
    oblique[0, 1] = 0.3
    sheared = _write_nifti(tmp_path / "oblique.nii", np.ones((4, 5, 6), np.float32), oblique)
    with pytest.raises(DataError, match="not aligned"):
        B.load_colin27(sheared)
    empty = _write_nifti(tmp_path / "empty.nii", np.zeros((4, 5, 6), np.float32), np.eye(4))
    with pytest.raises(DataError, match="no positive"):
        B.load_colin27(empty)
    short = _write_nifti(tmp_path / "short.nii", np.ones((181, 217, 30), np.uint8), np.eye(4))
    with pytest.raises(DataError, match="axial slices"):
        B.brain_mri_slices("brain_mri_small", "test", path=short)


def test_volume_is_reordered_to_ras_and_scaled(tmp_path):
    # A volume stored left-right flipped (LAS) reads back in RAS order.
    ras = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    path = _write_nifti(tmp_path / "las.nii", ras[::-1].copy(), np.diag([-2.0, 1.0, 1.0, 1.0]))
    volume, spacing = B.load_colin27(path)
    assert spacing == (2.0, 1.0, 1.0) and volume.dtype == np.float32
    np.testing.assert_allclose(volume, ras / ras.max(), rtol=1e-6)
    assert not volume.flags.writeable


# ---------------------------------------------------------------------------
# The installed Colin27 volume
# ---------------------------------------------------------------------------

def test_colin27_volume():
    volume, spacing = _colin27_or_skip()
    assert volume.shape == (181, 217, 181) and volume.dtype == np.float32
    assert spacing == (1.0, 1.0, 1.0)
    assert volume.min() == 0.0 and volume.max() == 1.0
    assert B.load_colin27()[0] is volume  # cached
    assert B.read_colin27_header() == ((181, 217, 181), (1.0, 1.0, 1.0))


def test_slices_on_the_small_setup():
    _colin27_or_skip()
    for split, count in (("train", 72), ("validation", 10), ("test", 21)):
        images = B.brain_mri_slices("brain_mri_small", split)
        assert len(images) == count and images.shape == (80, 96)
        assert images.name == f"brain_mri/{split}"
        assert images.labels[0] == f"colin27:z={B.split_slices(split)[0]}"
        stack = images.images()
        assert stack.dtype == np.float32 and stack.shape == (count, 80, 96)
        assert stack.min() >= 0.0 and stack.max() <= 1.0
        # Every slice holds a head: a large area of tissue, background at the corners.
        assert ((stack > 0.1).mean(axis=(1, 2)) > 0.3).all()
        assert np.abs(stack[:, :3, :3]).max() < 0.05
    assert _z(B.brain_mri_slices("brain_mri_small", "test")) == list(range(72, 93))


def test_orientation():
    volume, _ = _colin27_or_skip()
    # On a grid of 1 mm cells over the same domain, image[i, j] is volume[i, j, z] (RAS),
    # divided by the slice's maximum.
    exact = dataclasses.replace(SETUPS["brain_mri"], name="brain_mri_1mm", shape=(181, 217))
    images = B.brain_mri_slices(exact, "validation")
    plane = volume[:, :, 114]
    np.testing.assert_allclose(images[0], plane / plane.max(), atol=1e-6)
    assert images[0].max() == 1.0

    test = B.brain_mri_slices("brain_mri_small", "test").images()
    # Left and right are nearly mirror images; front and back are not.
    x_flip = np.mean([np.corrcoef(x.ravel(), x[::-1].ravel())[0, 1] for x in test])
    y_flip = np.mean([np.corrcoef(x.ravel(), x[:, ::-1].ravel())[0, 1] for x in test])
    assert x_flip > 0.88 and x_flip > y_flip + 0.05
    # Anterior is large y: the bright fat of the orbits is in the front half of
    # the lowest training slices (22-36), behind them the cerebellum.
    low = B.brain_mri_slices("brain_mri_small", "train").images()[:15]
    front, back = (low[:, :, 48:] > 0.8).sum(), (low[:, :, :48] > 0.8).sum()
    assert front > 10 * max(back, 1)


def test_another_extent_keeps_the_physical_size():
    _colin27_or_skip()
    # A bare shape is a 256 mm field of view: 2 mm pixels, the 181 x 217 mm slice
    # in the middle, zero around it.
    images = B.brain_mri_slices((128, 128), "test").images()
    assert images.shape == (21, 128, 128)
    centres = -128.0 + (np.arange(128) + 0.5) * 2.0
    assert images[:, np.abs(centres) > 92.0, :].max() == 0.0
    assert images[:, :, np.abs(centres) > 110.0].max() == 0.0
    small = B.brain_mri_slices("brain_mri_small", "test").images()
    # The same tissue area in mm^2 (cells of 2 x 2 mm and 181/80 x 217/96 mm).
    area_256 = (images > 0.1).sum(axis=(1, 2)) * 4.0
    area_small = (small > 0.1).sum(axis=(1, 2)) * (181 / 80) * (217 / 96)
    np.testing.assert_allclose(area_256, area_small, rtol=0.05)


def test_training_images_by_name():
    _colin27_or_skip()
    from lpd.data import catalogue

    test = catalogue.training_images("brain_mri", SETUPS["brain_mri_small"], "test")
    assert isinstance(test, ImageSet) and len(test) == 21 and test.shape == (80, 96)
    assert test.labels == [f"colin27:z={z}" for z in range(72, 93)]


def test_catalogue_entry():
    from lpd.data import catalogue

    sources = catalogue.data_sources()
    names = [s["name"] for s in sources]
    assert "brain_mri" in names
    # After every other installed source, before the data that users bring.
    installed = [k for k, s in enumerate(sources) if s["kind"] == "installed"]
    assert names.index("brain_mri") == installed[-1] < names.index("mayo")
    entry = sources[names.index("brain_mri")]
    if entry["available"]:
        assert "181 x 217 x 181" in entry["summary"]
        assert "train 72, validation 10, test 21" in entry["summary"]
    else:
        assert "mricron-data" in entry["how_to_get"] or "nibabel" in entry["how_to_get"]
    assert "brain_mri" in catalogue.describe_sources()
