"""Hugging Face model directories: ``from_pretrained`` and ``save_pretrained`` for every model.

A Hugging Face directory holds ``config.json`` and ``model.safetensors``. Each architecture has
its own module that reads and writes that format (``hf_gpt2``, ``hf_bert``); a model class names
its pair of functions in ``hf_format`` and inherits the two methods from ``PretrainedMixin``:

    class GPT(PretrainedMixin, GenerationMixin, Module):
        hf_format = ("tinyllm.models.hf_gpt2", "load_gpt2", "save_gpt2")

    model = GPT.from_pretrained("gpt2/")        # -> load_gpt2(GPT, "gpt2/")
    model.save_pretrained("out/")               # -> save_gpt2(model, "out/")

The format module is imported on first use: it imports the model's module itself.
"""

from __future__ import annotations

import importlib

__all__ = ["PretrainedMixin"]


class PretrainedMixin:
    """``from_pretrained(directory, **options)`` and ``save_pretrained(directory)`` through the
    functions named by the class attribute ``hf_format = (module, load, save)``, where
    ``load(cls, directory, **options)`` returns a model of class ``cls`` and
    ``save(model, directory)`` writes one."""

    hf_format: tuple[str, str, str] = ()

    @classmethod
    def _hf_function(cls, which: int):
        if not cls.hf_format:
            raise NotImplementedError(f"{cls.__name__} has no Hugging Face format (hf_format)")
        module, *names = cls.hf_format
        return getattr(importlib.import_module(module), names[which])

    @classmethod
    def from_pretrained(cls, directory, **options):
        """A model of this class with the weights of a Hugging Face directory
        (``config.json`` + ``model.safetensors``); ``options`` go to the format's loader
        (GPT: ``dtype``; BERT: ``strict``)."""
        return cls._hf_function(0)(cls, directory, **options)

    def save_pretrained(self, directory) -> None:
        """Write ``config.json`` and ``model.safetensors`` with Hugging Face's names, which
        ``transformers`` and ``from_pretrained`` read back."""
        type(self)._hf_function(1)(self, directory)
