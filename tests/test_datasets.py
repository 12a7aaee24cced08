"""Tests of lpd.datasets: noise, simulation, pipelines, real CT and the loaders."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _data_helpers import write_ct_dicom, write_lodopab, write_mayo_tree

from lpd import datasets as D
from lpd import phantoms
from lpd.config import NoiseConfig


@pytest.fixture(scope="module")
def small():
    """The 64 x 64 ellipse set-up: same physics as the paper's, cheap to build."""
    from lpd import operators

    return operators.get_setup("ellipses_small")


def _head_ct_or_skip():
    try:
        D.load_inv3()
    except D.DataSourceMissing as err:
        pytest.skip(str(err))


def _pydicom_data_or_skip():
    try:
        for name in D.PYDICOM_CT_FILES:
            D._pydicom_path(name)
    except D.DataSourceMissing as err:
        pytest.skip(str(err))


# ---------------------------------------------------------------------------
# Noise models
# ---------------------------------------------------------------------------

def test_gaussian_noise_level_is_relative_to_each_sample():
    rng = np.random.default_rng(0)
    clean = np.stack([np.full((30, 183), 2.0), np.full((30, 183), -10.0)])
    noisy = D.GaussianNoise(0.05)(clean, rng)
    assert noisy.dtype == np.float32 and noisy.shape == clean.shape
    for sample, level in zip(noisy - clean, (0.1, 0.5), strict=True):
        assert abs(sample.mean()) < 0.05 * level
        assert abs(sample.std() / level - 1) < 0.05


def test_gaussian_noise_seed_and_generator():
    data = np.ones((1, 10, 10))
    assert np.array_equal(D.GaussianNoise(seed=1)(data), D.GaussianNoise(seed=1)(data))
    assert not np.array_equal(D.GaussianNoise(seed=1)(data), D.GaussianNoise(seed=2)(data))
    a = D.GaussianNoise(seed=1)(data, np.random.default_rng(5))
    b = D.GaussianNoise(seed=2)(data, np.random.default_rng(5))
    assert np.array_equal(a, b)
    assert np.array_equal(D.GaussianNoise(0.0)(data), data)


@pytest.mark.parametrize("bad, message", [
    (np.array([[1.0, np.nan]]), "NaN"),
    (np.ones(4), "batch"),
    (np.array([["a"]]), "numeric"),
])
def test_gaussian_noise_rejects_bad_data(bad, message):
    with pytest.raises(ValueError, match=message):
        D.GaussianNoise()(bad)


def test_poisson_noise_mean_and_variance():
    mu, photons, length = 0.02, 100.0, 50.0
    noise = D.PoissonNoise(mu, photons)
    y = noise(np.full((4, 50_000), length), np.random.default_rng(0))
    expected = np.exp(-mu * length)
    assert y.dtype == np.float32
    assert abs(y.mean() / expected - 1) < 0.01
    assert abs(y.var() / (expected / photons) - 1) < 0.03
    # Counts are integers.
    np.testing.assert_allclose(y * photons, np.round(y * photons), atol=1e-3)
    np.testing.assert_allclose(noise.expected([[length]]), [[expected]], rtol=1e-6)


def test_poisson_post_log_handles_zero_counts_and_checks_input():
    noise = D.PoissonNoise(mu=0.02, photons=1e4)
    out = noise.post_log(np.array([[0.0, 1e-4, 1.0, np.exp(-0.02 * 30)]]))
    np.testing.assert_allclose(out, [[np.log(1e4) / 0.02, np.log(1e4) / 0.02, 0.0, 30.0]],
                               rtol=1e-5)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(noise.post_log(np.zeros(1), min_photons=0.1),
                               [np.log(1e5) / 0.02], rtol=1e-5)
    with pytest.raises(ValueError, match=">= 0"):
        noise.post_log(np.array([-0.1]))
    with pytest.raises(ValueError, match="NaN"):
        noise.post_log(np.array([np.nan]))
    with pytest.raises(ValueError, match="NaN"):
        noise(np.array([[np.inf]]))
    with pytest.raises(ValueError, match="overflow"):
        noise(np.array([[-1e5]]))


