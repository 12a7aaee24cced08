"""Candidate ellipses read off an image, and the birth proposal built on them.

The posterior sampler of `lpd.methods.posterior` adds ellipses by births. A
birth drawn from the prior almost never hits the shape of a large ellipse that
overlaps others, so a chain cannot reach the basin of a phantom made of many
(the prior's Poisson(50) draws are): it tiles the image with small ellipses
instead. A sharp reconstruction of the same data (LPD's, or an FBP) shows the
boundaries of every ellipse, overlapping or not, as edges. This module finds
the ellipses those edges draw and turns them into a proposal density.

`detect_ellipses` (a sketch of arc-based ellipse detection):

1. edges: Canny's detector on the image, thinned to one pixel, with the image's
   gradient direction at each edge pixel; its thresholds rise above the
   image's white noise (`noise_level`), so that noise draws no edges;
2. segments: the edge pixels split at junctions (pixels of three or more
   neighbours, where boundaries cross) into chains, each cut into overlapping
   segments of a few pixels, so that every segment lies on one boundary;
3. hypotheses: an algebraic least-squares conic through every pair of segments
   within reach of each other, and through random triples of them; the conics
   that are ellipses inside the image's square are kept;
4. support: the share of an ellipse's visible perimeter (the part inside the
   image) covered by edge pixels within a pixel of it whose gradient is normal
   to it; each hypothesis is re-fitted to its own such pixels a few times (a
   RANSAC-style refinement), and those supported enough are kept, one per
   ellipse (the best supported of near-identical ones).

`moment_candidates` is the cruder detector of isolated regions (one ellipse per
connected region of a thresholded image) that the greedy start also uses.

`EllipseLibrary` is a state-independent proposal density on the shapes
``(a, b, x0, y0, theta)``: a Gaussian kernel around each candidate, in each of
the four parametrisations of the same ellipse (``(a, b, theta)``,
``(a, b, theta + pi)``, ``(b, a, theta + pi / 2)``, ``(b, a, theta + 3 pi / 2)``),
so that a chain's ellipse has the same proposal density however it is written.
Being independent of the chain's state, its density enters the birth's and the
death's Metropolis-Hastings-Green ratios as it is.

Coordinates are those of `lpd.data.phantoms`: the image's first axis is ``x``,
both axes span ``[-1, 1]`` from the first pixel centre to the last, and
``theta`` turns the ``a`` axis from ``x`` towards ``y``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["EllipseLibrary", "detect_ellipses", "grid_coordinates", "moment_candidates",
           "noise_level"]


def grid_coordinates(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The ``x`` and ``y`` coordinates of the pixel centres of a grid (phantoms' convention)."""
    def axis(n: int) -> np.ndarray:
        return (np.arange(n) - (n - 1) / 2) / ((n - 1) / 2) if n > 1 else np.zeros(1)

    return axis(int(shape[0])), axis(int(shape[1]))


# -- conics ----------------------------------------------------------------------------


def fit_conics(points: np.ndarray) -> np.ndarray:
    """Algebraic least-squares conics ``A x^2 + B xy + C y^2 + D x + E y + F = 0``.

    ``points``: shape ``(k, 2)`` or a batch ``(n, k, 2)`` of ``k >= 5`` points;
    returns the unit coefficient vectors ``(A, B, C, D, E, F)`` that minimise the
    summed squared algebraic residual, shape ``(6,)`` or ``(n, 6)``.
    """
    points = np.asarray(points, np.float64)
    x, y = points[..., 0], points[..., 1]
    design = np.stack([x * x, x * y, y * y, x, y, np.ones_like(x)], -1)
    return np.linalg.svd(design, full_matrices=False)[2][..., -1, :]


