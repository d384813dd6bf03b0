"""machinery/schema.py: every file kind the project reads back, written as its writer writes it, passes;
each with a field missing, of the wrong type, out of range or enormous is refused in one short line
naming the file, the line, the field and the fix. CPU only, under a second."""
import copy
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from machinery import cli, files  # noqa: E402
from machinery import schema  # noqa: E402

THETA = {"top_nodes": 3, "top_k": 2, "top_p": 0.5, "mid_nodes": 3, "mid_p": 0.5, "bottom_nodes": 3, "bottom_k": 2,
         "bottom_p": 0.5, "tau": 4.0, "alpha": 0.5}
JOB = {"iteration": 0, "bracket": 1, "rung": 1, "index": 2, "budget": 2.0, "config": THETA, "origin": "promoted"}
RECORD = {**JOB, "loss": 0.25, "error": None, "info": {"accuracy": 0.75, "arch_seed": 7, "params": 90_000,
                                                        "wall_s": 3.5, "images": 2194, "images_per_s": 627.0},
          "started": 1764098000.1, "finished": 1764098003.6}
SETTINGS = {"dataset": "digits", "data_dir": None, "no_kd": False, "teacher": "/runs/x/teacher.pt", "min_budget": 1,
            "max_budget": 4, "eta": 2, "seed": 0, "iterations": 1, "max_params": 100_000, "max_nodes": 5,
            "val_size": None, "study": 10, "protocol": {"epochs": 600, "lr": 0.075}}
STUDENT = {"index": 0, "seed": 0, "run": 0, "accuracy": 0.93, "wall_s": 40.0, "epochs": 15, "checkpoint": "s.pt",
           "params": 95_000, "macs": 2_100_000, "memory_mb": 0.4}
TEACHER_ROW = {"accuracy": 0.97, "split": "val", "images": 700, "num_classes": 10, "lessons_s": 2.0,
               "params": 200_000, "macs": 5_000_000, "memory_mb": 1.2, "teacher": "/runs/x/teacher.pt"}
WEIGHTS = {"conv.weight": torch.zeros(2, 3), "bn.num_batches_tracked": torch.tensor(3)}
GOOD = {  # each kind as its writer writes it (see schema.py's comments for which writer)
    "bohb record": {**RECORD, "info": {}, "loss": 3.2},
    "search record": RECORD,
    "search.json": {"dataset": "digits", "teacher": None, "no_kd": True, "settings": SETTINGS, "versions": {}},
    "best.json": {"config": THETA, "accuracy": 0.75, "budget": 4.0, "dataset": "digits", "teacher": None,
                  "no_kd": False, "search_dir": "/runs/x", "settings": SETTINGS, "versions": {},
                  "evaluations": [{k: RECORD[k] for k in ("budget", "loss", "info", "iteration", "bracket", "rung")}]},
    "teacher.json": TEACHER_ROW,
    "retrain.json": {"settings": {"dataset": "digits", "config": THETA, "no_kd": True, "teacher": None, "epochs": 15,
                                  "seed": 0, "max_params": None, "k": 4, "runs": 1, "protocol": {}}, "best": "b.json"},
    "retrain result": STUDENT,
    "summary.json": {"mean": 93.0, "std": None, "run_std": None, "k": 1, "runs": 1, "students": [STUDENT],
                     "teacher": TEACHER_ROW, "config": THETA, "dataset": "digits", "no_kd": False, "epochs": 15},
    "θ": THETA,
    "checkpoint": {"model": WEIGHTS, "epoch": 3, "config": {"arch": "nago"}},
    "resumable checkpoint": {"model": WEIGHTS, "epoch": 3, "config": {}, "optimizer": {"state": {}},
                             "scaler": None, "history": [{"epoch": 1}],
                             "clock": {"wall_s": 1.0, "train_s": 0.9, "images": 100},
                             "rng": {"torch": torch.zeros(8, dtype=torch.uint8), "cuda": None,
                                     "data": torch.zeros(8, dtype=torch.uint8)}},
    "teacher checkpoint": {"model": WEIGHTS, "epoch": 20, "config": {"arch": "darts", "dataset": "digits",
                                                                     "num_classes": 10, "arch_options": {}}},
}
HUGE = "x" * 10_000_000  # a 10 MB value: the error quotes 60 characters of it
DELETE = object()

