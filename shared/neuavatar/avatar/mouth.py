"""The mouth's cavity: a dark pocket behind the lips, which the head models lack.

Neither openhead (teeth and tongue only) nor FLAME (neither) closes the mouth from behind, so
through a wide-open mouth the renderer showed whatever lay behind: the inside of the head's far
side, teeth and tongue stretched over it, a smear of lip and hair colours. The cavity is a tube
from the inner lip contour back into the head, closed by a cap. With L_k the K inner-lip landmarks
on the mesh (in order around the mouth), c their mean and f the head's forward direction,

    ring j = 0..R:  c + (1 - (1 - s) j/R) (L_k - c) - (j/R) d f,    cap centre c - d f

(ring 0 is the lips, s < 1 narrows the back, d is the depth; R rings keep the triangles, and so
the Gaussians on them, small). The tube's triangles carry Gaussians like the mesh's, starting dark;
they open with the lips, the lower half riding on the jaw, and stay hidden behind the lips and
teeth while the mouth is closed.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neuavatar.head.model import HeadModel
from neuavatar.landmarks import REGION_LOOPS

__all__ = ["MouthCavity", "CAVITY_COLOUR"]

DEPTH = 0.045  # metres behind the lips: past the back of openhead's teeth
SHRINK = 0.8
RINGS = 5
CAVITY_COLOUR = (0.16, 0.07, 0.07)
"""The cavity's starting colour, RGB in [0, 1]: the dark red of a mouth's inside."""


class MouthCavity(nn.Module):
    """The cavity of ``head``'s mouth: :meth:`vertices` (B, (R + 1) K + 1, 3) and ``faces``
    ((2R + 1) K, 3), which index the mesh's vertices followed by the cavity's (from ``head.num_vertices``)."""

    def __init__(self, head: HeadModel):
        super().__init__()
        loop = torch.tensor(REGION_LOOPS["lips_inner"], device=head.faces.device)
        embedding = head.landmarks_mediapipe
        self.register_buffer("corners", head.faces[embedding.faces[loop]])  # (K, 3) the landmarks' triangles
        self.register_buffer("barycentric", embedding.barycentric[loop])  # (K, 3)
        k = len(loop)
        after = (torch.arange(k) + 1) % k
        parts = []
        for j in range(RINGS):  # the band between rings j and j + 1
            front, back = torch.arange(k) + j * k, torch.arange(k) + (j + 1) * k
            parts += [torch.stack([front, front[after], back], 1), torch.stack([front[after], back[after], back], 1)]
        back = torch.arange(k) + RINGS * k
        parts.append(torch.stack([back, torch.full((k,), (RINGS + 1) * k), back[after]], 1))  # the cap
        self.register_buffer("faces", (torch.cat(parts) + head.num_vertices).to(head.faces.device))

    def vertices(self, mesh: Tensor, forward: Tensor) -> Tensor:
        """(B, (R + 1) K + 1, 3) the cavity's vertices for the posed mesh (B, V, 3) facing ``forward`` (B, 3)."""
        lips = (mesh[:, self.corners] * self.barycentric[None, :, :, None]).sum(2)  # (B, K, 3) the front ring L_k
        centre = lips.mean(1, keepdim=True)
        back = forward[:, None] * DEPTH
        rings = [centre + (1 - (1 - SHRINK) * j / RINGS) * (lips - centre) - (j / RINGS) * back for j in range(RINGS + 1)]
        return torch.cat([*rings, centre - back], 1)