def conics_to_ellipses(coefficients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shapes ``(a, b, x0, y0, theta)`` of conics, and which of them are real ellipses."""
    A, B, C, D, E, F = np.asarray(coefficients, np.float64).reshape(-1, 6).T
    det = A * C - B * B / 4
    ok = det > 0
    with np.errstate(all="ignore"):
        x0 = (B * E / 2 - C * D) / (2 * det)
        y0 = (B * D / 2 - A * E) / (2 * det)
        level = A * x0 * x0 + B * x0 * y0 + C * y0 * y0 + D * x0 + E * y0 + F
        quad = np.stack([np.stack([A, B / 2], -1), np.stack([B / 2, C], -1)], -2)
        lam, vec = np.linalg.eigh(np.where(ok[:, None, None], quad, np.eye(2)))
        s1, s2 = -level / lam[:, 0], -level / lam[:, 1]
        ok &= (s1 > 0) & (s2 > 0) & np.isfinite(s1) & np.isfinite(s2)
        a, b = np.sqrt(np.abs(s1)), np.sqrt(np.abs(s2))
        theta = np.arctan2(vec[:, 1, 0], vec[:, 0, 0]) % (2 * math.pi)
    shapes = np.stack([a, b, x0, y0, theta], 1)
    return np.where(ok[:, None], shapes, 0.0), ok


def _ellipse_frame(shapes: np.ndarray, points: np.ndarray):
    """Distance of each point to each ellipse (first order) and the ellipse's unit normal there."""
    a, b, x0, y0, theta = (shapes[:, k:k + 1] for k in range(5))
    cos, sin = np.cos(theta), np.sin(theta)
    dx, dy = points[None, :, 0] - x0, points[None, :, 1] - y0
    u, v = cos * dx + sin * dy, cos * dy - sin * dx
    radius = np.sqrt(u * u / (a * a) + v * v / (b * b))
    gu, gv = u / (a * a), v / (b * b)
    norm = np.sqrt(gu * gu + gv * gv) + 1e-12
    # |r - 1| / |grad r| with grad r = (gu, gv) / r.
    distance = np.abs(radius - 1) * radius / norm
    return distance, (cos * gu - sin * gv) / norm, (sin * gu + cos * gv) / norm


def _on_boundary(shapes, points, normals, tolerance: float) -> np.ndarray:
    """Which edge points lie on each ellipse: near it, with the image's gradient normal to it."""
    distance, nx, ny = _ellipse_frame(shapes, points)
    aligned = np.abs(nx * normals[None, :, 0] + ny * normals[None, :, 1]) > 0.9
    return (distance < tolerance) & aligned


def visible_perimeter(shapes: np.ndarray, samples: int = 256) -> np.ndarray:
    """Length of each ellipse's boundary inside the square ``[-1, 1]^2``."""
    a, b, x0, y0, theta = (shapes[:, k:k + 1] for k in range(5))
    t = np.linspace(0, 2 * math.pi, samples, endpoint=False)[None]
    cos, sin = np.cos(theta), np.sin(theta)
    px = x0 + a * cos * np.cos(t) - b * sin * np.sin(t)
    py = y0 + a * sin * np.cos(t) + b * cos * np.sin(t)
    length = np.sqrt((a * np.sin(t)) ** 2 + (b * np.cos(t)) ** 2) * (2 * math.pi / samples)
    return np.sum(length * ((np.abs(px) <= 1) & (np.abs(py) <= 1)), axis=1)


def canonical(shape: np.ndarray) -> np.ndarray:
    """The same ellipse with ``a >= b`` and ``theta`` in ``[0, pi)``."""
    a, b, x0, y0, theta = (float(v) for v in shape)
    if a < b:
        a, b, theta = b, a, theta + math.pi / 2
    return np.array([a, b, x0, y0, theta % math.pi])


def _same(e: np.ndarray, f: np.ndarray, tolerance: float) -> bool:
    """Whether two canonical shapes differ by less than ``tolerance`` everywhere on them."""
    if np.any(np.abs(e[:4] - f[:4]) > tolerance):
        return False
    turn = abs((e[4] - f[4] + math.pi / 2) % math.pi - math.pi / 2)
    return turn * (e[0] - e[1] + f[0] - f[1]) / 2 < tolerance


# -- edges and segments ---------------------------------------------------------------


def _ordered(pixels: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The pixels of one 8-connected chain without junctions, in order along it."""
    left = set(pixels)

    def neighbours(p):
        return [(p[0] + di, p[1] + dj) for di in (-1, 0, 1) for dj in (-1, 0, 1)
                if (di or dj) and (p[0] + di, p[1] + dj) in left]

    ends = [p for p in pixels if len(neighbours(p)) <= 1]
    current = min(ends) if ends else min(pixels)
    out = [current]
    left.discard(current)
    while True:
        nxt = neighbours(current)
        if not nxt:
            return out
        # A side neighbour before a corner one: a thinned chain's next pixel.
        current = min(nxt, key=lambda q: (abs(q[0] - current[0]) + abs(q[1] - current[1]), q))
        out.append(current)
        left.discard(current)


def _segments(edges: np.ndarray, xs, ys, length: int) -> list[np.ndarray]:
    """Edge chains split at junctions and cut into half-overlapping pieces of ``length`` pixels."""
    from scipy import ndimage

    neighbours = ndimage.convolve(edges.astype(np.int64), np.ones((3, 3), np.int64),
                                  mode="constant") - 1
    labels, _ = ndimage.label(edges & (neighbours <= 2), structure=np.ones((3, 3)))
    out = []
    for k, window in enumerate(ndimage.find_objects(labels), 1):
        i, j = np.nonzero(labels[window] == k)
        if i.size < length // 2:
            continue
        chain = np.array(_ordered(list(zip((i + window[0].start).tolist(),
                                           (j + window[1].start).tolist(), strict=True))))
        for start in range(0, max(len(chain) - length // 2, 1), max(length // 2, 1)):
            piece = chain[start:start + length]
            if len(piece) >= max(length // 2, 5):
                out.append(np.stack([xs[piece[:, 0]], ys[piece[:, 1]]], 1))
    return out


def noise_level(image) -> float:
    """The standard deviation of an image's white noise, robust to its edges.

    Immerkær's estimator (Computer Vision and Image Understanding 64(2), 1996):
    the image filtered by the difference of two Laplacians, which removes
    constant, linear and quadratic parts, has ``36 sigma^2`` variance on white
    noise; its median absolute value (x 1.4826) instead of its mean ignores the
    few pixels on edges.
    """
    from scipy import ndimage

    kernel = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
    filtered = ndimage.convolve(np.asarray(image, np.float64), kernel)[1:-1, 1:-1]
    return 1.4826 * float(np.median(np.abs(filtered))) / 6


def detect_ellipses(image, *, sigma: float = 1.0, low: float = 0.006, high: float = 0.015,
                    segment: int = 10, reach: float = 1.0, triples: int = 20_000,
                    tolerance: float = 0.75, min_support: float = 0.4, refine: int = 3,
                    explain_away: bool = False, seed: int = 0) -> np.ndarray:
    """The ellipses whose boundaries an image shows as edges (module docstring).

    Parameters
    ----------
    image : array, shape (nx, ny)
        A reconstruction: LPD's at its 1-2 % error finds most ellipses of
        contrast 0.03 and more; a noisy one needs larger ``sigma`` and thresholds.
    sigma, low, high : float
        Canny's smoothing (pixels) and the least hysteresis thresholds on its
        Sobel magnitude (a step of height ``c`` gives about ``3.2 c`` at
        ``sigma = 1``); they are raised to 3 and 6 times the image's white
        noise level (`noise_level`) where that is higher.
    segment : int
        Pixels per segment of an edge chain.
    reach : float
        Segments farther apart than this (in the image's ``[-1, 1]`` units) are
        not fitted together.
    triples : int
        Random triples of segments tried (besides every pair within reach).
    tolerance : float
        Distance from an ellipse, in pixels, of the edge pixels that support it.
    min_support : float
        Share of its visible perimeter that must be covered for an ellipse to be kept.
    refine : int
        Re-fits of each hypothesis to its supporting pixels.
    explain_away : bool
        Keep an ellipse only if the supporting pixels that no better-supported
        ellipse claimed still cover ``min_support`` of it. Far fewer candidates
        (tens where there are hundreds), a few true ellipses among those lost:
        for a search that picks among them (`posterior.greedy_start`) all are
        better.
    seed : int
        Seed of the random triples (the detection is deterministic given it).

    Returns
    -------
    shapes : array, shape (k, 5)
        ``(a, b, x0, y0, theta)`` per ellipse with ``a >= b`` and ``theta`` in
        ``[0, pi)``, the one of most supporting pixels first.
    """
    from scipy import ndimage, spatial
    from skimage import feature, morphology

    image = np.asarray(image, np.float64)
    if image.ndim != 2 or min(image.shape) < 8 or not np.all(np.isfinite(image)):
        raise ValueError(f"detect_ellipses needs a finite 2D image of at least 8 x 8 pixels, "
                         f"got shape {image.shape}")
    if not (0 < low <= high and sigma > 0 and segment >= 6 and reach > 0 and tolerance > 0
            and 0 < min_support <= 1 and triples >= 0 and refine >= 0):
        raise ValueError("detect_ellipses needs 0 < low <= high, sigma > 0, segment >= 6, "
                         "reach > 0, tolerance > 0, 0 < min_support <= 1, triples >= 0 and "
                         "refine >= 0")
    rng = np.random.default_rng(seed)
    xs, ys = grid_coordinates(image.shape)
    pixel = float(xs[1] - xs[0])
    noise = noise_level(image)
    edges = morphology.thin(feature.canny(image, sigma=sigma, low_threshold=max(low, 3 * noise),
                                          high_threshold=max(high, 6 * noise)))
    i, j = np.nonzero(edges)
    points = np.stack([xs[i], ys[j]], 1)
    gradient = np.stack([ndimage.gaussian_filter(image, sigma, order=(1, 0))[i, j],
                         ndimage.gaussian_filter(image, sigma, order=(0, 1))[i, j]], 1)
    normals = gradient / (np.linalg.norm(gradient, axis=1, keepdims=True) + 1e-12)
    segments = _segments(edges, xs, ys, int(segment))
    if len(segments) < 2:
        return np.zeros((0, 5))
    centres = np.array([s.mean(0) for s in segments])
    groups = [(p, q) for p, q in sorted(spatial.cKDTree(centres).query_pairs(reach))]
    for _ in range(int(triples)):
        p, q, r = (int(k) for k in rng.choice(len(segments), 3, replace=False))
        if max(np.linalg.norm(centres[p] - centres[q]),
               np.linalg.norm(centres[p] - centres[r])) < reach:
            groups.append((p, q, r))
    shapes, ok = conics_to_ellipses(np.array(
        [fit_conics(np.concatenate([segments[k] for k in g])) for g in groups]))

    def plausible(s, ok):
        return (ok & (s[:, 0] > 1.5 * pixel) & (s[:, 1] > 1.5 * pixel) & (s[:, 0] < 2.5)
                & (s[:, 1] < 2.5) & (np.abs(s[:, 2]) <= 1) & (np.abs(s[:, 3]) <= 1))

    def support(s):
        hits = np.concatenate([_on_boundary(s[k:k + 256], points, normals,
                                            tolerance * pixel).sum(1)
                               for k in range(0, len(s), 256)]) if len(s) else np.zeros(0)
        visible = visible_perimeter(s) / pixel
        return np.where(visible > 8, hits / np.maximum(visible, 1), 0.0)

    shapes = shapes[plausible(shapes, ok)]
    supports = support(shapes)
    shapes = shapes[supports > min_support / 2]
    for _ in range(int(refine)):
        refits = np.zeros((len(shapes), 6))
        for k, shape in enumerate(shapes):
            on = _on_boundary(shape[None], points, normals, 2 * tolerance * pixel)[0]
            if on.sum() >= 6:
                refits[k] = fit_conics(points[on])
        better, ok = conics_to_ellipses(refits)
        shapes = np.where(plausible(better, ok)[:, None], better, shapes)
    # The ellipses with the most supporting pixels first. To explain the edges
    # away, each counts only the pixels that no ellipse kept before it claimed,
    # so that an ellipse drawn through part of another's boundary (a small one
    # inside a large one's arc) goes with that boundary.
    shapes = shapes[support(shapes) > min_support]
    on = (np.concatenate([_on_boundary(shapes[k:k + 256], points, normals, tolerance * pixel)
                          for k in range(0, len(shapes), 256)])
          if len(shapes) else np.zeros((0, len(points)), bool))
    visible = visible_perimeter(shapes) / pixel
    claimed = np.zeros(len(points), bool)
    kept: list[np.ndarray] = []
    for k in np.argsort(-on.sum(1), kind="stable"):
        if explain_away and (on[k] & ~claimed).sum() <= min_support * visible[k]:
            continue
        shape = canonical(shapes[k])
        if not any(_same(shape, other, 2 * pixel) for other in kept):
            kept.append(shape)
            claimed |= on[k]
    return np.array(kept).reshape(-1, 5)


def moment_candidates(residual: np.ndarray, levels=(0.15, 0.3, 0.5, 0.7)) -> list[np.ndarray]:
    """Ellipses matched to the regions of an image: a candidate per connected region.

    The image is cut at ``levels`` times its largest absolute value, on each
    sign; every connected region of at least four pixels gives the ellipse of
    the same centroid and second moments (a filled ellipse of half-axes ``a, b``
    has the variances ``a^2 / 4, b^2 / 4`` along its axes) and the region's mean
    as its value. Returns marks ``(value, a, b, x0, y0, theta)``.
    """
    from scipy import ndimage

    residual = np.asarray(residual, np.float64)
    xs, ys = grid_coordinates(residual.shape)
    peak = float(np.abs(residual).max())
    out: list[np.ndarray] = []
    if peak == 0:
        return out
    for sign in (1.0, -1.0):
        for level in levels:
            labels, count = ndimage.label(sign * residual > level * peak)
            for k in range(1, count + 1):
                i, j = np.nonzero(labels == k)
                if i.size < 4:
                    continue
                px, py = xs[i], ys[j]
                cov = np.cov(np.stack([px, py])) + 1e-8 * np.eye(2)
                values, vectors = np.linalg.eigh(cov)
                a, b = 2 * np.sqrt(np.maximum(values[::-1], 1e-8))
                theta = math.atan2(vectors[1, 1], vectors[0, 1]) % (2 * math.pi)
                out.append(np.array([float(residual[i, j].mean()), a, b, px.mean(), py.mean(),
                                     theta]))
    return out


class EllipseLibrary:
    """A proposal density on ellipse shapes: Gaussian kernels around candidate ellipses.

    Drawing picks one candidate, uniformly, in one of its four parametrisations,
    uniformly, and one of ``scales``, uniformly, and adds independent Gaussian
    steps of ``widths`` times that scale to its ``(a, b, x0, y0, theta)``, the
    rotation taken modulo ``2 pi``. The narrow kernels place an ellipse on a
    detected boundary; the wide ones still reach the ellipses a chain holds near
    it, so that a move between the two has a density both ways. The density is
    that mixture's, the rotation's kernel wrapped to its nearest turn (exact to
    double precision for a rotation width of at most 0.5 rad). Draws outside the
    prior's support (a half-axis <= 0, a centre outside the square) are left to
    the caller to reject.

    Parameters
    ----------
    shapes : array, shape (k, 5)
        Candidate ``(a, b, x0, y0, theta)``, e.g. from `detect_ellipses`.
    widths : sequence of 5 floats
        Kernel widths of the half-axes, the centre's coordinates and the rotation.
    scales : sequence of float
        The kernels' scales, each drawn as often.
    """

    def __init__(self, shapes, widths=(0.015, 0.015, 0.015, 0.015, 0.03), scales=(1.0, 4.0)):
        shapes = np.asarray(shapes, np.float64).reshape(-1, 5)
        widths = np.asarray(widths, np.float64)
        scales = np.asarray(scales, np.float64).ravel()
        if len(shapes) == 0:
            raise ValueError("an EllipseLibrary needs at least one candidate shape")
        if not np.all(np.isfinite(shapes)) or np.any(shapes[:, :2] <= 0):
            raise ValueError("candidate shapes must be finite with half-axes > 0")
        if not (len(scales) and np.all(scales > 0)):
            raise ValueError(f"scales must be values > 0, got {scales.tolist()}")
        if widths.shape != (5,) or not np.all(widths > 0) or widths[4] * scales.max() > 0.5:
            raise ValueError(f"widths must be 5 values > 0, the rotation's at most 0.5 rad "
                             f"at the largest scale, got {widths.tolist()}")
        a, b, x0, y0, theta = shapes.T
        turn = 2 * math.pi
        self.centres = np.concatenate([
            np.stack([a, b, x0, y0, theta % turn], 1),
            np.stack([a, b, x0, y0, (theta + math.pi) % turn], 1),
            np.stack([b, a, x0, y0, (theta + math.pi / 2) % turn], 1),
            np.stack([b, a, x0, y0, (theta + 3 * math.pi / 2) % turn], 1)])
        self.widths = widths[None, :] * scales[:, None]  # one row per scale
        # log of each scale's normalising constant, over the mixture's members
        self._log_norms = -math.log(len(self.centres) * len(scales)) - np.sum(
            np.log(self.widths * math.sqrt(2 * math.pi)), axis=1)

    def __len__(self) -> int:
        return len(self.centres) // 4

    def sample(self, rng: np.random.Generator, near=None) -> np.ndarray:
        """One shape ``(a, b, x0, y0, theta)`` drawn from the mixture.

        With ``near`` (a shape), the candidates are drawn not uniformly but in
        proportion to ``exp(-d^2 / 2 r^2)``, ``d`` the distance of their centre from
        ``near``'s and ``r`` its larger half-axis: a shape for an ellipse there.
        """
        if near is None:
            centre = self.centres[int(rng.integers(len(self.centres)))]
        else:
            shares = np.exp(self._near_log_shares(near))
            k = int(rng.choice(len(self), p=shares / shares.sum()))
            centre = self.centres[k + len(self) * int(rng.integers(4))]
        shape = centre + self.widths[int(rng.integers(len(self.widths)))] * \
            rng.standard_normal(5)
        shape[4] %= 2 * math.pi
        return shape

    def _near_log_shares(self, near) -> np.ndarray:
        """``log`` of each candidate's share of the draws `sample` makes near ``near``."""
        near = np.asarray(near, np.float64)[:5]
        radius = max(near[0], near[1])
        if not (math.isfinite(radius) and radius > 0):
            raise ValueError(f"near must be a shape with half-axes > 0, got {near.tolist()}")
        d2 = np.sum((self.centres[:len(self), 2:4] - near[2:4]) ** 2, axis=1)
        exponents = -0.5 * d2 / radius ** 2
        top = float(exponents.max())
        return exponents - top - math.log(float(np.sum(np.exp(exponents - top))))

    def log_density(self, shape, near=None) -> float:
        """``log`` of the mixture's density at ``(a, b, x0, y0, theta)`` (drawn ``near``)."""
        diff = np.asarray(shape, np.float64)[None, :5] - self.centres
        diff[:, 4] = (diff[:, 4] + math.pi) % (2 * math.pi) - math.pi
        exponents = (-0.5 * np.sum((diff[None] / self.widths[:, None]) ** 2, axis=2)
                     + self._log_norms[:, None])
        if near is not None:  # the candidates' shares instead of 1 / len(self) each
            exponents = exponents + math.log(len(self)) + np.tile(
                self._near_log_shares(near), 4)[None, :]
        top = float(exponents.max())
        return top + math.log(float(np.sum(np.exp(exponents - top))))
