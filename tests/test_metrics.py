"""Image metrics against closed forms, and LPIPS against a torchvision/lpips-shaped reference network.

No real LPIPS weights are available offline, so the LPIPS tests build random weights in the two
key layouts the loader reads, the way torchvision and the lpips package lay their modules out.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from neuavatar.errors import ConfigError
from neuavatar.metrics import (
    LPIPS,
    PSNR_MAX_DB,
    dssim_loss,
    image_metrics,
    l1,
    load_lpips,
    ms_ssim,
    ms_ssim_win_size,
    psnr,
    ssim,
)


def _images(b: int = 2, h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    """(b, h, w, 3) smooth-ish images in [0, 1]: random blobs, so SSIM has structure to compare."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 3, h // 8 + 1, w // 8 + 1, generator=g)
    return nn.functional.interpolate(coarse, size=(h, w), mode="bilinear").permute(0, 2, 3, 1).contiguous()


def _noisy(x: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)


# --- PSNR, L1 ---------------------------------------------------------------------------------


def test_psnr_identical_images_is_the_documented_cap():
    x = _images()
    torch.testing.assert_close(psnr(x, x), torch.full((2,), PSNR_MAX_DB))


def test_psnr_of_a_constant_offset_is_the_closed_form():
    target = _images() * 0.8
    for offset in (0.01, 0.1, 0.2):
        got = psnr(target + offset, target)
        torch.testing.assert_close(got, torch.full((2,), -20 * math.log10(offset)), atol=1e-3, rtol=0)


def test_mask_restricts_psnr_and_l1_to_its_pixels():
    target = _images(h=32, w=32)
    pred = target.clone()
    pred[:, :, :16] += 0.2  # only the left half is wrong
    left = torch.zeros(2, 32, 32, 1)
    left[:, :, :16] = 1
    torch.testing.assert_close(psnr(pred, target, left), torch.full((2,), -20 * math.log10(0.2)), atol=1e-3, rtol=0)
    torch.testing.assert_close(psnr(pred, target, 1 - left), torch.full((2,), PSNR_MAX_DB))
    torch.testing.assert_close(l1(pred, target, left.bool()), torch.full((2,), 0.2))
    torch.testing.assert_close(l1(pred, target), torch.full((2,), 0.1))
    empty = torch.zeros_like(left)
    assert psnr(pred, target, empty).isnan().all() and l1(pred, target, empty).isnan().all()


def test_bad_shapes_name_the_argument():
    x = _images()
    with pytest.raises(ValueError, match="pred: expected images"):
        psnr(x.permute(0, 3, 1, 2), x.permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="target"):
        ssim(x, x[:1])
    with pytest.raises(ValueError, match="mask"):
        l1(x, x, torch.ones(2, 64, 64))
    with pytest.raises(ValueError, match="at least 3x3"):
        dssim_loss(x[:, :2], x[:, :2])


# --- SSIM, MS-SSIM, DSSIM ---------------------------------------------------------------------


def test_ssim_is_one_for_identical_images_and_falls_with_noise():
    x = _images()
    torch.testing.assert_close(ssim(x, x), torch.ones(2))
    values = [ssim(_noisy(x, s), x) for s in (0.01, 0.05, 0.2)]
    assert all((a > b).all() for a, b in zip(values, values[1:], strict=False))
    assert (values[-1] < 0.5).all()


@pytest.mark.parametrize(("side", "win"), [(64, 3), (512, 11)])
def test_ms_ssim_at_small_and_large_sizes(side, win):
    assert ms_ssim_win_size(side) == win
    x = _images(b=1, h=side, w=side)
    torch.testing.assert_close(ms_ssim(x, x), torch.ones(1))
    noisy = ms_ssim(_noisy(x, 0.1), x)
    assert noisy.shape == (1,) and 0 < noisy.item() < 1


def test_ms_ssim_window_sizes_and_too_small_images():
    assert [ms_ssim_win_size(s) for s in (32, 33, 65, 97, 129, 160, 161, 1024)] == [None, 3, 5, 7, 9, 9, 11, 11]
    x = _images(h=32, w=48)
    assert ms_ssim(x, x).isnan().all()