def test_noise_model_from_config():
    gaussian = D.noise_model(NoiseConfig(kind="gaussian", relative_std=0.1))
    poisson = D.noise_model(NoiseConfig(kind="poisson", mu=0.03, photons=500.0))
    assert isinstance(gaussian, D.GaussianNoise) and gaussian.relative_std == 0.1
    assert isinstance(poisson, D.PoissonNoise) and (poisson.mu, poisson.photons) == (0.03, 500)
    with pytest.raises(TypeError):
        D.noise_model({"kind": "gaussian"})
    with pytest.raises(ValueError):
        D.PoissonNoise(mu=0)


# ---------------------------------------------------------------------------
# Simulation
# ---------------------------------------------------------------------------

def test_simulate_matches_odl_and_noise_level(small):
    images = np.stack([phantoms.random_ellipses(np.random.default_rng(i), (64, 64))
                       for i in range(3)])
    clean = D.simulate(small, images, np.random.default_rng(0), noise=D.GaussianNoise(0.0))
    expected = np.stack([small.operator(x).data for x in images])
    assert clean.shape == (3, *small.operator.range.shape)
    np.testing.assert_allclose(clean, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    noisy = D.simulate(small, images, np.random.default_rng(0))
    ratio = (noisy - clean).std(axis=(1, 2)) / np.abs(clean).mean(axis=(1, 2))
    np.testing.assert_allclose(ratio, 0.05, rtol=0.1)


def test_forward_project_without_matrix_equals_matrix(small):
    images = np.random.default_rng(0).random((2, 64, 64), dtype=np.float32)
    with_matrix = D.forward_project(small.operator, images)
    per_image = D.forward_project(small.operator, images, memory_budget=0)
    np.testing.assert_allclose(with_matrix, per_image, rtol=1e-4,
                               atol=1e-5 * np.abs(per_image).max())
    with pytest.raises(ValueError, match="shape"):
        D.forward_project(small.operator, images[:, :32])


def test_simulate_rejects_bad_input(small):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="NaN"):
        D.simulate(small, np.full((1, 64, 64), np.nan), rng)
    with pytest.raises(ValueError, match="batch"):
        D.simulate(small, np.zeros((64, 64)), rng)
    with pytest.raises(ValueError, match="post_log"):
        D.simulate(small, np.zeros((1, 64, 64)), rng, post_log=True)


def test_simulate_poisson_uses_the_unnormalised_transform(small):
    images = np.ones((1, 64, 64), np.float32)
    noise = D.PoissonNoise(mu=0.01, photons=1e9)
    pre_log = D.simulate(small, images, np.random.default_rng(0), noise=noise)
    line_integrals = small.ray_trafo(images[0]).data
    np.testing.assert_allclose(pre_log[0], np.exp(-0.01 * line_integrals), rtol=1e-3)
    post_log = D.simulate(small, images, np.random.default_rng(0), noise=noise, post_log=True)
    np.testing.assert_allclose(post_log[0], line_integrals, rtol=1e-2, atol=0.05)


# ---------------------------------------------------------------------------
# Pipelines and fixed sets
# ---------------------------------------------------------------------------

def _batches(dataset, n):
    return [(d.numpy(), x.numpy()) for d, x in dataset.take(n)]


def test_training_pairs_shapes_and_statistics(small):
    source = D.RandomPhantoms("ellipses", (64, 64))
    (data, image), = _batches(D.training_pairs(small, source, 4, seed=0), 1)
    assert data.shape == (4, *small.operator.range.shape, 1) and data.dtype == np.float32
    assert image.shape == (4, 64, 64, 1) and image.dtype == np.float32
    clean = D.forward_project(small.operator, image[..., 0])
    ratio = (data[..., 0] - clean).std(axis=(1, 2)) / np.abs(clean).mean(axis=(1, 2))
    np.testing.assert_allclose(ratio, 0.05, rtol=0.15)


