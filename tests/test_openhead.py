"""The built-in open head model: its data, its articulation, and its landmark embedding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from neuavatar.errors import ConfigError
from neuavatar.head import load_openhead
from neuavatar.head.model import HeadParams


@pytest.fixture(scope="module")
def head():
    return load_openhead()


def _landmarks(head, **changes):
    params = head.zero_params(1)
    for name, value in changes.items():
        if name.startswith("expr_"):
            params.expression[0, head.expression_names.index(name[5:])] = value
        else:
            getattr(params, name)[0] = torch.as_tensor(value, dtype=torch.float32)
    return head.landmarks(head(params).vertices)[0]


def test_shapes_and_invariants(head):
    assert head.num_vertices == 4851 and len(head.faces) == 9560
    assert head.num_shape == 100 and head.num_expression == 49
    assert "jawOpen" not in head.expression_names and "eyeBlinkLeft" in head.expression_names
    assert torch.allclose(head.lbs_weights.sum(1), torch.ones(head.num_vertices), atol=1e-5)
    assert torch.allclose(head.joint_regressor.sum(1), torch.ones(5), atol=1e-4)
    assert head.uvs.min() >= 0 and head.uvs.max() <= 1
    regions = head.regions
    assert {"face", "scalp", "ears", "eyes", "neck", "mouth_interior", "lips"} <= set(regions)
    covered = sum(regions[k].int() for k in ("face", "scalp", "ears", "eyes", "neck", "mouth_interior"))
    assert (covered == 1).all(), "the main regions partition the vertices"
    with pytest.raises(ConfigError, match="100 identity"):
        load_openhead(num_shape=101)


def test_anatomy_and_sides(head):
    p = _landmarks(head)
    assert p[33, 0] < 0 < p[263, 0], "the subject's right eye corner is at -x"
    assert p[152, 1] < p[13, 1] < p[1, 1] < p[168, 1], "chin below mouth below nose tip below nose bridge"
    assert p[[1, 4], 2].max() == p[:, 2].max(), "the nose tip (MediaPipe's 1 and 4) is the most forward landmark"
    joints = head(head.zero_params(1)).joints[0]
    assert joints[3, 0] < 0 < joints[4, 0], "right_eye at -x, left_eye at +x"


def test_articulation_moves_the_right_parts(head):
    rest = _landmarks(head)
    opened = _landmarks(head, jaw=[0.25, 0.0, 0.0])
    gap = lambda p: float(p[13, 1] - p[14, 1])  # noqa: E731  upper inner lip above lower inner lip
    assert gap(opened) > gap(rest) + 0.005, "a positive jaw pitch opens the mouth by centimetres"
    assert torch.allclose(opened[168], rest[168], atol=1e-5), "the jaw does not move the nose bridge"
    looked = _landmarks(head, eyes=[[0.0, 0.3, 0.0], [0.0, 0.3, 0.0]])
    assert float(looked[468, 0] - rest[468, 0]) > 0.002, "turning the eyes moves the irises"
    assert torch.allclose(looked[33], rest[33], atol=1e-6), "but not the eye corners"
    blink = _landmarks(head, expr_eyeBlinkRight=1.0)
    opening = lambda p: float(p[159, 1] - p[145, 1])  # noqa: E731  right eye's upper minus lower lid
    assert opening(blink) < 0.4 * opening(rest)
    turned = _landmarks(head, neck=[0.0, 0.4, 0.0])
    assert float(turned[1, 0] - rest[1, 0]) > 0.01, "turning the neck swings the nose sideways"


def test_identity_changes_shape_not_position(head):
    torch.manual_seed(0)
    params = head.zero_params(1)
    params.shape[0] = torch.randn(head.num_shape)
    other = head(params).vertices[0]
    rest = head(head.zero_params(1)).vertices[0]
    move = torch.linalg.norm(other - rest, dim=1)
    assert float(move.max()) > 0.005, "a random identity changes the face by millimetres to centimetres"
    assert float(torch.linalg.norm((other - rest).mean(0))) < 0.01, "without carrying the head away"


def test_vertex_subset_matches_full_forward(head):
    torch.manual_seed(1)
    params = head.zero_params(3)
    params.expression.normal_(0, 0.5)
    params.jaw[:, 0] = 0.2
    params.rotation.normal_(0, 0.2)
    full = head(params).vertices
    ids = head.landmark_vertices()
    subset = head(params, vertex_ids=ids).vertices
    torch.testing.assert_close(subset, full[:, ids], rtol=0, atol=1e-6)
    torch.testing.assert_close(head.landmarks_from_subset(subset, ids), head.landmarks(full), rtol=0, atol=1e-6)


def test_embedding_agrees_with_mediapipe_on_a_rendering(head):
    """Render the model (painted), let MediaPipe find its landmarks, compare with the embedding."""
    import concurrent.futures as cf
    import multiprocessing

    from neuavatar.head.openhead_register import DISTANCE, FOCAL, SIZE, _render, painted_colours
    from neuavatar.preprocess.worker import image_landmarks, init_worker
    from neuavatar.render import model_to_camera, project

    image, aux = _render(head, painted_colours(head), 6.0, 4.0)
    with cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker) as pool:
        detected = pool.submit(image_landmarks, image).result()
    assert detected is not None, "MediaPipe must see a face in the model's rendering"
    params = head.zero_params(1)
    params.rotation[0] = torch.tensor([np.radians(4.0), np.radians(6.0), 0.0])
    centre = head.joint_regressor[1] @ head.template
    params.translation[0] = torch.tensor([0.0, 0.0, -DISTANCE]) - centre - torch.tensor([0.0, 0.04, 0.0])
    k = torch.tensor([[FOCAL, FOCAL, SIZE / 2, SIZE / 2]])
    projected = project(model_to_camera(head.landmarks(head(params).vertices)), k)[0].numpy()
    error = np.linalg.norm(projected - detected[:, :2], axis=1)
    assert error.mean() < 5.0, f"embedding vs MediaPipe: {error.mean():.2f} px mean at {SIZE}x{SIZE}"
    assert np.median(error) < 4.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_agree(head):
    params = head.zero_params(2)
    params.expression.normal_(0, 0.5)
    params.jaw[:, 0] = 0.2
    cpu = head(params).vertices
    gpu = head.to("cuda")(params.to("cuda")).vertices.cpu()
    head.to("cpu")
    torch.testing.assert_close(gpu, cpu, rtol=0, atol=1e-5)


def test_the_median_of_repeated_parameters_is_the_parameters(head):
    """A rest pose repeated over frames (expanded tensors) has itself as its median (torch 2.13's
    median along dim 0 of an expanded tensor returned other values: NaN translations downstream)."""
    one = head.zero_params(1)
    one.translation = torch.tensor([[0.0067, -0.1399, -0.3579]])
    one.jaw = torch.tensor([[0.1, 0.2, 0.3]])
    repeated = HeadParams(**{f.name: getattr(one, f.name).expand(5, *getattr(one, f.name).shape[1:])
                             for f in dataclasses.fields(HeadParams)})
    median = repeated.median()
    for f in dataclasses.fields(HeadParams):
        assert torch.equal(getattr(median, f.name), getattr(one, f.name)), f.name
