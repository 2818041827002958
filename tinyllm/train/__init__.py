"""Training: the config, the presets, one builder per objective, the loop and its run folder.

    from tinyllm.train import TrainConfig, preset_config, train
    result = train(preset_config("baby-shakespeare"), overrides={"max_iters": 500})

The command line (``tinyllm train``) is a thin layer over ``train``. Names load lazily, so
``import tinyllm.train.seq2seq`` stays light.
"""

_NAMES = {
    "TrainConfig": "config", "ConfigError": "config",
    "PRESETS": "presets", "preset_config": "presets", "preset_names": "presets",
    "build_task": "tasks",
    "train": "trainer", "TrainResult": "trainer", "TrainingDiverged": "trainer",
    "TrainingInterrupted": "trainer", "load_run": "trainer", "estimate_loss": "trainer",
    "CheckpointError": "checkpoint", "RunFolderError": "checkpoint",
    "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint", "Task": "task",
}

__all__ = sorted(_NAMES)


def __getattr__(name):
    if name in _NAMES:
        import importlib

        return getattr(importlib.import_module(f"tinyllm.train.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'tinyllm.train' has no attribute {name!r}")
