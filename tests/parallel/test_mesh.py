import jax
import pytest

from parallel import mesh as mesh_lib


def test_conftest_gives_eight_cpu_devices():
    assert len(jax.devices()) == 8


def test_make_mesh_named_axes_and_fill():
    mesh = mesh_lib.make_mesh({"data": -1, "model": 2})
    assert dict(mesh.shape) == {"data": 4, "model": 2}
    assert mesh_lib.axis_size(mesh, "model") == 2


def test_make_mesh_bad_sizes_name_the_counts():
    with pytest.raises(ValueError, match="need 6 devices, but 8"):
        mesh_lib.make_mesh({"data": 3, "model": 2})
    with pytest.raises(ValueError, match="no axis 'stage'"):
        mesh_lib.axis_size(mesh_lib.make_mesh({"data": 8}), "stage")
