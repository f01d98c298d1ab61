"""Linear blend skinning: Rodrigues' formula, blend shapes and ``skin`` against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.spatial.transform import Rotation
from torch.testing import assert_close

from neuavatar.head.lbs import axis_angle_to_matrix, blend_shapes, skin

# d R / d axis_angle at the identity: the generator of rotations about x, y and z.
GENERATORS = torch.tensor([[[0.0, 0, 0], [0, 0, -1], [0, 1, 0]],
                           [[0, 0, 1], [0, 0, 0], [-1, 0, 0]],
                           [[0, -1, 0], [1, 0, 0], [0, 0, 0]]])


# ------------------------------------------------------------------------------- axis_angle_to_matrix


@pytest.mark.parametrize("batch", [(), (7,), (2, 3, 4)])
def test_rotations_are_orthonormal_with_determinant_one(batch):
    rot = axis_angle_to_matrix(torch.randn(*batch, 3, dtype=torch.float64) * 2)
    assert rot.shape == (*batch, 3, 3)
    eye = torch.eye(3, dtype=torch.float64).expand_as(rot)
    assert_close(rot @ rot.transpose(-1, -2), eye)
    assert_close(torch.linalg.det(rot), torch.ones(batch, dtype=torch.float64))


def test_quarter_turns_about_each_axis():
    quarter = math.pi / 2
    rot = axis_angle_to_matrix(torch.eye(3) * quarter)
    expected = torch.tensor([[[1.0, 0, 0], [0, 0, -1], [0, 1, 0]],  # x: y -> z
                             [[0, 0, 1], [0, 1, 0], [-1, 0, 0]],  # y: z -> x
                             [[0, -1, 0], [1, 0, 0], [0, 0, 1]]])  # z: x -> y
    assert_close(rot, expected, rtol=0, atol=1e-6)
    assert_close(rot[2] @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]), rtol=0, atol=1e-6)


def test_zero_is_the_identity_with_the_generators_as_gradient():
    zero = torch.zeros(3, requires_grad=True)
    rot = axis_angle_to_matrix(zero)
    assert torch.equal(rot.detach(), torch.eye(3))
    cotangent = torch.randn(3, 3)
    (rot * cotangent).sum().backward()
    assert torch.isfinite(zero.grad).all()
    assert_close(zero.grad, (GENERATORS * cotangent).sum((1, 2)))


def test_matches_a_float64_reference():
    torch.manual_seed(0)
    axis_angle = torch.randn(1000, 3, dtype=torch.float64) * 1.5
    reference = torch.from_numpy(Rotation.from_rotvec(axis_angle.numpy()).as_matrix())
    assert_close(axis_angle_to_matrix(axis_angle), reference, rtol=0, atol=1e-12)
    assert_close(axis_angle_to_matrix(axis_angle.float()).double(), reference, rtol=0, atol=1e-6)


def test_float32_gradient_is_accurate_at_small_angles():
    # (1 - cos t) / t^2 would cancel digits in float32 for 1e-4 < t < 1e-2 (errors ~3e-4)
    torch.manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(64, 3, dtype=torch.float64), dim=-1)
    cotangent = torch.randn(64, 3, 3, dtype=torch.float64)
    grads = []
    for dtype in (torch.float64, torch.float32):
        axis_angle = (direction * 2e-4).to(dtype).requires_grad_()
        (axis_angle_to_matrix(axis_angle) * cotangent.to(dtype)).sum().backward()
        grads.append(axis_angle.grad.double())
    assert_close(grads[1], grads[0], rtol=0, atol=1e-5)


def test_blend_shapes_sum_the_weighted_fields():
    basis = torch.randn(5, 3, 4)
    coefficients = torch.randn(2, 4)
    expected = torch.stack([sum(c[k] * basis[:, :, k] for k in range(4)) for c in coefficients])
    assert_close(blend_shapes(coefficients, basis), expected)


# ---------------------------------------------------------------------------------------------- skin


def chain() -> tuple[torch.Tensor, torch.Tensor]:
    """A root at (0, 0, 0) and its child at (1, 0, 0): (1, 2, 3) joints, (2,) parents."""
    return torch.tensor([[[0.0, 0, 0], [1, 0, 0]]]), torch.tensor([-1, 0])


def turns_about_z(*angles: float) -> torch.Tensor:
    """(1, J, 3) pose: each joint turned about z by the given angle."""
    return torch.tensor([[[0.0, 0, a] for a in angles]])


def test_identity_pose_returns_the_input():
    torch.manual_seed(0)
    v_shaped, joints = torch.randn(2, 50, 3), torch.randn(2, 5, 3)
    parents = torch.tensor([-1, 0, 1, 1, 1])
    weights = torch.softmax(torch.randn(50, 5), 1)
    correctives = torch.randn(36, 150)  # multiplied by R - I = 0
    vertices, posed = skin(v_shaped, joints, torch.zeros(2, 5, 3), parents, weights, correctives)
    assert_close(vertices, v_shaped)
    assert_close(posed, joints)


def test_child_rotation_composes_with_its_parents():
    joints, parents = chain()
    v = torch.tensor([[[2.0, 0, 0]]])  # on the child's bone, one unit past the child joint
    quarter = math.pi / 2
    vertices, posed = skin(v, joints, turns_about_z(quarter, quarter), parents, torch.tensor([[0.0, 1]]))
    # child: (2,0,0) -> about (1,0,0) by 90 deg -> (1,1,0); root: about the origin by 90 deg -> (-1,1,0)
    assert_close(vertices, torch.tensor([[[-1.0, 1, 0]]]), rtol=0, atol=1e-6)
    assert_close(posed, torch.tensor([[[0.0, 0, 0], [0, 1, 0]]]), rtol=0, atol=1e-6)
    # The root's rotation alone carries the child along: (2,0,0) -> (0,2,0).
    vertices, _ = skin(v, joints, turns_about_z(quarter, 0), parents, torch.tensor([[0.0, 1]]))
    assert_close(vertices, torch.tensor([[[0.0, 2, 0]]]), rtol=0, atol=1e-6)


def test_root_rotates_about_its_own_position():
    joints = torch.tensor([[[1.0, 2, 3]]])
    v = torch.tensor([[[2.0, 2, 3], [1, 2, 4]]])
    vertices, posed = skin(v, joints, turns_about_z(math.pi / 2), torch.tensor([-1]), torch.ones(2, 1))
    assert_close(vertices, torch.tensor([[[1.0, 3, 3], [1, 2, 4]]]), rtol=0, atol=1e-6)
    assert_close(posed, joints)


def test_halfway_weights_average_the_two_transforms():
    joints, parents = chain()
    v = torch.tensor([[[2.0, 0, 0]]])
    vertices, _ = skin(v, joints, turns_about_z(0, math.pi / 2), parents, torch.tensor([[0.5, 0.5]]))
    # root keeps (2,0,0); the child moves it to (1,1,0); linear blending averages the points.
    assert_close(vertices, torch.tensor([[[1.5, 0.5, 0]]]), rtol=0, atol=1e-6)


def test_pose_correctives_layout():
    """Row 9 (j - 1) + 3 r + c multiplies (R_j - I)[r, c]; column 3 v + k moves coordinate k of vertex v."""
    joints, parents = chain()
    v = torch.zeros(1, 2, 3)
    correctives = torch.zeros(9, 6)
    correctives[3 * 0 + 1, 3 * 1 + 2] = 1.0  # (R_1 - I)[0, 1] -> vertex 1, z
    angle = 0.3
    vertices, _ = skin(v, joints, turns_about_z(0, angle), parents, torch.tensor([[1.0, 0], [1, 0]]), correctives)
    assert_close(vertices[0, 1], torch.tensor([0.0, 0, -math.sin(angle)]), rtol=0, atol=1e-6)
    assert_close(vertices[0, 0], torch.zeros(3))


def test_gradients_reach_shape_pose_and_joints():
    torch.manual_seed(0)
    basis = torch.randn(20, 3, 4)
    coefficients = torch.zeros(2, 4, requires_grad=True)
    template = torch.randn(20, 3)
    joints = torch.randn(2, 3, 3, requires_grad=True)
    pose = torch.zeros(2, 3, 3, requires_grad=True)  # the rest pose, where Rodrigues uses its series
    weights = torch.softmax(torch.randn(20, 3), 1)
    v_shaped = template + blend_shapes(coefficients, basis)
    vertices, posed = skin(v_shaped, joints, pose, torch.tensor([-1, 0, 1]), weights, torch.randn(18, 60))
    (vertices.square().sum() + posed.square().sum()).backward()
    for name, t in (("coefficients", coefficients), ("joints", joints), ("pose", pose)):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0, name
