"""Adam (Kingma & Ba, 2015) for the tracker, written out.

The first ``torch.optim`` optimiser of a process imports ``torch._dynamo`` (its methods are wrapped
to keep the compiler out): 4.6 s of Python on the GPU host, four times the whole fit of a 10 s
driving video, and a one-shot reenactment pays it. The update is a few lines; every state tensor
lives on the parameters' device, so CUDA graphs can capture steps. Same arithmetic as
``torch.optim.Adam`` (no weight decay, no amsgrad):

    m ← β₁ m + (1 − β₁) g          v ← β₂ v + (1 − β₂) g²
    θ ← θ − lr · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["Adam"]


class Adam:
    """Adam over parameter groups ``[{"params": [...], "lr": float}, ...]``."""

    def __init__(self, groups: list[dict], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.groups = [(list(g["params"]), float(g["lr"])) for g in groups]
        self.betas, self.eps = betas, eps
        # steps each parameter took (one sitting a step out does not count it): tensors, so that
        # captured graphs count on when they replay
        self.t = [[torch.zeros((), device=p.device) for p in params] for params, _ in self.groups]
        self.m = [[torch.zeros_like(p) for p in params] for params, _ in self.groups]
        self.v = [[torch.zeros_like(p) for p in params] for params, _ in self.groups]

    def parameters(self) -> list[Tensor]:
        return [p for params, _ in self.groups for p in params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.zero_()

    def reset(self) -> None:
        """Forget the moments and the step count (a fresh Adam), in place."""
        for state in (*self.t, *self.m, *self.v):
            for x in state:
                x.zero_()

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        for (params, lr), ts, ms, vs in zip(self.groups, self.t, self.m, self.v):
            for p, t, m, v in zip(params, ts, ms, vs):
                if p.grad is None:  # not part of this step's loss
                    continue
                t.add_(1)
                correct1 = 1 - torch.pow(b1, t)
                root_correct2 = (1 - torch.pow(b2, t)).sqrt()
                m.lerp_(p.grad, 1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                p.sub_(lr * (m / correct1) / (v.sqrt() / root_correct2 + self.eps))
