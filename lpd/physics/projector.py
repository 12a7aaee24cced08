"""A linear ODL operator on numpy arrays: ``W x`` and ``W^T y``, one image or a batch.

`projector(op)` is the one numpy face of the operators of lpd: the data
pipelines simulate with it, the classical solvers iterate with it and the
TensorFlow bridge (`lpd.physics.bridge`) applies it inside its ops. It uses the
operator's sparse system matrix where one exists within the memory budget
(several times faster than calling ODL per image on a CPU; shared with every
other user of the operator through `lpd.physics.operators.shared_system_matrix`)
and ODL's own call otherwise.

``W`` is the map the operator applies to arrays, and ``W^T`` its Euclidean
transpose: ODL's adjoint (taken in weighted inner products ``w * sum(x * y)``)
times ``w_X / w_Y``, the ratio of the spaces' weightings.

A batch is multiplied by the matrix at once, and on several threads where that
measured faster (`_RowBlocks`): scipy's product runs on one core, and inside a
training step nothing else runs while it does. The rows are cut into blocks of
equal work, one per thread; each row's sum is computed as it would be in one
piece, so the result is the same to the last bit either way.
"""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp

from lpd.physics import operators

__all__ = ["Projector", "projector", "power_norm"]

DEFAULT_MEMORY_BUDGET = float(2**30)

# ODL/ASTRA are not known to be safe when several pipeline threads call them at once.
_ODL_LOCK = threading.Lock()


class Projector:
    """``x -> W x`` and ``y -> W^T y`` on float32 arrays for a linear ODL operator.

    Both take one array of the domain (range) shape or a batch of them, and
    return float32 of the matching shape. Made by `projector`, which shares one
    per operator and memory budget.

    Attributes
    ----------
    op : odl.Operator
    domain_shape, range_shape : tuple of int
    backend : {"matrix", "native", "odl"}
    """

    def __init__(self, op, memory_budget: float = DEFAULT_MEMORY_BUDGET, native: bool = True):
        self.op = op
        self.domain_shape = tuple(op.domain.shape)
        self.range_shape = tuple(op.range.shape)
        # An operator that applies itself to batches (the Fourier transform of
        # MRI, `lpd.physics.fourier`) needs neither a matrix nor ODL's loop.
        scalar, inner = operators.unwrap_scalar(op)
        self._native = (scalar, inner) if native and hasattr(inner, "batch_apply") else None
        self.matrix = self.matrix_t = None
        self._blocks: dict[bool, _RowBlocks] = {}
        if self._native is None:
            try:
                matrices = operators.shared_system_matrix(op, memory_budget)
                self.matrix, self.matrix_t = matrices.forward, matrices.transpose
                self._blocks = {False: _RowBlocks(self.matrix), True: _RowBlocks(self.matrix_t)}
            except operators.MatrixUnavailableError:
                pass
        self.transpose_scale = operators.constant_weighting(
            op.domain) / operators.constant_weighting(op.range)
        self._norm: float | None = None

    @property
    def backend(self) -> str:
        """``"matrix"``, ``"native"`` (the operator's own batched numpy code) or ``"odl"``."""
        if self._native is not None:
            return "native"
        return "odl" if self.matrix is None else "matrix"

    def forward(self, x) -> np.ndarray:
        """``W x`` for one image or a batch ``(n, *domain_shape)``."""
        return self._apply(x, transpose=False)

    def transpose(self, y) -> np.ndarray:
        """``W^T y`` for one data array or a batch ``(n, *range_shape)``."""
        return self._apply(y, transpose=True)

    def norm(self, n_iter: int = 100) -> float:
        """Euclidean ``||W||`` by `power_norm` on ``W^T W`` (100 iterations, cached)."""
        if self._norm is None:
            self._norm = power_norm(lambda x: self.transpose(self.forward(x)),
                                    self.domain_shape, n_iter)
        return self._norm

    def _apply(self, x, transpose: bool) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        shape_in, shape_out = ((self.range_shape, self.domain_shape) if transpose
                               else (self.domain_shape, self.range_shape))
        matrix = self.matrix_t if transpose else self.matrix
        if self._native is not None and (x.shape == shape_in or x.shape[1:] == shape_in):
            scalar, inner = self._native
            out = inner.batch_apply(x, transpose=transpose)
            return out if scalar == 1.0 else out * np.float32(scalar)
        if x.shape == shape_in:
            if matrix is not None:
                return (matrix @ x.ravel()).reshape(shape_out)
            return self._odl(x[None], transpose)[0]
        if x.shape[1:] != shape_in:
            what = "data" if transpose else "images"
            raise ValueError(f"expected {what} of shape {shape_in} or (batch, "
                             f"{', '.join(map(str, shape_in))}), got {x.shape}")
        if matrix is not None:
            flat = x.reshape(x.shape[0], -1)
            # Column-stacked (pixels, batch) keeps one multiplication for the batch,
            # and C order keeps each row of the product contiguous.
            out = np.ascontiguousarray(self._blocks[transpose].times(
                np.ascontiguousarray(flat.T)).T)
            return out.astype(np.float32, copy=False).reshape((x.shape[0], *shape_out))
        return self._odl(x, transpose)

    def _odl(self, x: np.ndarray, transpose: bool) -> np.ndarray:
        op = self.op.adjoint if transpose else self.op
        out = np.empty((x.shape[0], *op.range.shape), dtype=np.float32)
        with _ODL_LOCK:
            for i, image in enumerate(x):
                out[i] = op(image).data
        if transpose and self.transpose_scale != 1.0:
            out *= np.float32(self.transpose_scale)
        return out


