"""Candidate ellipses read off an image, and their proposal density (lpd.methods.candidates)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lpd.data import phantoms
from lpd.methods import candidates as C
from lpd.methods.posterior import footprint


def _boundary(shape, n=40, start=0.0, stop=2 * math.pi):
    a, b, x0, y0, theta = shape
    t = np.linspace(start, stop, n, endpoint=False)
    return np.stack([x0 + a * math.cos(theta) * np.cos(t) - b * math.sin(theta) * np.sin(t),
                     y0 + a * math.sin(theta) * np.cos(t) + b * math.cos(theta) * np.sin(t)], 1)


def test_a_conic_through_points_of_an_ellipse_is_that_ellipse():
    rng = np.random.default_rng(0)
    for _ in range(20):
        shape = np.array([rng.uniform(0.1, 0.8), rng.uniform(0.1, 0.8), rng.uniform(-0.5, 0.5),
                          rng.uniform(-0.5, 0.5), rng.uniform(0, 2 * math.pi)])
        # A quarter of the boundary is enough without noise.
        found, ok = C.conics_to_ellipses(C.fit_conics(_boundary(shape, 12, 0.3, 0.3 + math.pi / 2)))
        assert ok[0]
        np.testing.assert_allclose(C.canonical(found[0]), C.canonical(shape), atol=1e-8)
    # A hyperbola and a pair of lines are not ellipses.
    x = np.linspace(1, 3, 8)
    _, ok = C.conics_to_ellipses(C.fit_conics(np.stack([x, 1 / x], 1)))
    assert not ok[0]
    _, ok = C.conics_to_ellipses(np.array([[0.0, 1.0, 0.0, 0.0, 0.0, 0.0]]))
    assert not ok[0]


def test_the_visible_perimeter_is_the_part_inside_the_square():
    inside = np.array([[0.3, 0.3, 0.0, 0.0, 0.0]])
    assert C.visible_perimeter(inside, 4096)[0] == pytest.approx(2 * math.pi * 0.3, rel=1e-4)
    # A circle centred on the square's edge shows half its boundary.
    half = np.array([[0.3, 0.3, 1.0, 0.0, 0.0]])
    assert C.visible_perimeter(half, 4096)[0] == pytest.approx(math.pi * 0.3, rel=1e-2)


def _iou(shape, other, grid):
    a = set(footprint(np.concatenate([[1.0], shape]), grid))
    b = set(footprint(np.concatenate([[1.0], other]), grid))
    return len(a & b) / len(a | b)


def test_overlapping_ellipses_are_found_from_their_edges():
    # Three large ellipses that overlap one another, one that lies inside
    # another, and one on its own, with a 1 % noise: regions of constant value
    # no longer match any one ellipse, their boundaries still do.
    marks = np.array([[0.5, 0.55, 0.3, -0.2, 0.0, 0.4],
                      [-0.3, 0.45, 0.25, 0.2, 0.15, 2.0],
                      [0.25, 0.35, 0.6, 0.0, -0.2, 1.2],
                      [0.4, 0.12, 0.08, -0.35, 0.05, 0.0],
                      [0.3, 0.2, 0.15, 0.65, -0.65, 0.8]])
    grid = (128, 128)
    image = phantoms.ellipses_to_image(marks, grid)
    image = image + 0.01 * np.random.default_rng(1).standard_normal(grid)
    found = C.detect_ellipses(image)
    assert np.all(found[:, 0] >= found[:, 1])
    assert np.all((found[:, 4] >= 0) & (found[:, 4] < math.pi))
    for mark in marks:
        assert max(_iou(mark[1:], f, grid) for f in found) > 0.9, mark
    # Explained away, the parts of boundaries go with their ellipses.
    few = C.detect_ellipses(image, explain_away=True)
    assert 5 <= len(few) <= 12 < len(found)
    for mark in marks:
        assert max(_iou(mark[1:], f, grid) for f in few) > 0.9, mark
    # The regions of the thresholded image do not give the overlapping ones.
    regions = C.moment_candidates(image)
    assert max(_iou(marks[0, 1:], r[1:], grid) for r in regions) < 0.9
    # A flat image has no edges, so no ellipses; bad input is named.
    assert len(C.detect_ellipses(np.zeros(grid))) == 0
    with pytest.raises(ValueError, match="2D image"):
        C.detect_ellipses(np.zeros(16))
    with pytest.raises(ValueError, match="low <= high"):
        C.detect_ellipses(image, low=0.1, high=0.01)


def test_moment_candidates_recover_an_ellipse_from_its_image():
    mark = np.array([0.6, 0.5, 0.25, 0.1, -0.2, 0.7])
    image = phantoms.ellipses_to_image(mark[None], (96, 96))
    found = C.moment_candidates(image)
    assert found, "no candidate"
    best = found[0]
    assert best[0] == pytest.approx(0.6, rel=1e-6)
    np.testing.assert_allclose(best[1:5], mark[1:5], atol=0.02)
    # The rotation is that of the axes, known up to a half turn.
    assert abs(((best[5] - mark[5]) + math.pi / 2) % math.pi - math.pi / 2) < 0.02
    assert C.moment_candidates(np.zeros((8, 8))) == []


def test_the_library_density_is_a_density_the_same_for_every_parametrisation():
    shape = np.array([0.4, 0.2, 0.1, -0.1, 0.5])
    widths = np.array([0.02, 0.03, 0.02, 0.04, 0.1])
    library = C.EllipseLibrary(shape[None], widths, scales=(1.0,))
    assert len(library) == 1
    # The four ways of writing one ellipse have one density.
    same = [shape, shape + [0, 0, 0, 0, math.pi],
            np.array([0.2, 0.4, 0.1, -0.1, 0.5 + math.pi / 2]),
            np.array([0.2, 0.4, 0.1, -0.1, 0.5 + 3 * math.pi / 2])]
    values = [library.log_density(s) for s in same]
    np.testing.assert_allclose(values, values[0], rtol=0, atol=1e-12)
    # At a kernel's centre: a quarter of the Gaussian's peak (the other copies are far).
    peak = -np.sum(np.log(widths * math.sqrt(2 * math.pi))) + math.log(0.25)
    assert values[0] == pytest.approx(peak, abs=1e-9)
    # Integrated over a box around one copy, the density gives that copy's quarter.
    rng = np.random.default_rng(0)
    box = 5 * widths
    points = shape + rng.uniform(-1, 1, (100_000, 5)) * box
    mass = np.mean(np.exp([library.log_density(p) for p in points])) * np.prod(2 * box)
    assert mass == pytest.approx(0.25, rel=0.03)
    # Draws land near one of the copies, with the rotation in [0, 2 pi).
    draws = np.array([library.sample(rng) for _ in range(400)])
    assert np.all((draws[:, 4] >= 0) & (draws[:, 4] < 2 * math.pi))
    assert np.all(np.abs(draws[:, 2:4] - shape[2:4]) < 6 * widths[2:4])
    # Kernels of two scales: half the mass in each, the narrow one's peak above.
    long = np.array([0.7, 0.15, 0.1, -0.1, 0.5])  # its other copies outside the box
    mixed = C.EllipseLibrary(long[None], widths, scales=(1.0, 3.0))
    assert mixed.log_density(long) == pytest.approx(
        peak + math.log(0.5 * (1 + 3.0 ** -5)), abs=1e-9)
    # ... and everywhere the mean of the two single-scale libraries.
    narrow = C.EllipseLibrary(long[None], widths, scales=(1.0,))
    wide = C.EllipseLibrary(long[None], 3 * widths, scales=(1.0,))
    for point in long + rng.uniform(-1, 1, (50, 5)) * box:
        assert mixed.log_density(point) == pytest.approx(np.logaddexp(
            narrow.log_density(point), wide.log_density(point)) - math.log(2), abs=1e-9)
    # Far from every candidate the density is all but zero, and its log finite.
    assert -math.inf < library.log_density(np.array([0.4, 0.2, 0.9, 0.9, 0.5])) < -1000


def test_draws_near_a_shape_favour_the_candidates_centred_near_it():
    widths = np.array([0.02, 0.03, 0.02, 0.04, 0.1])
    shapes = np.array([[0.4, 0.2, 0.1, -0.1, 0.5], [0.3, 0.25, -0.5, 0.6, 1.0]])
    library = C.EllipseLibrary(shapes, widths, scales=(1.0,))
    near = np.array([0.3, 0.1, 0.0, 0.0, 0.0])  # 0.14 from the first, 0.85 from the second
    d2 = np.sum((shapes[:, 2:4] - near[2:4]) ** 2, axis=1)
    shares = np.exp(-0.5 * d2 / 0.3 ** 2)
    shares /= shares.sum()
    # At a candidate's kernel centre: its share of a quarter of the Gaussian's peak.
    peak = -np.sum(np.log(widths * math.sqrt(2 * math.pi))) + math.log(0.25)
    for k in range(2):
        assert library.log_density(shapes[k], near=near) == pytest.approx(
            peak + math.log(shares[k]), abs=1e-9)
    # Without near the two are drawn alike; near the first, nearly always the first.
    rng = np.random.default_rng(0)
    draws = np.array([library.sample(rng, near=near) for _ in range(2000)])
    first = np.mean(np.abs(draws[:, 2] - 0.1) < 0.2)
    assert first == pytest.approx(shares[0], abs=0.02) and shares[0] > 0.95
    # It is a density: the mass of the draws' density ratio to the uniform mixture's
    # own draws is 1 (importance sampling of the one by the other).
    plain = np.array([library.sample(rng) for _ in range(4000)])
    ratio = np.exp([library.log_density(p, near=near) - library.log_density(p)
                    for p in plain])
    assert np.mean(ratio) == pytest.approx(1.0, rel=0.05)
    with pytest.raises(ValueError, match="half-axes > 0"):
        library.sample(rng, near=np.array([0.0, 0.0, 0.0, 0.0, 0.0]))


def test_bad_libraries_are_named():
    with pytest.raises(ValueError, match="at least one"):
        C.EllipseLibrary(np.zeros((0, 5)))
    with pytest.raises(ValueError, match="half-axes > 0"):
        C.EllipseLibrary(np.array([[0.0, 0.2, 0, 0, 0]]))
    with pytest.raises(ValueError, match="at most 0.5 rad"):
        C.EllipseLibrary(np.array([[0.3, 0.2, 0, 0, 0]]), widths=(0.01, 0.01, 0.01, 0.01, 1.0))
    with pytest.raises(ValueError, match="scales"):
        C.EllipseLibrary(np.array([[0.3, 0.2, 0, 0, 0]]), scales=(1.0, 0.0))