# (kind, the field changed, its new value or DELETE, a fragment of the error)
BAD = [
    ("bohb record", (), [], "it must be a JSON object, not []"),
    ("bohb record", ("index",), DELETE, "field index is missing"),
    ("bohb record", ("loss",), "abc", 'field loss must be a number or null, not "abc"'),
    ("bohb record", ("loss",), float("nan"), "field loss must be a number or null, not NaN"),
    ("bohb record", ("rung",), -1, "field rung must be a whole number >= 0"),
    ("bohb record", ("budget",), 0, "field budget must be a number > 0"),
    ("bohb record", ("config", "top_p"), True, "field config.top_p must be a number, not true"),
    ("bohb record", ("error",), None, "field error must say why the evaluation failed"),  # with loss null, below
    ("bohb record", ("origin",), 5, "field origin must be a string, not 5"),
    ("bohb record", ("started",), HUGE, 'field started must be a number or null, not "xxx'),
    ("search record", ("info", "accuracy"), "0.9", 'field info.accuracy must be a number in [0, 1], not "0.9"'),
    ("search record", ("info", "accuracy"), 1.5, "field info.accuracy must be a number in [0, 1], not 1.5"),
    ("search record", ("info", "accuracy"), DELETE, "field info.accuracy is missing"),
    ("search record", ("info",), [HUGE], "field info must be a JSON object, not"),
    ("search.json", (), [], "it must be a JSON object, not []"),
    ("search.json", ("settings",), DELETE, "field settings is missing"),
    ("search.json", ("settings", "seed"), "0", 'field settings.seed must be a whole number, not "0"'),
    ("search.json", ("settings", "eta"), 1, "field settings.eta must be a whole number >= 2, not 1"),
    ("best.json", ("teacher",), 5, "field teacher must be a string or null, not 5"),
    ("best.json", ("settings",), [], "field settings must be a JSON object, not []"),
    ("best.json", ("config",), DELETE, "field config is missing"),
    ("best.json", ("dataset",), HUGE, "field dataset must be one of digits, cifar10"),  # given the data sets
    ("best.json", ("evaluations", 0, "loss"), 2.0, "field evaluations[0].loss must be a number in [0, 1]"),
    ("teacher.json", ("accuracy",), -0.1, "field accuracy must be a number in [0, 1], not -0.1"),
    ("teacher.json", ("params",), DELETE, "field params is missing"),
    ("teacher.json", ("split",), "train", "field split must be one of val, test"),
    ("retrain.json", ("settings",), "abc", "field settings must be a JSON object"),
    ("retrain.json", ("settings", "k"), 0, "field settings.k must be a whole number >= 1, not 0"),
    ("retrain result", ("seed",), DELETE, "field seed is missing"),
    ("retrain result", ("accuracy",), "93 %", 'field accuracy must be a number in [0, 1], not "93 %"'),
    ("retrain result", ("run",), 0.5, "field run must be a whole number >= 0, not 0.5"),
    ("summary.json", ("students", 0, "memory_mb"), None, "field students[0].memory_mb must be a number >= 0, not null"),
    ("summary.json", ("mean",), 930.0, "field mean must be a number in [0, 100], not 930.0"),
    ("summary.json", ("k",), DELETE, "field k is missing"),
    ("θ", (), [0.5] * 2_000_000, "it must be a JSON object, not [0.5, 0.5"),
    ("θ", ("config",), [], "field config must be a JSON object, not []"),
    ("checkpoint", ("epoch",), DELETE, "field epoch is missing"),
    ("checkpoint", ("model", "conv.weight"), [1.0], "field model.conv.weight must be a tensor, not [1.0]"),
    ("resumable checkpoint", ("rng",), DELETE, "field rng is missing"),
    ("resumable checkpoint", ("clock", "images"), "100", 'field clock.images must be a number >= 0, not "100"'),
    ("teacher checkpoint", ("config", "num_classes"), 0, "field config.num_classes must be a whole number >= 1"),
    ("teacher checkpoint", ("config", "arch"), DELETE, "field config.arch is missing"),
]
DATASETS = ("digits", "cifar10", "cifar100")


def changed(value, path, new):
    """A deep copy of value with the field at `path` set to new (or deleted)."""
    if not path:
        return new
    value = copy.deepcopy(value)
    *parents, last = path
    inner = value
    for key in parents:
        inner = inner[key]
    if new is DELETE:
        del inner[last]
    else:
        inner[last] = new
    return value


