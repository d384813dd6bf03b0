"""What several test files share."""
from pathlib import Path
from types import SimpleNamespace

DOCS = Path(__file__).resolve().parent.parent / "docs"


def worker_settings(**changes):
    """The settings train.Worker.load reads (search.Settings and retrain.Settings both have them): the
    digits search split, no teacher."""
    return SimpleNamespace(**{"dataset": "digits", "data_dir": None, "cache_dir": None, "split": "search",
                              "val_size": None, "no_kd": True, "teacher": None, "workers_per_gpu": 1,
                              "lessons": None, "lessons_key": None, **changes})


def documented_block(page, name):
    """The fenced code block right after the line `<!-- tested: name -->` in docs/<page>, as text: the
    commands a test runs are read from the one page that shows them to the reader."""
    lines = (DOCS / page).read_text().splitlines()
    start = lines.index(f"<!-- tested: {name} -->") + 1
    assert lines[start].startswith("```"), f"docs/{page}: no code block right after the {name} marker"
    end = lines.index("```", start + 1)
    return "\n".join(lines[start + 1:end]) + "\n"