def test_dssim_loss_is_zero_for_identical_images_and_has_gradients():
    target = _images()
    assert dssim_loss(target, target).item() == pytest.approx(0, abs=1e-6)
    pred = _noisy(target, 0.1).requires_grad_()
    loss = dssim_loss(pred, target)
    assert loss.ndim == 0 and 0 < loss.item() < 1
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_image_metrics_are_batch_means():
    target = _images(b=3)
    pred = _noisy(target, 0.05)
    out = image_metrics(pred, target)
    assert set(out) == {"psnr", "ssim", "ms_ssim", "l1"} and all(isinstance(v, float) for v in out.values())
    assert out["psnr"] == pytest.approx(psnr(pred, target).mean().item(), rel=1e-6)
    assert out["ms_ssim"] == pytest.approx(ms_ssim(pred, target).mean().item(), rel=1e-6)
    with_lpips = image_metrics(pred, target, lpips=lambda a, b: torch.tensor([1.0, 2.0, 3.0]))
    assert with_lpips["lpips"] == 2.0


# --- LPIPS ------------------------------------------------------------------------------------

CHANNELS = (64, 192, 384, 256, 256)


def _torchvision_alexnet_features() -> nn.Sequential:
    """torchvision's ``alexnet().features``, layer for layer (convs at 0, 3, 6, 8, 10)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(3, 2),
    )


class _LpipsReference(nn.Module):
    """The lpips package's LPIPS(net="alex", version="0.1") module tree and forward, over given features."""

    SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))

    def __init__(self, features: nn.Sequential, seed: int):
        super().__init__()
        self.torchvision_features = [features]  # a list, so its parameters stay out of this state dict
        self.net = nn.Module()
        for n, (a, b) in enumerate(self.SLICES, start=1):
            block = nn.Sequential()
            for x in range(a, b):
                block.add_module(str(x), features[x])
            setattr(self.net, f"slice{n}", block)
        g = torch.Generator().manual_seed(seed)
        for i, c in enumerate(CHANNELS):
            head = nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, bias=False))
            head[1].weight.data = torch.rand(1, c, 1, 1, generator=g) * 0.1
            setattr(self, f"lin{i}", head)  # the package wraps this Sequential as `lin{i}.model`
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.eval()

    def lpips_state_dict(self) -> dict[str, torch.Tensor]:
        state = {k: v for k, v in self.state_dict().items() if k.startswith("net.")}
        state.update({f"lin{i}.model.1.weight": getattr(self, f"lin{i}")[1].weight for i in range(5)})
        state.update({"scaling_layer.shift": self.shift, "scaling_layer.scale": self.scale})
        return state

    def forward(self, in0, in1):  # (B, 3, H, W) in [-1, 1], as lpips.LPIPS.forward(normalize=False)
        total = 0
        h0, h1 = (in0 - self.shift) / self.scale, (in1 - self.shift) / self.scale
        for i in range(5):
            block = getattr(self.net, f"slice{i + 1}")
            h0, h1 = block(h0), block(h1)
            n0 = h0 / (h0.square().sum(1, keepdim=True).sqrt() + 1e-10)
            n1 = h1 / (h1.square().sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + getattr(self, f"lin{i}")((n0 - n1) ** 2).mean((2, 3), keepdim=True)
        return total.flatten()


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return _LpipsReference(_torchvision_alexnet_features(), seed=1)


@pytest.fixture
def weight_files(tmp_path, reference):
    """One lpips-layout file, and the torchvision backbone + alex.pth-style heads as two files."""
    lpips_state = reference.lpips_state_dict()
    alexnet = nn.Module()  # torchvision's AlexNet is `features` + `classifier`; the same tensors as the slices
    alexnet.features = reference.torchvision_features[0]
    tv_state = {**alexnet.state_dict(), "classifier.1.weight": torch.zeros(64, 9216)}
    assert {k for k in tv_state if k.startswith("features.")} == {f"features.{j}.{p}" for j in (0, 3, 6, 8, 10)
                                                                  for p in ("weight", "bias")}
    heads = {k: v for k, v in lpips_state.items() if k.startswith("lin")}
    paths = {"one": tmp_path / "lpips_alex.pth", "backbone": tmp_path / "alexnet.pth", "heads": tmp_path / "alex.pth"}
    torch.save(lpips_state, paths["one"])
    torch.save(tv_state, paths["backbone"])
    torch.save(heads, paths["heads"])
    return paths


def test_lpips_matches_the_reference_in_both_key_layouts(weight_files, reference):
    one = LPIPS.from_file(weight_files["one"])
    two = LPIPS.from_file(backbone=weight_files["backbone"], heads=weight_files["heads"])
    combined = {**torch.load(weight_files["backbone"]), **torch.load(weight_files["heads"])}
    torch.save(combined, weight_files["one"].with_name("combined.pt"))
    three = LPIPS.from_file(weight_files["one"].with_name("combined.pt"))
    x = _images(b=2, h=64, w=80)
    y = _noisy(x, 0.1)
    with torch.no_grad():
        want = reference(x.permute(0, 3, 1, 2) * 2 - 1, y.permute(0, 3, 1, 2) * 2 - 1)
        for model in (one, two, three):
            torch.testing.assert_close(model(x, y), want)


def test_lpips_properties(weight_files):
    model = load_lpips(str(weight_files["one"]))
    x = _images(b=3, h=64, w=64)
    y = _noisy(x, 0.1)
    with torch.no_grad():
        d = model.lpips(x, y)
        assert d.shape == (3,) and (d > 0).all()
        assert (model(x, x) == 0).all()
        torch.testing.assert_close(model(y, x), d)  # (a - b)^2 is symmetric
        torch.testing.assert_close(model(x[1:2], y[1:2]), d[1:2])  # each pair on its own
    assert (_noisy(x, 0.3) != x).any() and (model(x, _noisy(x, 0.3)) > d).all()
    pred = y.clone().requires_grad_()
    model(pred, x).sum().backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="at least 31x31"):
        model(x[:, :16, :16], x[:, :16, :16])