def _threads() -> int:
    """The threads a product may use: the CPUs of this process, at most ``OMP_NUM_THREADS``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    limit = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, min(cpus, int(limit))) if limit.isdigit() and int(limit) > 0 else cpus


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(threads, thread_name_prefix="lpd-projector")
        return _POOL


class _RowBlocks:
    """A CSR matrix times column-stacked batches, on one thread or on several.

    The rows are cut into one block per thread with equal numbers of stored
    entries (views of the matrix's arrays, no copy). Which way is faster
    depends on the CPU, the batch and what else runs, so it is measured on the
    first calls of each batch size (``trials`` of each way, alternating; the
    products are used, not thrown away) and the faster is kept. Both give
    bit-identical results.
    """

    trials = 3

    def __init__(self, matrix: sp.csr_matrix, threads: int | None = None):
        self.matrix = matrix
        self.threads = _threads() if threads is None else int(threads)
        self.blocks = []
        if self.threads > 1 and sp.issparse(matrix) and matrix.format == "csr":
            indptr = matrix.indptr
            cuts = np.searchsorted(indptr, np.linspace(0, indptr[-1], self.threads + 1))
            cuts[0], cuts[-1] = 0, matrix.shape[0]
            for a, b in zip(cuts[:-1], cuts[1:], strict=True):
                if b > a:
                    lo, hi = indptr[a], indptr[b]
                    # Set after construction: scipy's constructor copies a view
                    # of less than half its base.
                    block = sp.csr_matrix((int(b - a), matrix.shape[1]), dtype=matrix.dtype)
                    block.data, block.indices = matrix.data[lo:hi], matrix.indices[lo:hi]
                    block.indptr = (indptr[a:b + 1] - lo).astype(indptr.dtype)
                    self.blocks.append(block)
        self.timings: dict[int, dict[bool, list[float]]] = {}
        self.choice: dict[int, bool] = {}
        self._lock = threading.Lock()

    def times(self, dense: np.ndarray) -> np.ndarray:
        """``matrix @ dense`` for ``dense`` of shape ``(columns, batch)``."""
        if len(self.blocks) < 2:
            return self.matrix @ dense
        batch = dense.shape[1]
        split = self.choice.get(batch)
        if split is None:
            with self._lock:
                seen = self.timings.setdefault(batch, {False: [], True: []})
                split = len(seen[True]) < len(seen[False])
            started = time.perf_counter()
            out = self._split(dense) if split else self.matrix @ dense
            elapsed = time.perf_counter() - started
            with self._lock:
                seen[split].append(elapsed)
                if min(len(seen[False]), len(seen[True])) >= self.trials:
                    self.choice[batch] = min(seen[True]) < min(seen[False])
            return out
        return self._split(dense) if split else self.matrix @ dense

    def _split(self, dense: np.ndarray) -> np.ndarray:
        parts = list(_pool(self.threads).map(lambda block: block @ dense, self.blocks))
        return np.concatenate(parts, axis=0)


# Projectors by id of the ODL operator and budget. The weak reference both checks
# that the id still names the same operator and drops the entry when it is freed.
_SHARED: dict[tuple[int, float, bool], tuple[weakref.ref, Projector]] = {}
_SHARED_LOCK = threading.Lock()


def projector(op, memory_budget: float = DEFAULT_MEMORY_BUDGET, native: bool = True
              ) -> Projector:
    """The `Projector` of ``op``, one per operator, memory budget and ``native`` in a process.

    ``native=False`` ignores an operator's own batched code (``batch_apply``) and
    calls ODL per image, as for any other operator without a matrix.
    """
    key = (id(op), float(memory_budget), bool(native))
    with _SHARED_LOCK:
        entry = _SHARED.get(key)
        if entry is not None and entry[0]() is op:
            return entry[1]
        made = Projector(op, memory_budget, native)

        def forget(ref, key=key, shared=_SHARED):
            # No lock: the collector may call this while this thread holds it (and
            # the dict is bound here: module globals are gone at interpreter exit).
            if shared.get(key, (None,))[0] is ref:
                shared.pop(key, None)

        _SHARED[key] = (weakref.ref(op, forget), made)
        return made


def power_norm(normal: Callable, shape_or_start, n_iter: int, seed: int = 0,
               norm: Callable = np.linalg.norm) -> float:
    """``sqrt`` of the largest eigenvalue of ``normal`` (a map ``K^T K``), from below.

    The power method, written once for every face of an operator: ``normal``
    maps arrays (numpy, or TensorFlow tensors with ``norm=tf.norm``) to arrays
    of the same kind. It starts from ``shape_or_start``: a shape (a seeded
    float32 Gaussian start) or the start array itself. The estimate converges
    from below, so callers that need an upper bound add a margin.
    """
    if isinstance(shape_or_start, tuple | list):
        start = np.random.default_rng(seed).standard_normal(
            tuple(shape_or_start)).astype(np.float32)
    else:
        start = shape_or_start
    x = start / norm(start)
    value = 0.0
    for _ in range(n_iter):
        z = normal(x)
        value = float(norm(z))
        if value == 0.0:
            return 0.0
        x = z / value
    return math.sqrt(value)
