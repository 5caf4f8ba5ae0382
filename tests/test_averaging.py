"""The head's weight average (train.ema): its arithmetic, the swap in and out, and what it leaves alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dymsta.config import ConfigError, load_config, recipe_path
from dymsta.engine.averaging import WeightEMA


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(2, 2)
        self.head = nn.Linear(2, 1)
        self.norm = nn.BatchNorm1d(1)
        self.input_norm = nn.ModuleDict({"rgb": nn.Linear(1, 1)})  # stands for fitted statistics: never averaged


def _set_head(model: Toy, value: float) -> None:
    with torch.no_grad():
        model.head.weight.fill_(value)
        model.head.bias.fill_(value)


def test_average_is_the_bias_corrected_weighted_mean() -> None:
    model = Toy()
    _set_head(model, 0.0)
    ema = WeightEMA(model, decay=0.5)
    values = [1.0, 2.0, 4.0, 8.0]
    for value in values:
        _set_head(model, value)
        ema.update()
    weights = [0.5 ** (len(values) - 1 - i) for i in range(len(values))]  # the newest weighs most
    expected = sum(w * v for w, v in zip(weights, values, strict=True)) / sum(weights)
    average = ema.average()
    assert average["head.weight"].flatten().tolist() == pytest.approx([expected, expected])
    assert average["head.bias"].item() == pytest.approx(expected)
    assert ema.steps == 4


def test_applied_swaps_the_average_in_and_restores_the_weights() -> None:
    model = Toy()
    _set_head(model, 0.0)
    ema = WeightEMA(model, decay=0.9)
    ema.update()  # the average holds the zeros
    _set_head(model, 3.0)
    backbone = model.backbone.weight.detach().clone()
    with ema.applied() as averaged:
        assert averaged is model
        assert torch.all(model.head.weight == 0.0)
    assert torch.all(model.head.weight == 3.0)
    assert torch.equal(model.backbone.weight, backbone)
    assert not any(name.startswith(("backbone.", "input_norm.")) for name in ema.shadow)
    assert "norm.running_mean" in ema.shadow  # statistics are averaged with the weights
    assert "norm.num_batches_tracked" not in ema.shadow  # integer counters are not


def test_state_tensors_round_trip_and_refuse_a_state_without_them() -> None:
    model = Toy()
    ema = WeightEMA(model, decay=0.9)
    _set_head(model, 2.0)
    ema.update()
    restored = WeightEMA(Toy(), decay=0.9)
    restored.load_state_tensors(ema.state_tensors(), steps=ema.steps)
    for name, value in ema.shadow.items():
        assert torch.equal(restored.shadow[name], value), name
    assert restored.steps == 1
    with pytest.raises(KeyError, match="EMA weights"):
        restored.load_state_tensors({}, steps=0)


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_config_refuses_a_decay_outside_zero_one(decay: float) -> None:
    with pytest.raises(ConfigError, match="train.ema"):
        load_config(recipe_path("demo"), [f"train.ema={decay}"])
