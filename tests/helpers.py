"""What several test files share."""
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn as nn

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
class Tiny(nn.Module):
    """A small CNN with the hooks train.py looks for: dropout (global RNG), a drop-path attribute,
    and optionally an auxiliary head returning (logits, aux) in training mode, like the DARTS teacher."""

    def __init__(self, num_classes=10, auxiliary=False, drop_path_prob=None):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.2))
        self.head = nn.Linear(32, num_classes)
        self.aux = nn.Linear(32, num_classes) if auxiliary else None
        if drop_path_prob is not None:
            self.drop_path_prob = drop_path_prob

    def forward(self, x):
        h = self.body(x)                                                # (B, 32)
        if self.training and getattr(self, "drop_path_prob", 0) > 0:
            keep = (torch.rand(h.shape[0], 1) >= self.drop_path_prob).float()
            h = h * keep / (1 - self.drop_path_prob)
        logits = self.head(h)
        return (logits, self.aux(h)) if self.aux is not None and self.training else logits


def model(seed=0, **kw):
    torch.manual_seed(seed)
    return Tiny(**kw)
