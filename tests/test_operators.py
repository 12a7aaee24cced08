"""Tests for lpd.operators: named set-ups, ray transforms, norms and system matrices."""

import math

import numpy as np
import pytest

from lpd.config import ProblemConfig
from lpd.physics import operators


def test_ellipse_setup_matches_the_paper():
    setup = operators.get_setup("ellipses")
    assert setup.space.shape == (128, 128)
    assert np.allclose(setup.space.min_pt, [-64, -64])
    assert np.allclose(setup.space.max_pt, [64, 64])
    assert setup.space.dtype == np.float32
    # parallel_beam_geometry with 30 angles on [0, pi): 183 detector pixels.
    assert setup.operator.range.shape == (30, 183)
    assert np.isclose(setup.geometry.motion_partition.max_pt[0], math.pi)
    # The experiment uses A / ||A||, whose norm is one.
    assert operators.operator_norm(setup.operator, maxiter=50) == pytest.approx(1.0, rel=1e-3)


def test_human_setup_geometry_matches_the_paper():
    # Building the full geometry is cheap; only applying it is not.
    config = operators.SETUPS["human"]
    space = operators.image_space(config)
    geometry = operators.make_geometry(config, space)
    assert space.shape == (512, 512)
    assert float(space.weighting.const) == 1.0
    assert geometry.motion_partition.shape == (1000,)
    assert np.isclose(geometry.motion_partition.max_pt[0], 2 * math.pi)
    assert geometry.det_partition.shape == (1000,)
    assert np.allclose([geometry.det_partition.min_pt[0], geometry.det_partition.max_pt[0]],
                       [-360, 360])
    assert geometry.src_radius == 500 and geometry.det_radius == 500


def test_small_human_setup_has_the_same_physics():
    small, full = operators.SETUPS["human_small"], operators.SETUPS["human"]
    for field in ("min_pt", "max_pt", "weighting", "beam", "angle_range", "det_min",
                  "det_max", "src_radius", "det_radius", "noise"):
        assert getattr(small, field) == getattr(full, field), field


def test_unknown_setup_lists_the_known_ones():
    with pytest.raises(ValueError, match="ellipses"):
        operators.get_setup("elipses")


def test_setups_are_cached():
    assert operators.get_setup("ellipses_small") is operators.get_setup("ellipses_small")


def test_user_config_builds_a_setup():
    config = ProblemConfig(name="mine", shape=(40, 40), min_pt=(-1, -1), max_pt=(1, 1),
                           beam="fan", num_angles=24, angle_range=(0, 2 * math.pi),
                           det_shape=64, det_min=-3, det_max=3, src_radius=4, det_radius=4)
    setup = operators.get_setup(config)
    assert setup.operator.range.shape == (24, 64)
    assert setup.operator is setup.ray_trafo


@pytest.mark.parametrize("name", ["ellipses_small", "human_small"])
def test_system_matrix_reproduces_odl(name, rng):
    setup = operators.get_setup(name)
    matrix = operators.system_matrix(setup.operator)
    x = rng.random(setup.space.shape, dtype=np.float32)
    expected = setup.operator(x).data
    got = (matrix @ x.ravel()).reshape(expected.shape)
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_matrix_estimate_is_an_upper_bound_and_refuses_big_matrices():
    setup = operators.get_setup("ellipses_small")
    estimate = operators.estimate_matrix_bytes(setup.operator)
    matrix = operators.system_matrix(setup.operator)
    assert estimate >= 2 * (matrix.data.nbytes + matrix.indices.nbytes)
    with pytest.raises(operators.MatrixUnavailableError, match="memory budget"):
        operators.system_matrix(setup.operator, memory_budget=estimate / 10)


def test_bridge_pipeline_and_solvers_share_one_matrix_per_operator():
    from lpd.physics import bridge as tf_ops
    from lpd.physics.projector import projector

    setup = operators.get_setup("ellipses_small")
    shared = operators.shared_system_matrix(setup.operator)
    assert operators.shared_system_matrix(setup.operator) is shared
    assert np.array_equal(shared.transpose.toarray(), shared.forward.T.toarray())
    assert tf_ops.as_tf_operator(setup.operator)._kernel.projector.matrix is shared.forward
    assert projector(setup.operator).matrix_t is shared.transpose
    assert projector(setup.operator, 2**30).matrix is shared.forward
    # The budget is checked on every call, not only when the matrix is built.
    estimate = operators.estimate_matrix_bytes(setup.operator)
    with pytest.raises(operators.MatrixUnavailableError, match="memory budget"):
        operators.shared_system_matrix(setup.operator, memory_budget=estimate / 10)


def test_shared_matrix_is_dropped_with_its_operator():
    import gc

    config = operators.SETUPS["ellipses_small"]
    space = operators.image_space(config)
    op = operators.ray_transform(space, operators.make_geometry(config, space), "astra_cpu")
    operators.shared_system_matrix(op)
    key = id(op)
    assert key in operators._SHARED
    del op
    gc.collect()
    assert key not in operators._SHARED


def test_full_human_matrix_is_never_built_by_default():
    config = operators.SETUPS["human"]
    space = operators.image_space(config)
    op = operators.ray_transform(space, operators.make_geometry(config, space), "astra_cpu")
    assert operators.estimate_matrix_bytes(op) > 2**31
    with pytest.raises(operators.MatrixUnavailableError, match="GiB"):
        operators.system_matrix(op)


def test_operators_without_a_matrix_form_say_so():
    space = operators.image_space(operators.SETUPS["ellipses_small"])
    import odl

    with pytest.raises(operators.MatrixUnavailableError, match="PartialDerivative"):
        operators.system_matrix(odl.PartialDerivative(space, axis=0))


def test_constant_weighting_rejects_product_spaces():
    import odl

    space = operators.image_space(operators.SETUPS["ellipses_small"])
    with pytest.raises(TypeError, match="constant weighting"):
        operators.constant_weighting(odl.ProductSpace(space, 2))


def test_one_coercion_of_a_setup_for_every_module():
    setup = operators.get_setup("ellipses_small")
    assert operators.as_setup("ellipses_small") is setup
    assert operators.as_setup(setup) is setup
    assert operators.as_setup(setup.config) is operators.get_setup(setup.config)
    assert operators.as_config("ellipses_small") is operators.SETUPS["ellipses_small"]
    assert operators.as_config(setup) is setup.config
    with pytest.raises(ValueError, match="unknown set-up 'nope'; known: ellipses"):
        operators.as_config("nope")
    with pytest.raises(TypeError, match="expected a set-up"):
        operators.as_setup(42)
    with pytest.raises(TypeError, match="expected a set-up"):
        operators.as_config(3.5)
