"""Checkpoints: model weights (safetensors, config inside) and the training state (also safetensors).

Files in ``RUN_DIR/checkpoints/``:

* ``best.safetensors``, ``last.safetensors``: model weights with the model config, class names and metrics in the
  safetensors metadata; what ``dymsta eval/predict/export`` load (via :func:`dymsta.models.load_model`).
* ``state.safetensors``: everything ``--resume`` needs in ONE file, so it can never be half-updated: model weights,
  optimiser tensors (``optim.*``) and, as JSON in the metadata, optimiser hyper-parameters, the LR schedule, epoch,
  best metric, RNG states, the resolved run config and the class names.

Every file is written to a temporary name and renamed (atomic), and nothing is ever unpickled on load.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from dymsta.engine.averaging import WeightEMA
from dymsta.utils import atomic_path

__all__ = ["CheckpointError", "save_training_state", "load_training_state", "rng_state", "set_rng_state"]


class CheckpointError(RuntimeError):
    """A checkpoint file is missing or not one dymsta wrote."""


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as JSON-able values."""
    np_state = np.random.get_state()
    return {
        "python": _to_jsonable(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state().tolist(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_to_tuple(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def _to_jsonable(x: Any) -> Any:
    return [_to_jsonable(v) for v in x] if isinstance(x, tuple | list) else x


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list) else x


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors and a JSON-able remainder."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, slots in state["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"scalars": scalars, "param_groups": state["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, slots in rest["scalars"].items():
        state.setdefault(int(pid), {}).update(slots)
    return {"state": state, "param_groups": rest["param_groups"]}


def save_training_state(
    path: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    info: dict[str, Any],
    ema: WeightEMA | None = None,
) -> None:
    """Write the whole resumable state to one safetensors file atomically.

    Args:
        path: target file (``.../state.safetensors``).
        model: the bare model (not the DDP wrapper).
        optimizer: its optimiser.
        info: JSON-able facts: ``epoch`` (last finished, 0-based), ``best``, ``schedule``, ``config``, ``classes``...
        ema: the run's weight average (``train.ema``), saved beside the weights (``ema.*``, its step count in info).
    """
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_tensors, opt_rest = _flatten_optimizer(optimizer.state_dict())
    tensors.update(opt_tensors)
    if ema is not None:
        tensors.update(ema.state_tensors())
        info = {**info, "ema_steps": ema.steps}
    meta = {
        "format": "dymsta-train-state-1",
        "info": json.dumps(info),
        "optim": json.dumps(opt_rest),
        "rng": json.dumps(rng_state()),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_training_state(
    path: str | Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    ema: WeightEMA | None = None,
) -> dict[str, Any]:
    """Restore model (and optimiser, weight average, RNG) from :func:`save_training_state`; returns its ``info``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no training state at {path} (nothing to resume)")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != "dymsta-train-state-1":
        raise CheckpointError(f"{path} is not a dymsta training state")
    tensors = load_file(str(path))
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    if optimizer is not None:
        optimizer.load_state_dict(_unflatten_optimizer(tensors, json.loads(meta["optim"])))
    info = json.loads(meta["info"])
    if ema is not None:
        ema.load_state_tensors(tensors, info.get("ema_steps", 0))
    set_rng_state(json.loads(meta["rng"]))
    return info