def test_training_pairs_deterministic_parallel_and_resumable(small):
    source = D.RandomPhantoms("ellipses", (64, 64))
    serial = _batches(D.training_pairs(small, source, 2, seed=3, num_parallel_calls=1), 4)
    parallel = _batches(D.training_pairs(small, source, 2, seed=3, num_parallel_calls=3), 4)
    resumed = _batches(D.training_pairs(small, source, 2, seed=3, start=2), 2)
    other = _batches(D.training_pairs(small, source, 2, seed=4), 1)
    for (d1, x1), (d2, x2) in zip(serial, parallel, strict=True):
        assert np.array_equal(d1, d2) and np.array_equal(x1, x2)
    for (d1, x1), (d2, x2) in zip(serial[2:], resumed, strict=True):
        assert np.array_equal(d1, d2) and np.array_equal(x1, x2)
    assert not np.array_equal(serial[0][1], other[0][1])
    # Samples within a batch differ.
    assert not np.array_equal(serial[0][1][0], serial[0][1][1])


def test_training_pairs_visits_a_finite_set_once_per_epoch(small):
    images = np.arange(7, dtype=np.float32)[:, None, None] * np.ones((7, 64, 64), np.float32)
    source = D.ImageSet.from_array(images, name="ramp")
    batches = _batches(D.training_pairs(small, source, 3, seed=1, num_batches=7), 7)
    order = np.concatenate([x[:, 0, 0, 0] for _, x in batches]).astype(int)
    for epoch in range(3):
        assert sorted(order[7 * epoch:7 * epoch + 7]) == list(range(7))
    assert list(order[:7]) != list(order[7:14])  # reshuffled every epoch
    resumed = _batches(D.training_pairs(small, source, 3, seed=1, start=5, num_batches=2), 2)
    assert np.array_equal(resumed[0][1], batches[5][1])
    assert np.array_equal(resumed[1][0], batches[6][0])


def test_fixed_set_is_bit_identical_and_not_a_training_sample(small):
    source = D.RandomPhantoms("ellipses", (64, 64))
    data, images = D.fixed_set(small, source, 3, seed=0)
    again = D.fixed_set(small, source, 3, seed=0)
    assert data.shape == (3, *small.operator.range.shape) and images.shape == (3, 64, 64)
    assert np.array_equal(data, again[0]) and np.array_equal(images, again[1])
    (_, train_images), = _batches(D.training_pairs(small, source, 3, seed=0), 1)
    assert not np.array_equal(train_images[..., 0], images)
    finite = D.ImageSet.from_array(images, name="three")
    data2, images2 = D.fixed_set(small, finite, seed=5)
    assert np.array_equal(images2, images)
    with pytest.raises(ValueError, match="n is required"):
        D.fixed_set(small, source)


def test_pipeline_rejects_mismatched_source_and_bad_arguments(small):
    with pytest.raises(ValueError, match="shape"):
        D.training_pairs(small, D.RandomPhantoms("ellipses", (128, 128)), 2, seed=0)
    source = D.RandomPhantoms("ellipses", (64, 64))
    with pytest.raises(ValueError, match="seed"):
        D.training_pairs(small, source, 2, seed=-1)
    with pytest.raises(ValueError, match="batch_size"):
        D.training_pairs(small, source, 0, seed=0)
    with pytest.raises(ValueError, match="post_log"):
        D.training_pairs(small, source, 1, seed=0, post_log=True)
    with pytest.raises(TypeError):
        D.training_pairs(small, np.zeros((3, 64, 64)), 1, seed=0)


def test_image_set_checks_images():
    bad = D.ImageSet(lambda i: np.full((4, 4), np.nan), 2, (4, 4), ["a.dcm", "b.dcm"], "bad")
    with pytest.raises(D.DataError, match="b.dcm.*NaN"):
        bad[1]
    wrong = D.ImageSet(lambda i: np.zeros((3, 4)), 1, (4, 4), ["c.dcm"], "wrong")
    with pytest.raises(D.DataError, match="c.dcm.*shape"):
        wrong[0]
    with pytest.raises(D.DataError, match="empty"):
        D.ImageSet(lambda i: None, 0, (4, 4))
    images = D.ImageSet.from_array(np.arange(3)[:, None, None] * np.ones((3, 2, 2)))
    assert images.subset([2, 0]).images()[:, 0, 0].tolist() == [2, 0]
    with pytest.raises(IndexError):
        images[3]


