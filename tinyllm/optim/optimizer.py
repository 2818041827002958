"""``Optimizer``: the base class that holds parameter groups and per-parameter state."""

from __future__ import annotations

import copy

from tinyllm import backend
from tinyllm.tensor import Tensor


class Optimizer:
    """Holds ``param_groups`` (each a dict with ``params`` and hyper-parameters) and ``state``.

    ``params`` is an iterable of parameters, or of dicts ``{"params": [...], "weight_decay": 0.0}``
    so that, for example, biases and LayerNorm weights can skip weight decay.
    """

    def __init__(self, params, defaults: dict):
        self.defaults = defaults
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        seen = set()
        for g in groups:
            group = {**defaults, **g, "params": list(g["params"])}
            for p in group["params"]:
                if not isinstance(p, Tensor) or not p.requires_grad:
                    raise TypeError(f"{type(self).__name__} can only optimise tensors that require "
                                    f"grad, got {type(p).__name__}")
                if id(p) in seen:
                    raise ValueError("a parameter appears in more than one parameter group")
                seen.add(id(p))
            self.param_groups.append(group)
        self.state: dict = {}  # id(param) -> dict of arrays and counters

    def zero_grad(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def step(self) -> None:
        raise NotImplementedError

    def _params_with_grad(self, group):
        for p in group["params"]:
            if p.grad is not None:
                yield p, self.state.setdefault(id(p), {})

    # ------------------------------------------------------------------ state
    def _index(self):
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self) -> dict:
        """``{"state": {i: {name: array or number}}, "param_groups": [...]}`` with host arrays;
        parameters are numbered in group order, as PyTorch does."""
        index = self._index()
        state = {}
        for i, p in enumerate(index):
            s = self.state.get(id(p))
            if s:
                state[i] = {k: (backend.to_device(v, "cpu").copy() if hasattr(v, "shape") else v)
                            for k, v in s.items()}
        groups, start = [], 0
        for g in self.param_groups:
            n = len(g["params"])
            groups.append({**{k: v for k, v in g.items() if k != "params"},
                           "params": list(range(start, start + n))})
            start += n
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        index = self._index()
        groups = state_dict["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("optimizer state does not match: the parameter groups have different "
                             "sizes (was it saved for another model?)")
        new_state = {}
        for i, s in state_dict["state"].items():
            p = index[int(i)]
            entry = {}
            for k, v in s.items():
                if hasattr(v, "shape") and v.shape != ():
                    if tuple(v.shape) != tuple(p.shape):
                        raise ValueError(f"optimizer state {k!r} of parameter {i} has shape "
                                         f"{tuple(v.shape)}, the parameter has {tuple(p.shape)}")
                    v = v.data if isinstance(v, Tensor) else v  # host or device arrays
                    v = backend.as_array(v, dtype=p.dtype, device=p.device).copy()
                entry[k] = v
            new_state[id(p)] = entry
        for g, saved in zip(self.param_groups, groups):
            for k, v in saved.items():
                if k != "params":
                    g[k] = copy.deepcopy(v)
        self.state = new_state


def decay_groups(params, weight_decay: float) -> list[dict]:
    """Two parameter groups, nanoGPT's rule: tensors with 2+ dimensions (matrices and embedding
    tables) are decayed, biases and LayerNorm weights are not. Frozen parameters are left out."""
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return [{"params": g, "weight_decay": wd}
            for g, wd in ((decay, weight_decay), (no_decay, 0.0)) if g]
