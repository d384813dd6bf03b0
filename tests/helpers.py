"""What several test files share."""
from types import SimpleNamespace


def worker_settings(**changes):
    """The settings train.Worker.load reads (search.Settings and retrain.Settings both have them): the
    digits search split, no teacher."""
    return SimpleNamespace(**{"dataset": "digits", "data_dir": None, "cache_dir": None, "split": "search",
                              "val_size": None, "no_kd": True, "teacher": None, "workers_per_gpu": 1,
                              "lessons": None, "lessons_key": None, **changes})