# ---------------------------------------------------------------------------
# Units and resampling
# ---------------------------------------------------------------------------

def test_hu_to_attenuation():
    np.testing.assert_allclose(D.hu_to_attenuation([-3024, -1024, -1000, 0, 1000]),
                               [0, 0, 0, 1, 2])
    with pytest.raises(D.DataError, match="NaN"):
        D.hu_to_attenuation([np.nan])


def test_resample_orientation_and_physical_size():
    # DICOM layout: row 0 is the top (+y), column 0 the left (-x).
    image = np.zeros((200, 200))
    image[:20, :20] = 1.0
    out = D.resample_to_grid(image, (1.0, 1.0), (20, 20), (-100, -100), (100, 100))
    assert out.shape == (20, 20) and out.dtype == np.float32
    assert out[:2, -2:].min() > 0.5 and out[2:].max() < 0.5  # x small, y large
    assert out[:2, -2:].sum() > 0 and out[:, :-2].max() < 0.5
    flipped = D.resample_to_grid(image, (1.0, 1.0), (20, 20), (-100, -100), (100, 100),
                                 rows_up=True)
    assert flipped[:2, :2].min() > 0.5
    # A disc of radius 50 mm keeps its size on a 2 mm grid.
    r = np.hypot(*np.meshgrid(np.arange(400) - 199.5, np.arange(400) - 199.5))
    disc = (r * 0.5 <= 50).astype(float)
    out = D.resample_to_grid(disc, (0.5, 0.5), (128, 128))
    assert abs(out.sum() * 4.0 - np.pi * 50**2) < 0.02 * np.pi * 50**2
    stretched = D.resample_to_grid(disc, (0.5, 0.5), (128, 128), scale="pixels")
    # Stretched over 256 mm, the 400 pixels are 0.64 mm: the disc's radius is 64 mm.
    assert abs(stretched.sum() * 4.0 - np.pi * 64**2) < 0.02 * np.pi * 64**2
    with pytest.raises(ValueError, match="scale"):
        D.resample_to_grid(disc, (0.5, 0.5), (8, 8), scale="fit")


# ---------------------------------------------------------------------------
# Real CT that installs offline
# ---------------------------------------------------------------------------

