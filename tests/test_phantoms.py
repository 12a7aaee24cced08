"""Tests of lpd.phantoms: the paper's ellipse distribution, Shepp-Logan, rasterisers."""

from __future__ import annotations

import numpy as np
import pytest

from lpd.data import phantoms


@pytest.fixture(scope="module")
def odl():
    # Through lpd.operators, which undoes ODL's change of numpy print options.
    from lpd.physics import operators

    return operators.odl


@pytest.mark.parametrize("shape, half_width", [((128, 128), 64.0), ((64, 64), 32.0),
                                               ((50, 37), 1.0), ((512, 512), 128.0)])
@pytest.mark.parametrize("modified", [True, False])
def test_shepp_logan_equals_odl(odl, shape, half_width, modified):
    space = odl.uniform_discr([-half_width, -half_width], [half_width, half_width], shape,
                              dtype="float32")
    expected = odl.phantom.shepp_logan(space, modified=modified).data
    got = phantoms.shepp_logan(shape, modified=modified)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


def test_random_ellipses_equal_odl_ellipsoid_phantom(odl):
    space = odl.uniform_discr([-64, -64], [64, 64], (128, 128), dtype="float32")
    rng = np.random.default_rng(3)
    for _ in range(5):
        params = phantoms.random_ellipse_params(rng)
        expected = odl.phantom.ellipsoid_phantom(space, params.tolist()).data
        np.testing.assert_allclose(phantoms.ellipses_to_image(params, (128, 128)), expected,
                                   rtol=0, atol=1e-6)


def test_ellipse_parameter_statistics_match_the_paper():
    rng = np.random.default_rng(0)
    draws = [phantoms.random_ellipse_params(rng) for _ in range(400)]
    counts = np.array([len(d) for d in draws])
    # Poisson(50): mean 50, variance 50; the mean of 400 has std 0.35.
    assert abs(counts.mean() - 50) < 1.5
    assert 35 < counts.var() < 65
    params = np.concatenate(draws)
    value, a, b, x0, y0, theta = params.T
    # value = (U - 0.5) * Exp(scale 0.4): mean 0, E|value| = 0.25 * 0.4, var = 2 * 0.4^2 / 12.
    assert abs(value.mean()) < 0.01
    assert abs(np.abs(value).mean() - 0.1) < 0.005
    assert abs(value.var() - 2 * 0.4**2 / 12) < 0.003
    for axis in (a, b):  # 0.2 * Exp(1): mean and std 0.2, positive
        assert axis.min() > 0
        assert abs(axis.mean() - 0.2) < 0.01
        assert abs(axis.std() - 0.2) < 0.015
    for centre in (x0, y0):  # U(-1, 1): mean 0, variance 1/3
        assert -1 <= centre.min() and centre.max() <= 1
        assert abs(centre.mean()) < 0.03
        assert abs(centre.var() - 1 / 3) < 0.02
    assert 0 <= theta.min() and theta.max() < 2 * np.pi
    assert abs(theta.mean() - np.pi) < 0.06


def test_random_ellipses_are_deterministic_for_a_seed():
    first = phantoms.random_ellipses(np.random.default_rng(7))
    again = phantoms.random_ellipses(np.random.default_rng(7))
    other = phantoms.random_ellipses(np.random.default_rng(8))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.shape == (128, 128) and first.dtype == np.float32


def test_image_is_indexed_like_odl_x_then_y():
    # An ellipse right of centre (x0 = 0.5) lies in the upper half of axis 0.
    image = phantoms.ellipses_to_image([[1.0, 0.2, 0.1, 0.5, 0.0, 0.0]], (64, 64))
    assert image[32:].sum() > 0 and image[:32].sum() == 0
    # Wider along x than along y.
    rows, cols = np.nonzero(image)
    assert np.ptp(rows) > np.ptp(cols)
    np.testing.assert_array_equal(image, image[:, ::-1])


def test_ellipse_area_and_rotation():
    n = 257
    image = phantoms.ellipses_to_image([[1.0, 0.6, 0.3, 0.0, 0.0, 0.0]], (n, n))
    pixel_area = (2 / (n - 1)) ** 2
    assert abs(image.sum() * pixel_area - np.pi * 0.6 * 0.3) < 0.01
    # A quarter turn swaps the half-axes.
    turned = phantoms.ellipses_to_image([[1.0, 0.6, 0.3, 0.0, 0.0, np.pi / 2]], (n, n))
    swapped = phantoms.ellipses_to_image([[1.0, 0.3, 0.6, 0.0, 0.0, 0.0]], (n, n))
    assert np.sum(turned != swapped) <= 8  # rounding on the boundary only


def test_ellipses_add_up():
    one = [1.0, 0.5, 0.5, 0.0, 0.0, 0.0]
    two = [0.5, 0.2, 0.2, 0.1, 0.0, 0.0]
    both = phantoms.ellipses_to_image([one, two], (32, 32))
    np.testing.assert_allclose(both, phantoms.ellipses_to_image([one], (32, 32))
                               + phantoms.ellipses_to_image([two], (32, 32)))
    assert phantoms.ellipses_to_image(np.zeros((0, 6)), (8, 8)).sum() == 0


def test_rectangles_are_a_different_family():
    rect = phantoms.rectangles_to_image([[1.0, 0.5, 0.25, 0.0, 0.0, 0.0]], (65, 65))
    i, j = np.nonzero(rect)
    # Pixel centres at -1 + k / 32: |x| <= 0.5 and |y| <= 0.25 give 33 x 17 pixels.
    assert (np.ptp(i) + 1, np.ptp(j) + 1) == (33, 17)
    assert rect.sum() == 33 * 17
    rng = np.random.default_rng(1)
    image = phantoms.random_rectangles(rng, (64, 64))
    assert image.shape == (64, 64) and np.any(image != 0)
    same_params = phantoms.random_ellipses(np.random.default_rng(1), (64, 64))
    assert not np.array_equal(image, same_params)


def test_random_phantom_registry():
    rng = np.random.default_rng(0)
    assert set(phantoms.PHANTOMS) >= {"ellipses", "rectangles"}
    assert phantoms.random_phantom("ellipses", rng, (16, 24)).shape == (16, 24)
    with pytest.raises(ValueError, match="unknown phantom family"):
        phantoms.random_phantom("blobs", rng)


@pytest.mark.parametrize("params, message", [
    (np.zeros((3, 5)), "shape"),
    ([[1.0, np.nan, 0.2, 0.0, 0.0, 0.0]], "NaN"),
    ([[1.0, 0.0, 0.2, 0.0, 0.0, 0.0]], "half-axes"),
])
def test_bad_parameters_are_rejected(params, message):
    with pytest.raises(ValueError, match=message):
        phantoms.ellipses_to_image(params, (8, 8))


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        phantoms.shepp_logan((0, 8))
    with pytest.raises(ValueError, match="shape"):
        phantoms.shepp_logan((8, 8, 8))
