"""Tests of lpd.realdata: units, resampling, the offline real CT and the loaders."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _data_helpers import write_ct_dicom, write_lodopab, write_mayo_tree

from lpd.data import head_ct
from lpd.data import pipelines as D
from lpd.data import real as R


@pytest.fixture(scope="module")
def small():
    """The 64 x 64 ellipse set-up: same physics as the paper's, cheap to build."""
    from lpd.physics import operators

    return operators.get_setup("ellipses_small")


def _head_ct_or_skip():
    try:
        R.load_inv3()
    except D.DataSourceMissing as err:
        pytest.skip(str(err))


def _pydicom_data_or_skip():
    try:
        for name in R.PYDICOM_CT_FILES:
            head_ct.pydicom_path(name)
    except D.DataSourceMissing as err:
        pytest.skip(str(err))


def _batches(dataset, n):
    return [(d.numpy(), x.numpy()) for d, x in dataset.take(n)]


# ---------------------------------------------------------------------------
# Units and resampling
# ---------------------------------------------------------------------------

def test_hu_to_attenuation():
    np.testing.assert_allclose(R.hu_to_attenuation([-3024, -1024, -1000, 0, 1000]),
                               [0, 0, 0, 1, 2])
    with pytest.raises(D.DataError, match="NaN"):
        R.hu_to_attenuation([np.nan])


def test_resample_orientation_and_physical_size():
    # DICOM layout: row 0 is the top (+y), column 0 the left (-x).
    image = np.zeros((200, 200))
    image[:20, :20] = 1.0
    out = R.resample_to_grid(image, (1.0, 1.0), (20, 20), (-100, -100), (100, 100))
    assert out.shape == (20, 20) and out.dtype == np.float32
    assert out[:2, -2:].min() > 0.5 and out[2:].max() < 0.5  # x small, y large
    assert out[:2, -2:].sum() > 0 and out[:, :-2].max() < 0.5
    flipped = R.resample_to_grid(image, (1.0, 1.0), (20, 20), (-100, -100), (100, 100),
                                 rows_up=True)
    assert flipped[:2, :2].min() > 0.5
    # A disc of radius 50 mm keeps its size on a 2 mm grid.
    r = np.hypot(*np.meshgrid(np.arange(400) - 199.5, np.arange(400) - 199.5))
    disc = (r * 0.5 <= 50).astype(float)
    out = R.resample_to_grid(disc, (0.5, 0.5), (128, 128))
    assert abs(out.sum() * 4.0 - np.pi * 50**2) < 0.02 * np.pi * 50**2
    stretched = R.resample_to_grid(disc, (0.5, 0.5), (128, 128), scale="pixels")
    # Stretched over 256 mm, the 400 pixels are 0.64 mm: the disc's radius is 64 mm.
    assert abs(stretched.sum() * 4.0 - np.pi * 64**2) < 0.02 * np.pi * 64**2
    with pytest.raises(ValueError, match="scale"):
        R.resample_to_grid(disc, (0.5, 0.5), (8, 8), scale="fit")


# ---------------------------------------------------------------------------
# Real CT that installs offline
# ---------------------------------------------------------------------------

def test_head_ct_splits_are_disjoint_and_real():
    _head_ct_or_skip()
    volume, spacing = R.load_inv3()
    assert volume.shape == (108, 256, 256) and volume.min() >= -1024
    assert spacing[2] == pytest.approx(1.5)
    sets = {split: R.real_ct_slices("human_small", split)
            for split in ("train", "validation", "test")}
    labels = {split: set(s.labels) for split, s in sets.items()}
    assert not labels["train"] & labels["validation"]
    assert not labels["train"] & labels["test"]
    assert not labels["validation"] & labels["test"]
    assert [len(s) for s in sets.values()] == [67, 12, 12]
    z = {split: {int(label.split("=")[1]) for label in labels[split]} for split in labels}
    # At least 3 slices (4.5 mm) between training and held-out slices.
    for held_out in ("validation", "test"):
        assert min(abs(a - b) for a in z["train"] for b in z[held_out]) >= 4
    images = sets["validation"].images()
    assert images.shape == (12, 128, 128) and images.min() >= 0
    head = images[images > 0.5]
    assert 0.95 < np.median(head) < 1.1  # soft tissue is close to water
    assert images.max() > 1.8  # bone
    # The slices left out are the top of the skull.
    assert (volume[103:] > -500).mean() < 0.05