def test_head_ct_splits_are_disjoint_and_real():
    _head_ct_or_skip()
    volume, spacing = D.load_inv3()
    assert volume.shape == (108, 256, 256) and volume.min() >= -1024
    assert spacing[2] == pytest.approx(1.5)
    sets = {split: D.real_ct_slices("human_small", split)
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
    images = D.real_ct_slices((64, 64), "other_patients")
    assert len(images) == 3 and images.shape == (64, 64)
    assert all(label.startswith("pydicom:") for label in images.labels)
    stack = images.images()
    assert stack.min() >= 0 and 0.9 < np.median(stack[stack > 0.5]) < 1.2
    with pytest.raises(ValueError, match="split"):
        D.real_ct_slices((64, 64), "everything")


def test_missing_head_ct_says_how_to_get_it(tmp_path):
    with pytest.raises(D.DataSourceMissing, match="invesalius-examples"):
        D.load_inv3(tmp_path / "Cranium.inv3")


def test_real_ct_feeds_the_pipeline(small):
    _head_ct_or_skip()
    source = D.real_ct_slices(small, "validation")
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
    slices = D.scan_mayo(root)
    assert [s.patient for s in slices] == ["L067"] * 3 + ["L096"] * 3
    assert [s.z for s in slices[:3]] == sorted(z for z, _ in written[("L067", "full_3mm")])
    images = D.mayo_slices(root, (16, 16))
    assert len(images) == 6 and images.shape == (16, 16)
    for k, (_, hu) in enumerate(sorted(written[("L067", "full_3mm")])):
        np.testing.assert_allclose(images[k], (hu + 1000) / 1000, rtol=1e-5)
        assert images.labels[k].startswith("L067:")
    quarter = D.mayo_slices(root, (16, 16), dose="quarter", patients=["L096"])
    assert len(quarter) == 3
    assert len(D.scan_mayo(root, exclude_patients=["L096"])) == 3


def test_mayo_feeds_the_pipeline(mayo_tree, small):
    root, _ = mayo_tree
    source = D.mayo_slices(root, small)
    (data, image), = _batches(D.training_pairs(small, source, 2, seed=0), 1)
    assert data.shape == (2, *small.operator.range.shape, 1) and image.shape == (2, 64, 64, 1)


def test_mayo_errors_name_the_file(tmp_path):
    with pytest.raises(D.DataSourceMissing, match="does not exist"):
        D.scan_mayo(tmp_path / "nowhere")
    with pytest.raises(D.DataError, match="no patient folders"):
        D.scan_mayo(tmp_path)
    write_mayo_tree(tmp_path, patients=("L067",), slices=2, size=512, series=("full_3mm",))
    series = tmp_path / "L067" / "full_3mm"
    corrupt = series / "L067_FD_3_1.CT.0001.0099.IMA"
    corrupt.write_bytes(b"not a dicom file" * 10)
    with pytest.raises(D.DataError, match="0099.IMA.*not a readable DICOM"):
        D.scan_mayo(tmp_path)
    with pytest.warns(UserWarning, match="0099.IMA"):
        assert len(D.scan_mayo(tmp_path, skip_bad=True)) == 2
    corrupt.unlink()
    write_ct_dicom(series / "small.IMA", np.zeros((256, 256), np.int16))
    with pytest.raises(D.DataError, match="small.IMA.*256 x 256.*512 x 512"):
        D.scan_mayo(tmp_path)
    (series / "small.IMA").unlink()
    write_ct_dicom(series / "nan.IMA", np.zeros((512, 512), np.int16), slope="nan")
    with pytest.raises(D.DataError, match="nan.IMA.*NaN"):
        D.scan_mayo(tmp_path)
    (series / "nan.IMA").unlink()
    truncated = write_ct_dicom(series / "cut.IMA", np.zeros((512, 512), np.int16))
    truncated.write_bytes(truncated.read_bytes()[:-1000])
    with pytest.raises(D.DataError, match="cut.IMA"):
        D.scan_mayo(tmp_path)
    truncated.unlink()
    with pytest.raises(D.DataError, match="quarter_3mm"):
        D.scan_mayo(tmp_path, dose="quarter")
    with pytest.raises(D.DataError, match="L999"):
        D.scan_mayo(tmp_path, patients=["L999"])


# ---------------------------------------------------------------------------
# LoDoPaB-CT
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lodopab_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("lodopab")
    return root, write_lodopab(root, "validation", counts=(2, 1))


def test_lodopab_reads_files_in_the_real_format(lodopab_dir):
    root, written = lodopab_dir
    data = D.LoDoPaB(root, "validation", samples_per_file=2)
    assert len(data) == 3 and data.has_observations
    np.testing.assert_array_equal(data.ground_truth_sample(2), written["ground_truth"][1][0])
    observation, truth = data.pair(1)
    assert observation.shape == (1000, 513) and truth.shape == (362, 362)
    np.testing.assert_array_equal(observation, written["observation"][0][1])
    images = data.ground_truth()
    assert images.shape == (362, 362) and images.labels[2] == "ground_truth_validation_001.hdf5[0]"
    attenuation = data.ground_truth(units="attenuation")[0]
    expected = np.maximum((written["ground_truth"][0][0] * D.LODOPAB_MU_MAX - 0.02) / 19.98, 0)
    np.testing.assert_allclose(attenuation, expected, rtol=1e-5, atol=1e-6)
    resampled = data.ground_truth((64, 64))
    assert resampled.shape == (64, 64) and resampled[0].shape == (64, 64)


def test_lodopab_feeds_measured_pairs(lodopab_dir):
    root, _ = lodopab_dir
    data = D.LoDoPaB(root, "validation", samples_per_file=2)
    (obs, truth), = _batches(D.measured_pairs(data, 2, seed=0), 1)
    assert obs.shape == (2, 1000, 513, 1) and truth.shape == (2, 362, 362, 1)
    problem = D.lodopab_problem()
    assert problem.shape == (362, 362) and problem.det_shape == 513


def test_lodopab_errors_name_the_file(tmp_path):
    import h5py

    with pytest.raises(D.DataSourceMissing, match="does not exist"):
        D.LoDoPaB(tmp_path / "nowhere")
    with pytest.raises(D.DataError, match="no ground_truth_train_NNN"):
        D.LoDoPaB(tmp_path)
    write_lodopab(tmp_path, "train", counts=(2, 2, 1), observations=False)
    assert not D.LoDoPaB(tmp_path, samples_per_file=2).has_observations
    with pytest.raises(D.DataError, match="train_000.hdf5: 2 samples, expected 128"):
        D.LoDoPaB(tmp_path)  # the first file is short for the real layout
    corrupt = tmp_path / "ground_truth_train_001.hdf5"
    corrupt.write_bytes(b"\x89HDF garbage" * 100)
    with pytest.raises(D.DataError, match="train_001.hdf5.*not a readable HDF5"):
        D.LoDoPaB(tmp_path, samples_per_file=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        skipping = D.LoDoPaB(tmp_path, samples_per_file=2, skip_bad=True)
    assert len(skipping) == 3 and any("train_001" in str(w.message) for w in caught)
    with h5py.File(corrupt, "w") as f:
        f.create_dataset("data", data=np.zeros((2, 100, 100), np.float32))
    with pytest.raises(D.DataError, match="train_001.hdf5.*shape"):
        D.LoDoPaB(tmp_path, samples_per_file=2)
    with h5py.File(corrupt, "w") as f:
        f.create_dataset("other", data=np.zeros(1))
    with pytest.raises(D.DataError, match="train_001.hdf5.*'data'"):
        D.LoDoPaB(tmp_path, samples_per_file=2)
    nan = np.zeros((2, 362, 362), np.float32)
    nan[1, 5, 5] = np.nan
    with h5py.File(corrupt, "w") as f:
        f.create_dataset("data", data=nan)
    data = D.LoDoPaB(tmp_path, samples_per_file=2)
    with pytest.raises(D.DataError, match="train_001.hdf5: sample 1 .*NaN"):
        data.ground_truth_sample(3)
    with pytest.raises(D.DataError, match="train_001.hdf5.*NaN"):
        D.LoDoPaB(tmp_path, samples_per_file=2, check_values=True)
    with pytest.raises(D.DataSourceMissing, match="observation"):
        data.observation(0)
    (tmp_path / "ground_truth_train_001.hdf5").unlink()
    with pytest.raises(D.DataError, match="missing ground_truth_train_001"):
        D.LoDoPaB(tmp_path, samples_per_file=2)


# ---------------------------------------------------------------------------
# What is installed
# ---------------------------------------------------------------------------

def test_describe_sources(mayo_tree, lodopab_dir, tmp_path):
    root, _ = mayo_tree
    text = D.describe_sources(mayo_dir=root, lodopab_dir=lodopab_dir[0])
    for name in ("ellipses", "rectangles", "shepp_logan", "head_ct", "pydicom_ct", "mayo",
                 "lodopab"):
        assert name in text
    assert "2 patients" in text and "full_3mm 6" in text
    assert "validation: 2 ground-truth" in text
    sources = {s["name"]: s for s in D.data_sources(mayo_dir=tmp_path / "no",
                                                    lodopab_dir=tmp_path / "no")}
    assert not sources["mayo"]["available"] and "LPD_MAYO_DIR" in sources["mayo"]["how_to_get"]
    assert "zenodo" in sources["lodopab"]["how_to_get"]
    assert sources["ellipses"]["available"]
    if not sources["head_ct"]["available"]:
        assert "apt-get install invesalius-examples" in sources["head_ct"]["how_to_get"]
