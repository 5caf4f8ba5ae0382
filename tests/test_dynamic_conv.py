"""DynamicConv3d (module 1): every fast path equals the naive per-sample loop; modes, temperature, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dymsta.models import DynamicConv3d, annealed_temperature

KERNELS = [(3, 1, 1), (3, 3, 3), (1, 3, 5), (1, 1, 1)]


def _conv(
    mode: str, kernel: tuple[int, int, int], *, impl: str = "bmm", bias: bool = True, seed: int = 0
) -> DynamicConv3d:
    """A float64 DynamicConv3d with a router that gives clearly non-uniform, per-sample weights."""
    torch.manual_seed(seed)
    conv = DynamicConv3d(
        in_channels=6,
        out_channels=5,
        kernel_size=kernel,
        mode=mode,
        num_kernels=3,
        temperature=1.5,
        bias=bias,
        impl=impl,
    ).double()
    with torch.no_grad():
        for p in conv.router.parameters():
            p.normal_(0.0, 1.0)
        if conv.bias is not None:
            conv.bias.normal_()
    return conv


@pytest.mark.parametrize(
    "mode,impl", [("mixture", "bmm"), ("mixture", "grouped"), ("mixture", "expand"), ("modulate", "bmm")]
)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("bias", [True, False])
def test_fast_paths_equal_per_sample_loop(mode: str, impl: str, kernel: tuple[int, int, int], bias: bool) -> None:
    conv = _conv(mode, kernel, impl=impl, bias=bias)
    x = torch.randn(3, 6, 5, 4, 3, dtype=torch.float64)
    attn = conv.routing(x)
    assert not torch.allclose(attn[0], attn[1]), "the test needs per-sample kernels that differ"
    fast, ref = conv(x), conv.forward_reference(x)
    assert fast.shape == (3, 5, 5, 4, 3)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)


def test_reference_is_an_explicit_per_sample_kernel() -> None:
    """Build sample b's kernel by hand (sum_k pi_bk W_k, bias likewise) and convolve: equals the module."""
    conv = _conv("mixture", (3, 3, 3))
    x = torch.randn(2, 6, 4, 5, 5, dtype=torch.float64)
    pi = torch.softmax(conv.router(x.mean(dim=(2, 3, 4))) / 1.5, dim=1)
    for b in range(2):
        kernel = sum(pi[b, k] * conv.weight[k] for k in range(3))
        bias = sum(pi[b, k] * conv.bias[k] for k in range(3))
        expected = F.conv3d(x[b : b + 1], kernel, bias, padding=1)
        torch.testing.assert_close(conv(x)[b : b + 1], expected, rtol=1e-10, atol=1e-10)


def test_modulate_cheap_form_equals_explicit_scaled_kernel() -> None:
    """The paper's K_dynamic = W_dynamic * K per output channel, convolved sample by sample."""
    conv = _conv("modulate", (3, 3, 3))
    x = torch.randn(3, 6, 4, 3, 3, dtype=torch.float64)
    gate = 2.0 * torch.sigmoid(conv.router(x.mean(dim=(2, 3, 4))))  # (B, Cout)
    for b in range(3):
        kernel = gate[b, :, None, None, None, None] * conv.weight
        expected = F.conv3d(x[b : b + 1], kernel, conv.bias, padding=1)
        torch.testing.assert_close(conv(x)[b : b + 1], expected, rtol=1e-10, atol=1e-10)


def test_modulate_starts_close_to_the_plain_convolution() -> None:
    conv = DynamicConv3d(in_channels=4, out_channels=3, kernel_size=3, mode="modulate").double()
    x = torch.randn(2, 4, 5, 3, 3, dtype=torch.float64)
    plain = F.conv3d(x, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(conv(x), plain, rtol=0.01, atol=0.01)  # gate 2*sigmoid(~0) ~ 1
    torch.nn.init.zeros_(conv.router[-1].weight)
    torch.testing.assert_close(conv(x), plain)  # exactly 1 with a zero router


def test_one_kernel_mixture_is_a_plain_convolution() -> None:
    conv = DynamicConv3d(in_channels=4, out_channels=3, kernel_size=(3, 1, 1), num_kernels=1).double()
    x = torch.randn(2, 4, 6, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(conv(x), F.conv3d(x, conv.weight[0], conv.bias[0], padding=(1, 0, 0)))


@pytest.mark.parametrize("shape", [(1, 8, 1, 1, 1), (2, 8, 16, 4, 4), (5, 8, 3, 7, 2)])
def test_output_shapes(shape: tuple[int, ...]) -> None:
    conv = DynamicConv3d(in_channels=8, out_channels=12, kernel_size=(3, 3, 3))
    y = conv(torch.randn(*shape))
    assert y.shape == (shape[0], 12, *shape[2:])


def test_temperature_controls_the_mixture() -> None:
    conv = _conv("mixture", (3, 1, 1))
    x = torch.randn(4, 6, 5, 2, 2, dtype=torch.float64)
    conv.set_temperature(1000.0)
    hot = conv.routing(x)
    conv.set_temperature(1.0)
    cold = conv.routing(x)
    torch.testing.assert_close(hot.sum(1), torch.ones(4, dtype=torch.float64))
    assert (hot - 1 / 3).abs().max() < 0.01  # near-uniform: every kernel trains early on
    assert (cold - 1 / 3).abs().max() > 0.05
    assert "temperature" in conv.state_dict()  # a saved model keeps its annealed temperature


def test_annealing_schedule() -> None:
    assert annealed_temperature(0, initial=30.0, anneal_epochs=10) == 30.0
    assert annealed_temperature(5, initial=30.0, anneal_epochs=10) == pytest.approx(15.5)
    assert annealed_temperature(10, initial=30.0, anneal_epochs=10) == 1.0
    assert annealed_temperature(99, initial=30.0, anneal_epochs=10) == 1.0
    assert annealed_temperature(0, initial=30.0, anneal_epochs=0) == 1.0


@pytest.mark.parametrize(
    "mode,impl", [("mixture", "bmm"), ("mixture", "grouped"), ("mixture", "expand"), ("modulate", "bmm")]
)
def test_every_parameter_gets_a_gradient(mode: str, impl: str) -> None:
    conv = DynamicConv3d(in_channels=6, out_channels=5, kernel_size=(3, 1, 1), mode=mode, impl=impl, temperature=2.0)
    x = torch.randn(3, 6, 5, 2, 2, requires_grad=True)
    conv(x).square().mean().backward()
    for name, p in conv.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("mode,impl", [("mixture", "bmm"), ("mixture", "grouped"), ("modulate", "bmm")])
def test_bf16_autocast_is_finite_and_close(mode: str, impl: str) -> None:
    torch.manual_seed(0)
    conv = DynamicConv3d(in_channels=32, out_channels=32, kernel_size=(3, 1, 1), mode=mode, impl=impl)
    x = torch.randn(4, 32, 8, 4, 4, requires_grad=True)
    ref = conv(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    y.float().square().mean().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in conv.parameters())
    assert (y.float() - ref).abs().max() < 0.05 * ref.abs().max()


@pytest.mark.parametrize(
    "kwargs,match", [({"mode": "sum"}, "mode"), ({"impl": "loop"}, "impl"), ({"kernel_size": (2, 1, 1)}, "odd")]
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DynamicConv3d(in_channels=4, out_channels=4, **kwargs)