def test_other_patients_are_pydicom_slices():
    _pydicom_data_or_skip()
    images = R.real_ct_slices((64, 64), "other_patients")
    assert len(images) == 3 and images.shape == (64, 64)
    assert all(label.startswith("pydicom:") for label in images.labels)
    stack = images.images()
    assert stack.min() >= 0 and 0.9 < np.median(stack[stack > 0.5]) < 1.2
    with pytest.raises(ValueError, match="split"):
        R.real_ct_slices((64, 64), "everything")


def test_missing_head_ct_says_how_to_get_it(tmp_path):
    with pytest.raises(D.DataSourceMissing, match="invesalius-examples"):
        R.load_inv3(tmp_path / "Cranium.inv3")


def test_real_ct_feeds_the_pipeline(small):
    _head_ct_or_skip()
    source = R.real_ct_slices(small, "validation")
    (data, image), = _batches(D.training_pairs(small, source, 2, seed=0), 1)
    assert data.shape == (2, *small.operator.range.shape, 1)
    assert image.shape == (2, 64, 64, 1) and image.max() > 1


# ---------------------------------------------------------------------------
# Mayo / AAPM
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mayo_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("mayo")
    return root, write_mayo_tree(root)


def test_mayo_slices_are_ordered_and_in_attenuation_units(mayo_tree):
    root, written = mayo_tree
    slices = R.scan_mayo(root)
    assert [s.patient for s in slices] == ["L067"] * 3 + ["L096"] * 3
    assert [s.z for s in slices[:3]] == sorted(z for z, _ in written[("L067", "full_3mm")])
    images = R.mayo_slices(root, (16, 16))
    assert len(images) == 6 and images.shape == (16, 16)
    for k, (_, hu) in enumerate(sorted(written[("L067", "full_3mm")])):
        np.testing.assert_allclose(images[k], (hu + 1000) / 1000, rtol=1e-5)
        assert images.labels[k].startswith("L067:")
    quarter = R.mayo_slices(root, (16, 16), dose="quarter", patients=["L096"])
    assert len(quarter) == 3
    assert len(R.scan_mayo(root, exclude_patients=["L096"])) == 3
    # One patient may be named by a plain string (not read letter by letter).
    assert len(R.mayo_slices(root, (16, 16), patients="L096")) == 3
    assert len(R.scan_mayo(root, exclude_patients="L096")) == 3


def test_mayo_with_every_file_bad_names_the_reasons(tmp_path):
    write_mayo_tree(tmp_path, patients=("L067",), slices=2, size=512, series=("full_3mm",))
    for path in (tmp_path / "L067" / "full_3mm").iterdir():
        path.write_bytes(b"random bytes " * 20)
    with pytest.raises(D.DataError, match="no usable full_3mm slices found: every file was "
                                          "skipped: .*IMA.*not a readable DICOM"):
        R.scan_mayo(tmp_path, skip_bad=True)


def test_mayo_feeds_the_pipeline(mayo_tree, small):
    root, _ = mayo_tree
    source = R.mayo_slices(root, small)
    (data, image), = _batches(D.training_pairs(small, source, 2, seed=0), 1)
    assert data.shape == (2, *small.operator.range.shape, 1) and image.shape == (2, 64, 64, 1)