def extra(kind):
    return {"dataset": schema.text(*DATASETS)} if kind == "best.json" else {}


@pytest.mark.parametrize("kind", GOOD)
def test_every_kind_as_written_passes(kind):
    assert schema.check(kind, GOOD[kind], "f.json", **extra(kind)) is GOOD[kind]


@pytest.mark.parametrize("kind,path,new,fragment", BAD, ids=[f"{k} {'.'.join(map(str, p))}" for k, p, _, _ in BAD])
def test_a_bad_field_is_one_short_line_naming_file_line_field_and_fix(kind, path, new, fragment):
    value = changed(GOOD[kind], path, new)
    if path == ("error",):
        value["loss"] = None  # a failure (loss null) must say why
    where = "runs/x/f.jsonl"
    with pytest.raises(cli.UserError) as caught:
        schema.check(kind, value, where, line=7, **extra(kind))
    message = str(caught.value)
    assert message.startswith(f"{where} line 7 is not a {schema.KINDS[kind].what}: ")
    assert fragment in message, message
    assert message.endswith(schema.KINDS[kind].fix.replace("{line}", "7") + ".")  # the fix, with the line's number
    assert "\n" not in message and len(message) < 400  # a 10 MB value gives a line, not 10 MB


def test_checkpoints_are_refused_as_checkpoint_errors():
    with pytest.raises(files.CheckpointError, match="f.pt is not a train.py checkpoint: field epoch is missing"):
        schema.check("checkpoint", {"model": {}, "config": {}}, "f.pt")


def test_a_caller_may_name_its_own_fix():
    with pytest.raises(cli.UserError, match="field accuracy is missing; delete it: search.py writes it again"):
        schema.check("best.json", {"config": THETA, "dataset": "digits"}, "best.json",
                     fix="delete it: search.py writes it again", accuracy=schema.number(0, 1))


def test_read_jsonl_names_the_line_of_a_bad_record(tmp_path):
    log = tmp_path / "results.jsonl"
    lines = [RECORD, {}, RECORD]
    log.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(cli.UserError, match=r"results.jsonl line 2 is not a search result: field iteration "
                                               r"is missing; repair or remove line 2 \(a removed evaluation is run"):
        schema.read_jsonl(log, "search record")
    log.write_text(json.dumps(RECORD) + "\n" + json.dumps(RECORD)[:20])  # a torn last line is read_jsonl's: dropped
    records, whole = schema.read_jsonl(log, "search record")
    assert records == [RECORD] and whole == len(json.dumps(RECORD)) + 1


def test_read_json_names_the_flag_and_quotes_little_of_a_huge_file(tmp_path):
    big = tmp_path / "best.json"
    big.write_text(json.dumps({"config": THETA, "dataset": HUGE}))
    with pytest.raises(cli.UserError) as caught:
        schema.read_json(big, "best.json", "--theta", dataset=schema.text(*DATASETS))
    message = str(caught.value)
    assert message.startswith(f"--theta file {big} is not a best.json from search.py: field dataset must be one "
                              f"of digits, cifar10, cifar100, not \"xxx")
    assert len(message) < 400
    big.write_text("[" + "1, " * 3_000_000)  # 9 MB of invalid JSON
    with pytest.raises(cli.UserError, match="is not valid JSON") as caught:
        schema.read_json(big, "θ", "--theta")
    assert len(str(caught.value)) < 400


@pytest.mark.parametrize("value", [HUGE, [HUGE], {f"k{i}": 1 for i in range(100_000)}, {"a": {"b": [HUGE]}}])
def test_excerpt_is_short_whatever_the_value(value):
    assert len(cli.excerpt(value)) <= 60


def test_check_config_quotes_a_short_excerpt():
    """θ's keys and ranges are train.check_config's (schema.py's Interpretation); its errors are short too."""
    space = {"top_p": (float, 0.1, 1.0)}
    for config in ({"top_p": [0.5] * 1_000_000}, {"top_p": 0.5, **{f"k{i}": 1 for i in range(100_000)}}):
        with pytest.raises(cli.UserError) as caught:
            cli.check_config(config, space)
        assert len(str(caught.value)) < 300