def test_load_lpips_without_a_path_is_none():
    assert load_lpips(None) is None and load_lpips("") is None


def test_lpips_file_errors_are_config_errors(tmp_path, weight_files):
    good = torch.load(weight_files["one"])

    def fails(state_or_bytes, match: str, **kwargs):
        path = tmp_path / "bad.pth"
        if isinstance(state_or_bytes, bytes):
            path.write_bytes(state_or_bytes)
        else:
            torch.save(state_or_bytes, path)
        with pytest.raises(ConfigError, match=match):
            LPIPS.from_file(path, **kwargs)

    with pytest.raises(ConfigError, match="does not exist"):
        LPIPS.from_file(tmp_path / "nowhere.pth")
    with pytest.raises(ConfigError, match="either one file"):
        LPIPS.from_file(backbone=weight_files["backbone"])
    data = weight_files["one"].read_bytes()
    fails(data[: len(data) // 2], "cannot be read as a torch state dict")  # truncated download
    fails(b"<html>404 Not Found</html>", "cannot be read")
    fails(torch.zeros(3), "holds a Tensor, not a state dict")
    fails({**good, "net.slice2.3.weight": torch.zeros(192, 64, 3, 3)}, r"'net.slice2.3.weight' has shape \(192, 64, 3, 3\)")
    fails({k: v for k, v in good.items() if k != "lin3.model.1.weight"}, "missing the linear head 'lin3")
    fails({k: v for k, v in good.items() if k != "net.slice5.10.bias"}, "missing 'net.slice5.10.bias'")
    fails({**good, "lin0.model.1.weight": -good["lin0.model.1.weight"]}, "negative weights")
    fails({**good, "net.slice1.0.bias": torch.full((64,), float("nan"))}, "not finite")
    resnet = {"conv1.weight": torch.zeros(64, 3, 7, 7), "bn1.weight": torch.ones(64), "fc.weight": torch.zeros(10, 512)}
    fails(resnet, "no AlexNet backbone.*found keys: conv1.weight")
    vgg = {f"features.{j}.weight": torch.zeros(64, 3, 3, 3) for j in (0, 2)}
    fails(vgg, r"'features.0.weight' has shape \(64, 3, 3, 3\).*AlexNet variant")
    fails(torch.load(weight_files["backbone"]), "missing the linear head 'lin0.*heads=")
