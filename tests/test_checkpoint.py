"""Training-state checkpoints: exact restore, no pickle, atomic writes."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from dymsta.engine.checkpoint import CheckpointError, load_training_state, save_training_state
from dymsta.utils import atomic_path


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def _steps(net, opt, n: int) -> None:
    for _ in range(n):
        x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


@pytest.mark.parametrize("opt_name", ["adamw", "sgd"])
def test_restore_continues_exactly(tmp_path: Path, opt_name: str) -> None:
    def make(net):
        if opt_name == "sgd":
            return torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        return torch.optim.AdamW(net.parameters(), lr=1e-2)

    net = _net()
    opt = make(net)
    _steps(net, opt, 3)
    save_training_state(tmp_path / "state.safetensors", model=net, optimizer=opt, info={"epoch": 2, "best": 0.5})
    _steps(net, opt, 2)  # the uninterrupted continuation
    expected = {k: v.clone() for k, v in net.state_dict().items()}

    net2 = _net()
    opt2 = make(net2)
    random.random(), np.random.rand(), torch.rand(1)  # move every RNG on: the restore must bring them back
    info = load_training_state(tmp_path / "state.safetensors", model=net2, optimizer=opt2)
    assert info == {"epoch": 2, "best": 0.5}
    _steps(net2, opt2, 2)  # RNG restored too: same random batches
    for k, v in net2.state_dict().items():
        assert torch.equal(v, expected[k]), k


def test_state_file_is_not_a_pickle(tmp_path: Path) -> None:
    net = _net()
    opt = torch.optim.AdamW(net.parameters())
    save_training_state(tmp_path / "s.safetensors", model=net, optimizer=opt, info={"epoch": 0})
    head = (tmp_path / "s.safetensors").read_bytes()[:16]
    assert not head.startswith(b"\x80")  # pickle protocol marker
    not_ours = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(not_ours))
    with pytest.raises(CheckpointError, match="not a dymsta training state"):
        load_training_state(not_ours, model=net)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        load_training_state(tmp_path / "missing.safetensors", model=net)


def test_atomic_write_keeps_the_old_file_on_a_crash(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half-writ")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temp file left behind
