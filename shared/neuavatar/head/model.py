"""The head-model interface every backend (FLAME, the built-in open model) implements.

    vertices = head(HeadParams(shape, expression, jaw, neck, eyes, rotation, translation))

Model space: metres, y up, the face looking along +z, x towards the subject's left (the image's
right when they face the camera). ``neuavatar.render.camera`` maps it to an OpenCV camera.

Kinematic tree (as FLAME): ``root`` (rotation = the global head/neck orientation) -> ``neck`` (the
head on the neck) -> ``jaw``, ``right_eye``, ``left_eye``. ``translation`` moves the posed mesh.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from neuavatar.head.lbs import blend_shapes, skin
from neuavatar.landmarks import IBUG68_FROM_MEDIAPIPE, NUM_MEDIAPIPE

__all__ = ["JOINT_NAMES", "HeadParams", "HeadOutput", "LandmarkEmbedding", "HeadModel"]

JOINT_NAMES = ("root", "neck", "jaw", "right_eye", "left_eye")
PARENTS = (-1, 0, 1, 1, 1)


@dataclass
class HeadParams:
    """Per-frame head parameters, batched over B. Build zeros with :meth:`HeadModel.zero_params`."""

    shape: Tensor  # (B, S) identity coefficients, ~N(0, 1) a priori
    expression: Tensor  # (B, E) expression coefficients
    jaw: Tensor  # (B, 3) axis-angle of the jaw
    neck: Tensor  # (B, 3) axis-angle of the head on the neck
    eyes: Tensor  # (B, 2, 3) axis-angle of the [right, left] eyeball (the subject's)
    rotation: Tensor  # (B, 3) axis-angle of the whole head (root joint)
    translation: Tensor  # (B, 3) metres, added after posing

    @property
    def batch_size(self) -> int:
        return self.shape.shape[0]

    def to(self, device: torch.device | str) -> HeadParams:
        return HeadParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def detach(self) -> HeadParams:
        return HeadParams(**{f.name: getattr(self, f.name).detach() for f in fields(self)})

    def clone(self) -> HeadParams:
        """A copy that later changes to these tensors do not reach."""
        return HeadParams(**{f.name: getattr(self, f.name).clone() for f in fields(self)})

    def median(self) -> HeadParams:
        """(1) the per-parameter median over the batch: a person's rest pose over a clip."""
        # contiguous first: torch 2.13's median along dim 0 of an expanded (stride-0) tensor is wrong
        return HeadParams(**{f.name: getattr(self, f.name).contiguous().median(0, keepdim=True).values
                             for f in fields(self)})

    def __getitem__(self, index) -> HeadParams:
        """The parameters of the frames ``index`` selects (a slice or index tensor), batch kept."""
        return HeadParams(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def cat(params: list[HeadParams]) -> HeadParams:
        return HeadParams(**{f.name: torch.cat([getattr(p, f.name) for p in params]) for f in fields(HeadParams)})


@dataclass
class HeadOutput:
    vertices: Tensor  # (B, V, 3) model space, metres
    joints: Tensor  # (B, J, 3) posed joints


class LandmarkEmbedding(nn.Module):
    """Landmarks as fixed points on the mesh surface: a triangle and barycentric weights each."""

    def __init__(self, faces: Tensor, barycentric: Tensor):
        """
        Args:
            faces: (L,) long, triangle index of each landmark.
            barycentric: (L, 3) weights of the triangle's corners, rows summing to 1.
        """
        super().__init__()
        if faces.ndim != 1 or barycentric.shape != (len(faces), 3):
            raise ValueError(f"faces must be (L,) and barycentric (L, 3); got {tuple(faces.shape)}, "
                             f"{tuple(barycentric.shape)}")
        self.register_buffer("faces", faces.long())
        self.register_buffer("barycentric", barycentric.float())

    def forward(self, vertices: Tensor, triangles: Tensor) -> Tensor:
        """(B, L, 3) landmark positions from (B, V, 3) vertices and the mesh's (F, 3) triangles."""
        corners = vertices[:, triangles[self.faces]]  # (B, L, 3 corners, 3)
        return (corners * self.barycentric[None, :, :, None]).sum(2)


class HeadModel(nn.Module):
    """A parametric head: identity and expression blend shapes, articulated by linear blend skinning.

    Layouts: vertex arrays are (V, 3); bases are (V, 3, K) (offset of coordinate c of vertex v per
    coefficient); pose correctives as ``neuavatar.head.lbs.skin`` documents them.

    Backends fill the buffers; everything else (posing, landmarks, regions) lives here.

    Buffers:
        template (V, 3), faces (F, 3) long, uvs (T, 2) in [0, 1] with v up, face_uvs (F, 3) long,
        shape_basis (V, 3, S), expression_basis (V, 3, E), joint_regressor (J, V),
        lbs_weights (V, J), parents (J,) long, pose_correctives (9 (J-1), 3V) or absent.
    Attributes:
        landmarks_mediapipe: the 478 MediaPipe points; ``landmarks68`` applies the iBUG table.
        regions: name -> (V,) bool vertex mask (``face``, ``scalp``, ``ears``, ``eyes``, ``neck``,
            ``mouth_interior``, ``lips`` where the backend knows them).
    """

    name: str = "head"

    def __init__(self, *, template: Tensor, faces: Tensor, uvs: Tensor, face_uvs: Tensor, shape_basis: Tensor,
                 expression_basis: Tensor, joint_regressor: Tensor, lbs_weights: Tensor,
                 landmarks_mediapipe: LandmarkEmbedding, regions: dict[str, Tensor],
                 pose_correctives: Tensor | None = None, expression_names: tuple[str, ...] | None = None):
        super().__init__()
        v = template.shape[0]
        checks = {
            "template": (template, (v, 3)), "shape_basis": (shape_basis, (v, 3, None)),
            "expression_basis": (expression_basis, (v, 3, None)), "joint_regressor": (joint_regressor, (5, v)),
            "lbs_weights": (lbs_weights, (v, 5)), "faces": (faces, (None, 3)), "face_uvs": (face_uvs, (len(faces), 3)),
            "uvs": (uvs, (None, 2)),
        }
        for name, (t, want) in checks.items():
            if t.ndim != len(want) or any(w is not None and s != w for s, w in zip(t.shape, want)):
                raise ValueError(f"{name} must have shape {want} (None: any), got {tuple(t.shape)}")
        if len(landmarks_mediapipe.faces) != NUM_MEDIAPIPE:
            raise ValueError(f"the landmark embedding must have {NUM_MEDIAPIPE} points")
        if int(landmarks_mediapipe.faces.max()) >= len(faces) or int(landmarks_mediapipe.faces.min()) < 0:
            raise ValueError(f"the landmark embedding names triangles outside 0..{len(faces) - 1}")
        self.register_buffer("template", template.float())
        self.register_buffer("faces", faces.long())
        self.register_buffer("uvs", uvs.float())
        self.register_buffer("face_uvs", face_uvs.long())
        self.register_buffer("shape_basis", shape_basis.float())
        self.register_buffer("expression_basis", expression_basis.float())
        self.register_buffer("joint_regressor", joint_regressor.float())
        self.register_buffer("lbs_weights", lbs_weights.float())
        self.register_buffer("parents", torch.tensor(PARENTS))
        # vertices the joint regressor reads (computed once: finding them needs a device sync)
        self.register_buffer("_regressor_support", joint_regressor.abs().sum(0).nonzero()[:, 0])
        self.register_buffer("pose_correctives", None if pose_correctives is None else pose_correctives.float())
        self.landmarks_mediapipe = landmarks_mediapipe
        self._region_names = tuple(regions)
        for name, mask in regions.items():
            if mask.shape != (v,):
                raise ValueError(f"region {name!r} must be a ({v},) vertex mask, got {tuple(mask.shape)}")
            self.register_buffer(f"region_{name}", mask.bool())
        self.expression_names = expression_names

    @property
    def regions(self) -> dict[str, Tensor]:
        """name -> (V,) bool vertex mask."""
        return {name: getattr(self, f"region_{name}") for name in self._region_names}

    @property
    def num_vertices(self) -> int:
        return self.template.shape[0]

    @property
    def num_shape(self) -> int:
        return self.shape_basis.shape[2]

    @property
    def num_expression(self) -> int:
        return self.expression_basis.shape[2]

    def zero_params(self, batch_size: int = 1) -> HeadParams:
        """Neutral parameters (mean identity, no expression, rest pose) on the model's device."""
        z = lambda *s: torch.zeros(batch_size, *s, device=self.template.device, dtype=self.template.dtype)  # noqa: E731
        return HeadParams(shape=z(self.num_shape), expression=z(self.num_expression), jaw=z(3), neck=z(3),
                          eyes=z(2, 3), rotation=z(3), translation=z(3))

    def check(self, params: HeadParams) -> None:
        """Raise ValueError naming any parameter whose shape does not fit this model."""
        b = params.batch_size
        want = {"shape": (b, self.num_shape), "expression": (b, self.num_expression), "jaw": (b, 3), "neck": (b, 3),
                "eyes": (b, 2, 3), "rotation": (b, 3), "translation": (b, 3)}
        for name, shape in want.items():
            got = tuple(getattr(params, name).shape)
            if got != shape:
                raise ValueError(f"{self.name} head: {name} must have shape {shape}, got {got}")

    def forward(self, params: HeadParams, vertex_ids: Tensor | None = None, identity: Tensor | None = None
                ) -> HeadOutput:
        """Pose the head: (B, V, 3) vertices and (B, J, 3) joints, in model space.

        Args:
            vertex_ids: (K,) long; when given, only these vertices are computed (in this order),
                much cheaper when only a few are needed (landmarks). Not with pose correctives.
            identity: (V, 3) the template with one person's identity applied
                (:meth:`identity_template`); ``params.shape`` is then not read. Saves the identity
                blend on every call when one person is posed again and again (rendering).
        """
        self.check(params)
        joints = self._joints(params, identity)
        if vertex_ids is not None:
            if self.pose_correctives is not None:
                raise ValueError("vertex_ids cannot be used with a model that has pose correctives")
            v_shaped = self._shaped(params, vertex_ids, identity)
            weights = self.lbs_weights[vertex_ids]
        else:
            v_shaped = self._shaped(params, identity=identity)
            weights = self.lbs_weights
        pose = torch.cat([params.rotation[:, None], params.neck[:, None], params.jaw[:, None], params.eyes], 1)
        vertices, posed_joints = skin(v_shaped, joints, pose, PARENTS, weights, self.pose_correctives)
        t = params.translation[:, None]
        return HeadOutput(vertices=vertices + t, joints=posed_joints + t)

    def identity_template(self, shape: Tensor) -> Tensor:
        """(V, 3) the rest-pose template of the person with identity coefficients ``shape`` (S,)."""
        return self.template + blend_shapes(shape.reshape(1, -1), self.shape_basis)[0]

    def _shaped(self, params: HeadParams, ids: Tensor | slice = slice(None), identity: Tensor | None = None) -> Tensor:
        """(B, K, 3) rest-pose vertices ``ids`` with identity and expression applied."""
        base = (self.template[ids] + blend_shapes(params.shape, self.shape_basis[ids]) if identity is None
                else identity[ids])
        return base + blend_shapes(params.expression, self.expression_basis[ids])

    def _joints(self, params: HeadParams, identity: Tensor | None = None) -> Tensor:
        """(B, J, 3) rest-pose joints, regressed from the vertices the regressor uses."""
        support = self._regressor_support
        return torch.einsum("jv,bvc->bjc", self.joint_regressor[:, support], self._shaped(params, support, identity))

    def landmark_vertices(self) -> Tensor:
        """(K,) the vertices that carry the landmarks (the corners of their triangles)."""
        return self.faces[self.landmarks_mediapipe.faces].reshape(-1).unique()

    def landmarks_from_subset(self, subset_vertices: Tensor, subset_ids: Tensor) -> Tensor:
        """(B, 478, 3) landmarks from vertices computed only at ``subset_ids`` (``landmark_vertices()``)."""
        position = torch.full((self.num_vertices,), -1, dtype=torch.long, device=subset_ids.device)
        position[subset_ids] = torch.arange(len(subset_ids), device=subset_ids.device)
        corners = position[self.faces[self.landmarks_mediapipe.faces]]  # (L, 3) rows into the subset
        return (subset_vertices[:, corners] * self.landmarks_mediapipe.barycentric[None, :, :, None]).sum(2)

    def landmarks(self, vertices: Tensor) -> Tensor:
        """(B, 478, 3) MediaPipe landmarks on the surface of (B, V, 3) vertices."""
        return self.landmarks_mediapipe(vertices, self.faces)

    def landmarks68(self, vertices: Tensor) -> Tensor:
        """(B, 68, 3) iBUG landmarks (a fixed subset of the MediaPipe ones)."""
        return self.landmarks(vertices)[:, list(IBUG68_FROM_MEDIAPIPE)]
