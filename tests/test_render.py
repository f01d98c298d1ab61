"""neuavatar.render: camera conventions and the four ops on hand-made triangles and an ico-sphere.

The pure-torch path runs everywhere; the tests at the end compare it with nvdiffrast and are
skipped without CUDA and nvdiffrast.
"""

from __future__ import annotations

import math

import pytest
import torch

from neuavatar.render import (
    MODEL_TO_CAMERA,
    Fragments,
    antialias,
    clip_space,
    interpolate,
    model_to_camera,
    project,
    rasterize,
    texture,
)
from neuavatar.render._torch_impl import opposite_vertices

F64 = torch.float64


def ico_sphere(level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit ico-sphere: (V, 3) float64 vertices, (F, 3) faces (20 * 4**level), outward winding."""
    t = (1 + 5 ** 0.5) / 2
    verts = torch.tensor([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t],
                          [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], dtype=F64)
    faces = torch.tensor([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
                          [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
                          [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    verts = verts / verts.norm(dim=1, keepdim=True)
    for _ in range(level):
        edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(dim=1).values
        unique, inverse = torch.unique(edges, dim=0, return_inverse=True)
        middle = verts[unique].mean(1)
        verts = torch.cat([verts, middle / middle.norm(dim=1, keepdim=True)])
        a, b, c = faces.T
        ab, bc, ca = (inverse.view(3, -1) + len(verts) - len(unique))
        faces = torch.cat([torch.stack(t, 1) for t in ((a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca))])
    return verts, faces


def pixel_clip(xy: list | torch.Tensor, size: tuple[int, int], depth: float | list = 0.0, w: float = 1.0,
               dtype=F64) -> torch.Tensor:
    """(B, N, 4) clip positions of points at continuous pixel coordinates xy (B, N, 2), z/w = depth."""
    xy = torch.as_tensor(xy, dtype=dtype)
    height, width = size
    ndc = torch.stack([2 * xy[..., 0] / width - 1, 2 * xy[..., 1] / height - 1], dim=-1)
    z = torch.as_tensor(depth, dtype=dtype).expand(xy.shape[:-1])
    return torch.cat([ndc * w, (z * w)[..., None], torch.full_like(z, w)[..., None]], dim=-1)


def centres_inside(corners: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) bool: pixel centres strictly inside the triangle with (3, 2) pixel-space corners."""
    height, width = size
    y, x = torch.meshgrid(torch.arange(height, dtype=F64) + 0.5, torch.arange(width, dtype=F64) + 0.5, indexing="ij")
    signs = []
    for k in range(3):
        a, b = corners[k], corners[(k + 1) % 3]
        signs.append((b[0] - a[0]) * (y - a[1]) - (b[1] - a[1]) * (x - a[0]))
    s = torch.stack(signs)
    return (s > 0).all(0) | (s < 0).all(0)


# ------------------------------------------------------------------------------------------------
# camera


def test_head_at_rest_is_in_front_of_the_camera_facing_it():
    head = torch.tensor([[0.0, 0.0, -0.6]])
    assert torch.allclose(model_to_camera(head), torch.tensor([[0.0, 0.0, 0.6]]))
    nose_direction = torch.tensor([0.0, 0.0, 1.0])  # the face looks along +z in model space
    assert model_to_camera(nose_direction)[2] < 0  # ... towards the camera
    assert torch.equal(MODEL_TO_CAMERA @ torch.tensor([1.0, 2.0, 3.0]), model_to_camera(torch.tensor([1.0, 2.0, 3.0])))


@pytest.mark.parametrize("batch", [1, 3])
def test_project_and_clip_space_agree(batch):
    torch.manual_seed(0)
    size = (120, 160)
    points = torch.randn(batch, 50, 3, dtype=F64) * 0.1 + torch.tensor([0, 0, 0.7], dtype=F64)
    intrinsics = torch.tensor([[200.0, 210.0, 81.0, 58.0]], dtype=F64).repeat(batch, 1)
    pixels = project(points, intrinsics)
    clip = clip_space(points, intrinsics, size)
    ndc = clip[..., :2] / clip[..., 3:]
    back = torch.stack([(ndc[..., 0] + 1) * size[1] / 2, (ndc[..., 1] + 1) * size[0] / 2], dim=-1)
    torch.testing.assert_close(back, pixels)
    torch.testing.assert_close(clip[..., 3], points[..., 2])


def test_principal_point_is_the_image_centre_and_depth_range_is_near_to_far():
    size = (64, 96)
    intrinsics = torch.tensor([[100.0, 100.0, 48.0, 32.0]], dtype=F64)
    on_axis = torch.tensor([[[0.0, 0.0, 0.5], [0.0, 0.0, 0.01], [0.0, 0.0, 100.0]]], dtype=F64)
    assert torch.allclose(project(on_axis, intrinsics)[0, 0], torch.tensor([48.0, 32.0], dtype=F64))
    clip = clip_space(on_axis, intrinsics, size, near=0.01, far=100.0)
    assert torch.allclose(clip[0, 0, :2], torch.zeros(2, dtype=F64))
    depth = clip[0, :, 2] / clip[0, :, 3]
    assert torch.allclose(depth[1:], torch.tensor([-1.0, 1.0], dtype=F64))


def test_row_zero_is_the_top_of_the_image():
    # A small triangle around image point (10.5, 3.5) must land in row 3, column 10.
    size = (16, 24)
    intrinsics = torch.tensor([[50.0, 50.0, 12.0, 8.0]])
    target = torch.tensor([10.5, 3.5])
    z = 0.5
    centre = torch.stack([(target[0] - 12.0) * z / 50.0, (target[1] - 8.0) * z / 50.0, torch.tensor(z)])
    offsets = torch.tensor([[-0.004, -0.004, 0.0], [0.004, -0.004, 0.0], [0.0, 0.005, 0.0]])
    clip = clip_space((centre + offsets)[None], intrinsics, size)
    rast = rasterize(clip, torch.tensor([[0, 1, 2]]), size)
    covered = (rast[0, ..., 3] > 0).nonzero().tolist()
    assert covered == [[3, 10]]


def test_camera_errors_name_the_shape():
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        model_to_camera(torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        project(torch.zeros(2, 3), torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        clip_space(torch.zeros(2, 5, 3), torch.zeros(2, 3), (8, 8))
    with pytest.raises(ValueError, match="resolution"):
        clip_space(torch.zeros(1, 5, 3), torch.zeros(1, 4), (8, 0))


# ------------------------------------------------------------------------------------------------
# rasterize


@pytest.mark.parametrize("batch", [1, 2])
def test_triangle_covers_exactly_the_pixel_centres_inside_it(batch):
    size = (16, 20)
    # Corners on the 1/16 pixel grid (so snapping is exact) and off the pixel-centre lattice lines.
    corners = torch.tensor([[[1.3125, 2.0625], [17.6875, 4.1875], [6.5625, 14.8125]]], dtype=F64)
    corners = corners + torch.arange(batch, dtype=F64).view(-1, 1, 1) * torch.tensor([0.25, 0.125], dtype=F64)
    rast = rasterize(pixel_clip(corners, size), torch.tensor([[0, 1, 2]]), size)
    for b in range(batch):
        expected = centres_inside(corners[b], size)
        assert torch.equal(rast[b, ..., 3] > 0, expected)
        assert torch.equal(rast[b, ..., 3][expected], torch.ones(int(expected.sum()), dtype=F64))
        assert torch.all(rast[b][~expected] == 0)  # background: every channel 0


def test_both_windings_render_and_u_v_belong_to_corners_0_and_1():
    size = (12, 12)
    corners = torch.tensor([[[1.0625, 1.1875], [10.9375, 2.0625], [3.0625, 10.8125]]], dtype=F64)
    clip = pixel_clip(corners, size)
    front = rasterize(clip, torch.tensor([[0, 1, 2]]), size)
    back = rasterize(clip, torch.tensor([[0, 2, 1]]), size)
    assert torch.equal(front[..., 3] > 0, back[..., 3] > 0)
    # u weighs corner 0 in both; v weighs corner 1 (vertex 1 in front, vertex 2 in back).
    torch.testing.assert_close(front[..., 0], back[..., 0])
    covered = front[..., 3] > 0
    torch.testing.assert_close(back[..., 1][covered], (1 - front[..., 0] - front[..., 1])[covered])
    # Corner 0's weight is largest near corner 0: pixel (1, 1) is next to it.
    assert front[0, 1, 1, 0] > 0.8


@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_shared_edges_cover_every_pixel_exactly_once(offset):
    # A quad split along its diagonal, and a fan of 6 triangles around a vertex; with offset 0.5
    # every edge and the fan centre run exactly through pixel centres (the fill rule decides).
    size = (16, 16)
    quad = torch.tensor([[2, 2], [12, 2], [12, 12], [2, 12]], dtype=F64) + offset
    angles = torch.arange(6, dtype=F64) * math.pi / 3
    fan = torch.cat([torch.tensor([[8.0, 8.0]], dtype=F64),
                     torch.stack([8 + 6 * torch.cos(angles), 8 + 6 * torch.sin(angles)], 1)]) + offset
    for points, faces in ((quad, [[0, 1, 2], [0, 2, 3]]), (fan, [[0, k, k % 6 + 1] for k in range(1, 7)])):
        clip = pixel_clip(points[None], size)
        counts = sum((rasterize(clip, torch.tensor([f]), size)[0, ..., 3] > 0).long() for f in faces)
        union = rasterize(clip, torch.tensor(faces), size)[0, ..., 3] > 0
        assert counts.max() == 1  # no double hits
        assert torch.equal(counts == 1, union)  # the mesh covers what its triangles cover: no cracks
    # The quad's interior pixels are all covered: no crack along the diagonal.
    quad_union = rasterize(pixel_clip(quad[None], size), torch.tensor([[0, 1, 2], [0, 2, 3]]), size)[0, ..., 3]
    assert torch.all(quad_union[3:11, 3:11] > 0)


def test_fill_rule_takes_top_and_left_edges():
    # cudaraster's rule (and D3D's "top-left" one in an image whose row 0 is at the top): a pixel
    # centre exactly on a top or left edge is inside, on a bottom or right edge outside.
    size = (16, 16)
    square = torch.tensor([[[2.5, 2.5], [12.5, 2.5], [12.5, 12.5], [2.5, 12.5]]], dtype=F64)
    for faces in ([[0, 1, 2], [0, 2, 3]], [[0, 2, 1], [0, 3, 2]], [[1, 2, 3], [1, 3, 0]]):
        covered = rasterize(pixel_clip(square, size), torch.tensor(faces), size)[0, ..., 3] > 0
        expected = torch.zeros(size, dtype=torch.bool)
        expected[2:12, 2:12] = True
        assert torch.equal(covered, expected)


@pytest.mark.parametrize("batch", [1, 2])
def test_nearer_triangle_wins_whatever_the_face_order(batch):
    size = (10, 10)
    big = [[0.5, 0.5], [9.5, 0.5], [0.5, 9.5]]
    depths = torch.tensor([[0.2] * 3 + [0.6] * 3, [0.6] * 3 + [0.2] * 3], dtype=F64)[:batch]
    clip = pixel_clip(torch.tensor([big + big] * batch, dtype=F64), size, depth=depths)
    for faces in ([[0, 1, 2], [3, 4, 5]], [[3, 4, 5], [0, 1, 2]]):
        rast = rasterize(clip, torch.tensor(faces), size)
        for b in range(batch):
            near_face = faces.index([0, 1, 2]) if b == 0 else faces.index([3, 4, 5])
            ids = rast[b, ..., 3]
            assert torch.all(ids[ids > 0] == near_face + 1)
            torch.testing.assert_close(rast[b, ..., 2][ids > 0], torch.full_like(ids[ids > 0], 0.2))


def test_triangles_behind_the_camera_or_degenerate_are_skipped():
    size = (8, 8)
    clip = torch.tensor([[[-0.5, -0.5, 0.0, 1.0], [0.5, -0.5, 0.0, 1.0], [0.0, 0.5, 0.0, 1.0],
                          [0.0, 0.0, -1.0, -0.5]]])
    rast = rasterize(clip, torch.tensor([[0, 1, 3], [0, 1, 1], [0, 1, 2]]), size)
    assert set(rast[..., 3].unique().tolist()) == {0.0, 3.0}


@pytest.mark.parametrize("batch", [1, 2])
def test_interpolation_is_perspective_correct(batch):
    # A tilted triangle in camera space; interpolating the camera-space position gives, at each
    # pixel, the 3D point that projects onto that pixel's centre.
    size = (24, 32)
    intrinsics = torch.tensor([[40.0, 40.0, 16.0, 12.0]], dtype=F64)
    tri = torch.tensor([[-0.3, -0.25, 0.5], [0.35, -0.1, 1.4], [-0.05, 0.3, 0.8]], dtype=F64)
    points = tri[None] + torch.arange(batch, dtype=F64).view(-1, 1, 1) * 0.05
    faces = torch.tensor([[0, 1, 2]])
    rast = rasterize(clip_space(points, intrinsics, size), faces, size)
    position = interpolate(points, rast, faces)
    covered = rast[..., 3] > 0
    assert covered.sum() > 50 * batch
    rows, cols = torch.meshgrid(torch.arange(size[0], dtype=F64), torch.arange(size[1], dtype=F64), indexing="ij")
    centres = torch.stack([cols + 0.5, rows + 0.5], -1).expand(batch, *size, 2)
    landed = project(position.view(batch, -1, 3), intrinsics.expand(batch, 4)).view(batch, *size, 2)
    u, v = rast[..., 0], rast[..., 1]
    interior = covered & (torch.minimum(torch.minimum(u, v), 1 - u - v) > 0)
    torch.testing.assert_close(landed[interior], centres[interior], atol=1e-9, rtol=0)
    # Centres covered only thanks to the 1/16 pixel snapping get clamped barycentrics (as in nvdiffrast).
    torch.testing.assert_close(landed[covered], centres[covered], atol=1 / 16, rtol=0)
    assert torch.all(position[~covered] == 0)


@pytest.mark.parametrize("batch", [1, 2])
def test_interpolate_gradients_match_finite_differences(batch):
    size = (12, 14)
    torch.manual_seed(1)
    # Corners on the 1/16 pixel grid: the finite-difference steps (1e-6) never change coverage.
    corners = torch.tensor([[[1.3125, 1.0625], [12.6875, 3.1875], [4.5625, 10.8125], [13.1875, 11.0625]]], dtype=F64)
    corners = corners.repeat(batch, 1, 1)
    clip = pixel_clip(corners, size, depth=[0.1, 0.3, 0.2, 0.5], w=1.0)
    clip = clip * torch.tensor([1.0, 1.2, 0.8, 1.5], dtype=F64).view(1, 4, 1)  # varied w: perspective
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    attributes = torch.randn(batch, 4, 3, dtype=F64)
    rast = rasterize(clip, faces, size)
    u, v = rast[..., 0], rast[..., 1]
    inside = rast[..., 3] > 0
    assert torch.all(torch.minimum(torch.minimum(u, v), 1 - u - v)[inside] > 1e-3)  # no centre on an edge

    def render(clip, attributes):
        return interpolate(attributes, rasterize(clip, faces, size), faces)

    # gradcheck's own tolerances (rtol 1e-3, atol 1e-5) cover the 1e-6 area epsilon in the backward.
    assert torch.autograd.gradcheck(render, (clip.requires_grad_(), attributes.requires_grad_()), fast_mode=True)


def test_fragments_unpack_the_rasterizer_output():
    size = (8, 8)
    clip = pixel_clip([[[0.5, 0.5], [7.5, 0.5], [0.5, 7.5]]], size, depth=0.25)
    rast = rasterize(clip, torch.tensor([[0, 1, 2]]), size)
    frags = Fragments.from_rast(rast)
    assert frags.triangle_id.dtype == torch.int64
    assert torch.equal(frags.mask, rast[..., 3] > 0)
    assert torch.all(frags.triangle_id[~frags.mask] == -1)
    torch.testing.assert_close(frags.bary.sum(-1)[frags.mask], torch.ones(int(frags.mask.sum()), dtype=F64))
    assert torch.all(frags.bary[~frags.mask] == 0)
    torch.testing.assert_close(frags.depth[frags.mask], torch.full((int(frags.mask.sum()),), 0.25, dtype=F64))


# ------------------------------------------------------------------------------------------------
# texture


def test_texture_uv_origin_is_the_first_texel_row():
    image = torch.arange(6, dtype=F64).view(1, 2, 3, 1)  # rows [0 1 2], [3 4 5]
    centres = torch.tensor([[[[0.5 / 3, 0.25], [2.5 / 3, 0.25], [0.5 / 3, 0.75]]]], dtype=F64)
    out = texture(image, centres)
    assert out.view(-1).tolist() == pytest.approx([0.0, 2.0, 3.0])


@pytest.mark.parametrize("boundary", ["wrap", "clamp"])
def test_texture_is_bilinear_with_matching_gradients(boundary):
    torch.manual_seed(2)
    image = torch.rand(2, 3, 4, 2, dtype=F64)
    uv = torch.tensor([[[[0.4, 0.45]]], [[[0.05, 0.9]]]], dtype=F64)  # (B, 1, 1, 2), off texel centres
    out = texture(image, uv, boundary=boundary)
    # Hand-computed sample of batch 0 at texel coordinates (0.4*4 - 0.5, 0.45*3 - 0.5) = (1.1, 0.85).
    row0, row1 = 0.9 * image[0, 0, 1] + 0.1 * image[0, 0, 2], 0.9 * image[0, 1, 1] + 0.1 * image[0, 1, 2]
    by_hand = 0.15 * row0 + 0.85 * row1
    torch.testing.assert_close(out[0, 0, 0], by_hand)
    # Batch 1 at (-0.3, 2.2): wrap blends column 3 with column 0; clamp stays on column 0.
    if boundary == "wrap":
        row2, row0 = 0.3 * image[1, 2, 3] + 0.7 * image[1, 2, 0], 0.3 * image[1, 0, 3] + 0.7 * image[1, 0, 0]
        expected = 0.8 * row2 + 0.2 * row0
    else:
        expected = image[1, 2, 0]
    torch.testing.assert_close(out[1, 0, 0], expected)
    assert torch.autograd.gradcheck(lambda i, c: texture(i, c, boundary=boundary),
                                     (image.requires_grad_(), uv.requires_grad_()))


def test_texture_nearest_and_broadcast_image():
    image = torch.arange(12, dtype=F64).view(1, 3, 4, 1)
    uv = torch.tensor([[[[0.3, 0.5]]], [[[0.99, 0.01]]]], dtype=F64)
    out = texture(image, uv, filter="nearest")
    assert out.view(-1).tolist() == [5.0, 3.0]


# ------------------------------------------------------------------------------------------------
# antialias


def _flat_scene(corners, size, faces=((0, 1, 2),)):
    clip = pixel_clip(torch.as_tensor(corners, dtype=F64)[None], size)
    faces = torch.tensor(faces)
    rast = rasterize(clip, faces, size)
    white = (rast[..., 3:] > 0).to(F64)  # colour 1 on the mesh, 0 on background
    return clip, faces, rast, white


def test_antialias_blends_a_pair_by_where_the_edge_crosses():
    size = (8, 12)
    # A vertical right edge at x = 5.3 (pixel units), left of it the triangle.
    clip, faces, rast, white = _flat_scene([[5.3, -20.0], [5.3, 30.0], [-40.0, 4.0]], size)
    out = antialias(white, rast, clip, faces)
    # Pixel column 5 spans [5, 6]: the triangle covers 0.3 of it, so it gets 0.3 of the white.
    torch.testing.assert_close(out[0, :, 5, 0], torch.full((8,), 0.3, dtype=F64))
    assert torch.all(out[0, :, :5] == 1) and torch.all(out[0, :, 6:] == 0)  # (c) nothing else changes


def test_antialias_leaves_interior_edges_and_flat_regions_alone():
    size = (16, 16)
    quad = [[2.3, 2.2], [13.6, 2.1], [13.7, 13.8], [2.2, 13.6]]
    clip, faces, rast, _ = _flat_scene(quad, size, faces=((0, 1, 2), (0, 2, 3)))
    ids = rast[..., 3:].clone()  # a colour that jumps across the diagonal
    out = antialias(ids, rast, clip, faces)
    changed = (out != ids)[0, ..., 0]
    # Only the quad's outline blends; the diagonal between the two faces is not a silhouette.
    assert changed.any()
    assert not changed[4:12, 4:12].any()
    assert torch.equal(out[0, 4:12, 4:12], ids[0, 4:12, 4:12])


def test_opposite_vertices_of_a_quad():
    far = opposite_vertices(torch.tensor([[0, 1, 2], [0, 2, 3]]))
    # Face 0's edge 1 (corners 2 -> 0) is shared with face 1, whose far corner is 3; the rest is boundary.
    assert far.tolist() == [[-1, 3, -1], [-1, -1, 1]]


def _coverage(clip, faces, size):
    rast = rasterize(clip, faces, size)
    white = (rast[..., 3:] > 0).to(clip.dtype)
    return antialias(white, rast, clip, faces).sum()


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_moving_a_silhouette_vertex_outward_grows_coverage_with_matching_gradient(direction):
    size = (16, 16)
    faces = torch.tensor([[0, 1, 2]])
    corners = torch.tensor([[[2.3, 2.2], [2.4, 13.7], [12.6, 8.1]]], dtype=F64)
    clip = pixel_clip(corners, size).requires_grad_()
    coverage = _coverage(clip, faces, size)
    (grad,) = torch.autograd.grad(coverage, clip)
    # Apex C moves along x: the exact area grows by (B_y - A_y) / 2 px^2 per px, and x_clip = x_px / 8.
    area_rate = (13.7 - 2.2) / 2 * size[1] / 2
    step = 0.3 * 2 / size[1]  # 0.3 pixel in clip units
    moved = clip.detach().clone()
    moved[0, 2, 0] += direction * step
    finite = (_coverage(moved, faces, size) - coverage.detach()) / (direction * step)
    assert (_coverage(moved, faces, size) > coverage) == (direction > 0)  # outward grows
    assert grad[0, 2, 0] > 0
    # Antialiased coverage approximates the area with a few pixel-sized steps along the edges, so
    # the analytic rate, a 0.3 px finite difference and the exact area rate agree to ~25%.
    assert grad[0, 2, 0].item() == pytest.approx(finite.item(), rel=0.25)
    assert grad[0, 2, 0].item() == pytest.approx(area_rate, rel=0.25)


def test_antialias_gradients_match_finite_differences():
    size = (12, 12)
    faces = torch.tensor([[0, 1, 2]])
    clip = pixel_clip(torch.tensor([[[1.7, 1.4], [10.3, 3.55], [4.15, 10.6]]], dtype=F64), size, depth=0.3)
    clip = clip * torch.tensor([1.0, 1.3, 0.7], dtype=F64).view(1, 3, 1)
    rast = rasterize(clip, faces, size)
    color = torch.rand(1, *size, 2, dtype=F64)

    def render(clip, color):
        return antialias(color, rast, clip, faces)

    # nvdiffrast's backward divides by (dy + 1e-3 px): with edges ~8 px tall that is a relative
    # error near 1e-4, inside gradcheck's rtol of 1e-3.
    assert torch.autograd.gradcheck(render, (clip.requires_grad_(), color.requires_grad_()), fast_mode=True)


# ------------------------------------------------------------------------------------------------
# ico-sphere


@pytest.mark.parametrize("batch", [1, 2])
def test_ico_sphere_silhouette_is_a_disc_of_the_projected_radius(batch):
    size = (96, 128)
    verts, faces = ico_sphere(3)
    radius, distance, focal = 0.1, 0.6, 150.0
    model = verts * radius + torch.tensor([0.0, 0.0, -distance], dtype=F64)
    points = model_to_camera(model)[None].expand(batch, -1, -1).contiguous()
    intrinsics = torch.tensor([[focal, focal, 64.0, 48.0]], dtype=F64)
    clip = clip_space(points, intrinsics, size)
    rast = rasterize(clip, faces, size)
    expected_px = math.pi * (focal * radius / math.sqrt(distance ** 2 - radius ** 2)) ** 2
    for b in range(batch):
        area = (rast[b, ..., 3] > 0).sum().item()
        assert area == pytest.approx(expected_px, rel=0.03)  # inscribed polyhedron: slightly smaller
    normals = interpolate(verts, rast, faces)  # camera-facing side only: model z > 0
    assert torch.all(normals[..., 2][rast[..., 3] > 0] > 0)
    smooth = antialias((rast[..., 3:] > 0).to(F64), rast, clip, faces)
    assert smooth.sum().item() / batch == pytest.approx(expected_px, rel=0.03)


# ------------------------------------------------------------------------------------------------
# errors


def test_errors_name_the_argument_and_shape():
    clip, faces = torch.zeros(1, 3, 4), torch.tensor([[0, 1, 2]])
    rast = rasterize(clip, faces, (4, 4))
    with pytest.raises(ValueError, match=r"clip .*\(3, 4\)"):
        rasterize(torch.zeros(3, 4), faces, (4, 4))
    with pytest.raises(ValueError, match=r"faces .*\(3,\)"):
        rasterize(clip, torch.tensor([0, 1, 2]), (4, 4))
    with pytest.raises(ValueError, match="faces .*float"):
        rasterize(clip, faces.float(), (4, 4))
    with pytest.raises(ValueError, match="resolution"):
        rasterize(clip, faces, (4, -1))
    with pytest.raises(ValueError, match="backend"):
        rasterize(clip, faces, (4, 4), backend="opengl")
    with pytest.raises(ValueError, match="CUDA"):
        rasterize(clip, faces, (4, 4), backend="nvdiffrast")
    with pytest.raises(ValueError, match=r"attributes batch .*\(2, 3, 5\)"):
        interpolate(torch.zeros(2, 3, 5), torch.zeros(3, 4, 4, 4), faces)
    with pytest.raises(ValueError, match=r"rast .*\(1, 4, 4\)"):
        interpolate(torch.zeros(3, 5), rast[..., 0], faces)
    with pytest.raises(ValueError, match=r"uv .*\(1, 4, 4, 3\)"):
        texture(torch.zeros(1, 2, 2, 3), torch.zeros(1, 4, 4, 3))
    with pytest.raises(ValueError, match="filter"):
        texture(torch.zeros(1, 2, 2, 3), torch.zeros(1, 4, 4, 2), filter="cubic")
    with pytest.raises(ValueError, match=r"color .*\(1, 5, 4, 3\)"):
        antialias(torch.zeros(1, 5, 4, 3), rast, clip, faces)
    with pytest.raises(ValueError, match="one device"):
        interpolate(torch.zeros(3, 5, device="meta"), rast, faces)
    with pytest.raises(ValueError, match="at most"):
        rasterize(clip, torch.zeros(1, 3, dtype=torch.long).expand(1 << 24, 3), (4, 4))
    # Nothing to blend on an empty image: the colour comes back unchanged.
    color = torch.rand(1, 4, 4, 3)
    assert torch.equal(antialias(color, rast, clip, faces), color)


# ------------------------------------------------------------------------------------------------
# nvdiffrast parity (GPU host only)


def _nvdiffrast_ready() -> bool:
    if not torch.cuda.is_available():
        return False
    from neuavatar.render import _nvdiffrast

    return _nvdiffrast.available()


needs_nvdiffrast = pytest.mark.skipif(not _nvdiffrast_ready(), reason="needs CUDA and nvdiffrast")


def _sphere_scene(batch: int, size: tuple[int, int], device: str = "cuda"):
    torch.manual_seed(3)
    verts, faces = ico_sphere(4)
    verts = verts.float() * (1 + 0.05 * torch.randn(len(verts), 1))  # lumpy: some folded silhouettes
    shift = torch.randn(batch, 1, 3) * torch.tensor([0.02, 0.02, 0.0]) + torch.tensor([0.0, 0.0, 0.6])
    points = (verts * 0.12)[None] + shift
    intrinsics = torch.tensor([[size[1] * 1.5, size[1] * 1.5, size[1] / 2, size[0] / 2]])
    clip = clip_space(points, intrinsics, size).to(device)
    return clip, faces.to(device), verts.to(device)


@needs_nvdiffrast
@pytest.mark.parametrize("batch", [1, 4])
def test_torch_and_nvdiffrast_agree(batch):
    size = (128, 160)
    clip, faces, verts = _sphere_scene(batch, size)
    colors = torch.rand_like(verts)
    outputs, grads = {}, {}
    # Compare gradients where both backends see the same triangles around a pixel: one pixel that
    # sees another (edge-on) triangle can carry a huge barycentric gradient of its own.
    ids = [rasterize(clip, faces, size, backend=b)[..., 3] for b in ("torch", "nvdiffrast")]
    same = (ids[0] == ids[1]).float()[:, None]
    keep = (-torch.nn.functional.max_pool2d(-same, 3, stride=1, padding=1))[:, 0, ..., None]
    cotangent = torch.randn(batch, *size, 3, device="cuda") * keep
    for backend in ("torch", "nvdiffrast"):
        c = clip.clone().requires_grad_()
        a = colors.clone().requires_grad_()
        rast = rasterize(c, faces, size, backend=backend)
        image = antialias(interpolate(a, rast, faces, backend=backend), rast, c, faces, backend=backend)
        (image * cotangent).sum().backward()
        outputs[backend], grads[backend] = (rast.detach(), image.detach()), (c.grad, a.grad)
    (rast_t, image_t), (rast_n, image_n) = outputs["torch"], outputs["nvdiffrast"]
    same = rast_t[..., 3] == rast_n[..., 3]
    # Coverage uses the same 1/16 pixel snapping and fill rule; only depth ties may differ.
    assert same.float().mean() > 0.999
    torch.testing.assert_close(rast_t[same], rast_n[same], atol=1e-4, rtol=0)
    both = same[..., None].expand_as(image_t)
    assert (image_t - image_n).abs()[both].max() < 1e-3
    for g_t, g_n in zip(grads["torch"], grads["nvdiffrast"]):
        cosine = torch.nn.functional.cosine_similarity(g_t.flatten(), g_n.flatten(), dim=0)
        assert cosine > 0.99  # a handful of differing pixels may move a few vertex gradients


@needs_nvdiffrast
def test_texture_matches_nvdiffrast():
    torch.manual_seed(4)
    image = torch.rand(2, 17, 23, 3, device="cuda")
    uv = torch.rand(2, 40, 50, 2, device="cuda") * 3 - 1
    for boundary in ("wrap", "clamp"):
        for filter in ("linear", "nearest"):
            ref = texture(image, uv, filter=filter, boundary=boundary, backend="nvdiffrast")
            out = texture(image, uv, filter=filter, boundary=boundary, backend="torch")
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
