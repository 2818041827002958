"""``tinyllm.models`` exports every public model class of its modules."""

import importlib
import inspect
import pkgutil

import tinyllm.models as models


def test_every_public_class_is_exported():
    missing = []
    for info in pkgutil.iter_modules(models.__path__):
        mod = importlib.import_module(f"tinyllm.models.{info.name}")
        for name, obj in vars(mod).items():
            if (inspect.isclass(obj) and obj.__module__ == mod.__name__
                    and not name.startswith("_") and not issubclass(obj, Exception)):
                if getattr(models, name, None) is not obj:
                    missing.append(f"tinyllm.models.{info.name}.{name}")
    assert not missing, "not exported from tinyllm.models: " + ", ".join(missing)


def test_the_model_classes_users_expect():
    for name in ("GPT", "GPTConfig", "BertModel", "BertConfig", "BertForPreTraining",
                 "BertForMaskedLM", "Transformer", "TransformerConfig", "SequenceClassifier",
                 "BertForSequenceClassification", "GPTForSequenceClassification", "BigramLM",
                 "MLPLM", "Llama", "LlamaConfig", "GenerationMixin", "PretrainedMixin"):
        assert inspect.isclass(getattr(models, name, None)), name