def test_mayo_errors_name_the_file(tmp_path):
    with pytest.raises(D.DataSourceMissing, match="does not exist"):
        R.scan_mayo(tmp_path / "nowhere")
    with pytest.raises(D.DataError, match="no patient folders"):
        R.scan_mayo(tmp_path)
    write_mayo_tree(tmp_path, patients=("L067",), slices=2, size=512, series=("full_3mm",))
    series = tmp_path / "L067" / "full_3mm"
    corrupt = series / "L067_FD_3_1.CT.0001.0099.IMA"
    corrupt.write_bytes(b"not a dicom file" * 10)
    with pytest.raises(D.DataError, match="0099.IMA.*not a readable DICOM"):
        R.scan_mayo(tmp_path)
    with pytest.warns(UserWarning, match="0099.IMA"):
        assert len(R.scan_mayo(tmp_path, skip_bad=True)) == 2
    corrupt.unlink()
    write_ct_dicom(series / "small.IMA", np.zeros((256, 256), np.int16))
    with pytest.raises(D.DataError, match="small.IMA.*256 x 256.*512 x 512"):
        R.scan_mayo(tmp_path)
    (series / "small.IMA").unlink()
    write_ct_dicom(series / "nan.IMA", np.zeros((512, 512), np.int16), slope="nan")
    with pytest.raises(D.DataError, match="nan.IMA.*NaN"):
        R.scan_mayo(tmp_path)
    (series / "nan.IMA").unlink()
    truncated = write_ct_dicom(series / "cut.IMA", np.zeros((512, 512), np.int16))
    truncated.write_bytes(truncated.read_bytes()[:-1000])
    with pytest.raises(D.DataError, match="cut.IMA"):
        R.scan_mayo(tmp_path)
    truncated.unlink()
    with pytest.raises(D.DataError, match="quarter_3mm"):
        R.scan_mayo(tmp_path, dose="quarter")
    with pytest.raises(D.DataError, match="L999"):
        R.scan_mayo(tmp_path, patients=["L999"])


# ---------------------------------------------------------------------------
# LoDoPaB-CT
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lodopab_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("lodopab")
    return root, write_lodopab(root, "validation", counts=(2, 1))


def test_lodopab_reads_files_in_the_real_format(lodopab_dir):
    root, written = lodopab_dir
    data = R.LoDoPaB(root, "validation", samples_per_file=2)
    assert len(data) == 3 and data.has_observations
    np.testing.assert_array_equal(data.ground_truth_sample(2), written["ground_truth"][1][0])
    observation, truth = data.pair(1)
    assert observation.shape == (1000, 513) and truth.shape == (362, 362)
    np.testing.assert_array_equal(observation, written["observation"][0][1])
    images = data.ground_truth()
    assert images.shape == (362, 362) and images.labels[2] == "ground_truth_validation_001.hdf5[0]"
    attenuation = data.ground_truth(units="attenuation")[0]
    expected = np.maximum((written["ground_truth"][0][0] * R.LODOPAB_MU_MAX - 0.02) / 19.98, 0)
    np.testing.assert_allclose(attenuation, expected, rtol=1e-5, atol=1e-6)
    resampled = data.ground_truth((64, 64))
    assert resampled.shape == (64, 64) and resampled[0].shape == (64, 64)


def test_lodopab_feeds_measured_pairs(lodopab_dir):
    root, _ = lodopab_dir
    data = R.LoDoPaB(root, "validation", samples_per_file=2)
    (obs, truth), = _batches(D.measured_pairs(data, 2, seed=0), 1)
    assert obs.shape == (2, 1000, 513, 1) and truth.shape == (2, 362, 362, 1)
    problem = R.lodopab_problem()
    assert problem.shape == (362, 362) and problem.det_shape == 513


