"""Tests of lpd.datasets: noise, simulation, image sources and pipelines."""

from __future__ import annotations

import numpy as np
import pytest

from lpd.config import NoiseConfig
from lpd.data import phantoms
from lpd.data import pipelines as D


@pytest.fixture(scope="module")
def small():
    """The 64 x 64 ellipse set-up: same physics as the paper's, cheap to build."""
    from lpd.physics import operators

    return operators.get_setup("ellipses_small")


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


def test_symmetry_is_the_group_of_the_square():
    image = np.arange(12.0).reshape(3, 4)
    assert np.array_equal(D.symmetry(image, 0), image)
    assert np.array_equal(D.symmetry(image, 1), image[::-1])
    assert np.array_equal(D.symmetry(image, 2), image[:, ::-1])
    assert np.array_equal(D.symmetry(image, 3), image[::-1, ::-1])
    square = np.arange(16.0).reshape(4, 4)
    eight = {D.symmetry(square, k).tobytes() for k in range(8)}
    rotations = {np.rot90(square, r).tobytes() for r in range(4)}
    reflections = {np.rot90(square.T, r).tobytes() for r in range(4)}
    assert eight == rotations | reflections and len(eight) == 8
    with pytest.raises(ValueError, match="square"):
        D.symmetry(image, 4)
    with pytest.raises(ValueError, match="0 to 7"):
        D.symmetry(square, 8)


def test_inverse_symmetry_undoes_each_symmetry():
    square = np.arange(16.0).reshape(4, 4)
    for k in range(8):
        back = D.symmetry(D.symmetry(square, k), D.inverse_symmetry(k))
        assert np.array_equal(back, square), k
    assert [D.inverse_symmetry(k) for k in range(8)] == [0, 1, 2, 3, 4, 6, 5, 7]
    with pytest.raises(ValueError, match="0 to 7"):
        D.inverse_symmetry(-1)


def test_training_pairs_augment_simulates_the_transformed_image(small):
    rng = np.random.default_rng(0)
    images = rng.random((5, 64, 64)).astype(np.float32)
    source = D.ImageSet.from_array(images, name="random")
    plain = _batches(D.training_pairs(small, source, 4, seed=2, num_batches=4), 4)
    augmented = _batches(D.training_pairs(small, source, 4, seed=2, num_batches=4,
                                          augment="dihedral"), 4)
    used = set()
    for (_, x0), (data, x1) in zip(plain, augmented, strict=True):
        for a, b in zip(x0[..., 0], x1[..., 0], strict=True):
            matches = [k for k in range(8) if np.array_equal(D.symmetry(a, k), b)]
            assert matches, "an augmented image is no symmetry of the plain one"
            used.add(matches[0])
        # The data are those of the transformed image (5 % noise on top).
        clean = D.forward_project(small.operator, x1[..., 0])
        ratio = (data[..., 0] - clean).std(axis=(1, 2)) / np.abs(clean).mean(axis=(1, 2))
        np.testing.assert_allclose(ratio, 0.05, rtol=0.2)
    assert len(used) >= 4
    resumed = _batches(D.training_pairs(small, source, 4, seed=2, start=3, num_batches=1,
                                        augment="dihedral"), 1)
    assert np.array_equal(resumed[0][0], augmented[3][0])
    with pytest.raises(ValueError, match="unknown augment"):
        D.training_pairs(small, source, 4, seed=2, augment="rotate")


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
    # The phantoms' ellipses can be drawn again (the limit's planted chains start there).
    for i in range(3):
        params = phantoms.random_ellipse_params(D.fixed_image_rng(0, i))
        assert np.array_equal(phantoms.ellipses_to_image(params, (64, 64)).astype(np.float32),
                              images[i])


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
