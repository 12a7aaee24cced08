"""The numpy face of the operators (lpd.physics.projector): adjointness on every set-up.

The dot test ``<W x, y> = <x, W^T y>`` runs on every operator the physics layer
builds for a named set-up (the experiment's operator and the plain ray
transform), with the sparse matrix and with ODL's own call, on one image and on
a batch; the bridge must apply exactly the projector.
"""

from __future__ import annotations

import numpy as np
import pytest

from lpd.physics import operators
from lpd.physics.projector import Projector, power_norm, projector

FAST = ("ellipses_small", "ellipses", "human_small")


def _setup_params():
    for name in operators.SETUPS:
        marks = () if name in FAST else (pytest.mark.slow,)
        yield pytest.param(name, marks=marks, id=name)


def _dot_test(proj: Projector, rng, batch: int | None):
    shape_x = proj.domain_shape if batch is None else (batch, *proj.domain_shape)
    shape_y = proj.range_shape if batch is None else (batch, *proj.range_shape)
    x = rng.standard_normal(shape_x).astype(np.float32)
    y = rng.standard_normal(shape_y).astype(np.float32)
    wx, wty = proj.forward(x), proj.transpose(y)
    assert wx.shape == shape_y and wty.shape == shape_x
    assert wx.dtype == wty.dtype == np.float32
    lhs = float(np.vdot(wx.astype(np.float64), y))
    rhs = float(np.vdot(x.astype(np.float64), wty))
    assert lhs == pytest.approx(rhs, rel=1e-4), (proj.backend, batch)
    return x, wx


@pytest.mark.parametrize("name", list(_setup_params()))
def test_projector_is_adjoint_on_every_operator_of_every_setup(name, rng):
    setup = operators.get_setup(name)
    for op in {id(setup.operator): setup.operator, id(setup.ray_trafo): setup.ray_trafo}.values():
        backends = [Projector(op, 0.0)]  # budget 0: ODL's own call
        if operators.estimate_matrix_bytes(op) is not None and name in FAST:
            backends.append(projector(op))
        for proj in backends:
            for batch in (None, 2):
                x, wx = _dot_test(proj, rng, batch)
            # The matrix and ODL agree (and ODL is what the operator computes).
            np.testing.assert_allclose(
                wx, np.stack([op(image).data for image in x]),
                rtol=1e-4, atol=1e-4 * float(np.abs(wx).max()))


def test_projectors_are_shared_per_operator_and_check_shapes():
    setup = operators.get_setup("ellipses_small")
    proj = projector(setup.operator)
    assert projector(setup.operator) is proj
    assert proj.backend == "matrix" and Projector(setup.operator, 0.0).backend == "odl"
    with pytest.raises(ValueError, match=r"expected images of shape \(64, 64\)"):
        proj.forward(np.zeros((3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="expected data of shape"):
        proj.transpose(np.zeros((64, 64), np.float32))


def test_the_norm_of_a_normalised_setup_is_one():
    # ellipses_small applies A / ||A||, with ||A|| by ODL's power method.
    assert projector(operators.get_setup("ellipses_small").operator).norm() == pytest.approx(
        1.0, abs=2e-3)


def test_power_norm_of_a_known_matrix():
    matrix = np.diag([3.0, 2.0, 1.0]).astype(np.float32)
    assert power_norm(lambda x: matrix.T @ (matrix @ x), (3,), 200) == pytest.approx(3.0,
                                                                                       rel=1e-5)
    assert power_norm(lambda x: 0 * x, (3,), 5) == 0.0


def test_the_bridge_applies_the_projector():
    tf = pytest.importorskip("tensorflow")
    import lpd

    setup = operators.get_setup("ellipses_small")
    x = np.random.default_rng(0).standard_normal((3, 64, 64)).astype(np.float32)
    for backend in ("matrix", "odl"):
        op = lpd.as_tf_operator(setup.operator, backend=backend)
        proj = projector(setup.operator, 0.0 if backend == "odl" else 2**30)
        np.testing.assert_array_equal(op(tf.constant(x[..., None])).numpy()[..., 0],
                                      proj.forward(x))
        np.testing.assert_array_equal(op(tf.constant(x[:1, ..., None])).numpy()[..., 0],
                                      proj.forward(x[0])[None])


@pytest.mark.parametrize("threads", [1, 2, 3, 7])
def test_a_batch_product_on_row_blocks_is_bit_identical_and_its_way_is_measured(threads, rng):
    import scipy.sparse as sp

    from lpd.physics.projector import _RowBlocks

    dense_matrix = sp.random(50, 40, density=0.2, dtype=np.float32, random_state=1).toarray()
    dense_matrix[7] = 0  # an empty row
    matrix = sp.csr_matrix(dense_matrix)
    blocks = _RowBlocks(matrix, threads)
    if threads > 1:
        assert len(blocks.blocks) == threads
        assert sum(b.shape[0] for b in blocks.blocks) == 50
        assert sum(b.nnz for b in blocks.blocks) == matrix.nnz
        # Views of the matrix's arrays, not copies.
        assert all(np.shares_memory(b.data, matrix.data) for b in blocks.blocks)
    dense = rng.standard_normal((40, 5)).astype(np.float32)
    expected = matrix @ dense
    for _ in range(2 * _RowBlocks.trials + 2):
        out = blocks.times(dense)
        assert out.dtype == np.float32 and np.array_equal(out, expected)
    assert np.array_equal(blocks._split(dense) if threads > 1 else expected, expected)
    if threads > 1:
        assert set(blocks.choice) == {5}
        assert all(len(t) == _RowBlocks.trials for t in blocks.timings[5].values())
    else:
        assert blocks.choice == {}


def test_the_product_s_threads_follow_omp_num_threads(monkeypatch):
    from lpd.physics.projector import _threads

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert _threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert _threads() >= 1