def test_lodopab_errors_name_the_file(tmp_path):
    import h5py

    with pytest.raises(D.DataSourceMissing, match="does not exist"):
        R.LoDoPaB(tmp_path / "nowhere")
    with pytest.raises(D.DataError, match="no ground_truth_train_NNN"):
        R.LoDoPaB(tmp_path)
    write_lodopab(tmp_path, "train", counts=(2, 2, 1), observations=False)
    assert not R.LoDoPaB(tmp_path, samples_per_file=2).has_observations
    with pytest.raises(D.DataError, match="train_000.hdf5: 2 samples, expected 128"):
        R.LoDoPaB(tmp_path)  # the first file is short for the real layout
    corrupt = tmp_path / "ground_truth_train_001.hdf5"
    corrupt.write_bytes(b"\x89HDF garbage" * 100)
    with pytest.raises(D.DataError, match="train_001.hdf5.*not a readable HDF5"):
        R.LoDoPaB(tmp_path, samples_per_file=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        skipping = R.LoDoPaB(tmp_path, samples_per_file=2, skip_bad=True)
    assert len(skipping) == 3 and any("train_001" in str(w.message) for w in caught)
    with h5py.File(corrupt, "w") as f:
        f.create_dataset("data", data=np.zeros((2, 100, 100), np.float32))
    with pytest.raises(D.DataError, match="train_001.hdf5.*shape"):
        R.LoDoPaB(tmp_path, samples_per_file=2)
    with h5py.File(corrupt, "w") as f:
        f.create_dataset("other", data=np.zeros(1))
    with pytest.raises(D.DataError, match="train_001.hdf5.*'data'"):
        R.LoDoPaB(tmp_path, samples_per_file=2)
    nan = np.zeros((2, 362, 362), np.float32)
    nan[1, 5, 5] = np.nan
    with h5py.File(corrupt, "w") as f:
        f.create_dataset("data", data=nan)
    data = R.LoDoPaB(tmp_path, samples_per_file=2)
    with pytest.raises(D.DataError, match="train_001.hdf5: sample 1 .*NaN"):
        data.ground_truth_sample(3)
    with pytest.raises(D.DataError, match="train_001.hdf5.*NaN"):
        R.LoDoPaB(tmp_path, samples_per_file=2, check_values=True)
    with pytest.raises(D.DataSourceMissing, match="observation"):
        data.observation(0)
    (tmp_path / "ground_truth_train_001.hdf5").unlink()
    with pytest.raises(D.DataError, match="missing ground_truth_train_001"):
        R.LoDoPaB(tmp_path, samples_per_file=2)


# ---------------------------------------------------------------------------
# What is installed
# ---------------------------------------------------------------------------

def test_describe_sources(mayo_tree, lodopab_dir, tmp_path):
    root, _ = mayo_tree
    text = R.describe_sources(mayo_dir=root, lodopab_dir=lodopab_dir[0])
    for name in ("ellipses", "rectangles", "shepp_logan", "head_ct", "pydicom_ct", "mayo",
                 "lodopab"):
        assert name in text
    assert "2 patients" in text and "full_3mm 6" in text
    assert "validation: 2 ground-truth" in text
    sources = {s["name"]: s for s in R.data_sources(mayo_dir=tmp_path / "no",
                                                    lodopab_dir=tmp_path / "no")}
    assert not sources["mayo"]["available"] and "LPD_MAYO_DIR" in sources["mayo"]["how_to_get"]
    assert "zenodo" in sources["lodopab"]["how_to_get"]
    assert sources["ellipses"]["available"]
    if not sources["head_ct"]["available"]:
        assert "apt-get install invesalius-examples" in sources["head_ct"]["how_to_get"]


def test_describe_sources_reports_what_was_read(tmp_path):
    mayo = tmp_path / "mayo" / "L001" / "full_3mm"
    mayo.mkdir(parents=True)
    for k in range(3):
        (mayo / f"slice{k}.IMA").write_bytes(bytes(range(256)) * 4)
    lodopab = tmp_path / "lodopab"
    lodopab.mkdir()
    for k in range(10):
        (lodopab / f"ground_truth_test_{k:03d}.hdf5").write_bytes(b"")
    sources = {s["name"]: s for s in R.data_sources(mayo_dir=tmp_path / "mayo",
                                                    lodopab_dir=lodopab)}
    assert not sources["mayo"]["available"]
    assert "unreadable" in sources["mayo"]["summary"] and "slice0.IMA" in sources["mayo"][
        "summary"]
    assert sources["lodopab"]["available"]  # "10 ground-truth" is not "0 ground-truth"
    assert "test: 10 ground-truth" in sources["lodopab"]["summary"]


def test_training_images_come_from_the_one_list():
    from lpd.config import TRAINING_IMAGES
    from lpd.data import catalogue
    from lpd.physics import operators

    setup = operators.get_setup("human_small")
    phantoms = catalogue.training_images("rectangles", setup)
    assert isinstance(phantoms, D.RandomPhantoms) and phantoms.shape == (128, 128)
    head = catalogue.training_images("real_ct", setup, "validation")
    assert isinstance(head, D.ImageSet) and len(head) == len(R.real_ct_slices(setup,
                                                                             "validation"))
    assert set(TRAINING_IMAGES) >= {"ellipses", "real_ct", "real_ct_patients"}
    with pytest.raises(ValueError, match="unknown training images 'mri'; choose one of"):
        catalogue.training_images("mri", setup)
