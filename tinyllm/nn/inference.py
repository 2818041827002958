"""Running a model for inference: eval mode, no gradients, and every module's mode put back.

    with eval_mode(model):
        out = model(x)            # dropout off, no graph recorded

Generation, sentence embeddings and sampling all run a model this way. ``model.eval()`` alone
would leave the model in eval mode afterwards (and a model whose parts were in different modes,
say a frozen body in eval mode inside a training classifier, would not get them back).
"""

from __future__ import annotations

import contextlib

from tinyllm.autograd import no_grad

__all__ = ["eval_mode"]


@contextlib.contextmanager
def eval_mode(model):
    """Eval mode and ``no_grad`` inside the block; afterwards each module's own mode again."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with no_grad():
            yield model
    finally:
        for m, mode in modes:
            object.__setattr__(m, "training", mode)
