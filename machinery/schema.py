"""Every file autokd reads back, checked field by field against one schema per kind before it is used.

A log line, a best.json or a checkpoint that was cut, hand-edited or written by something else is one
line naming the file, the line, the field, a short excerpt of the value and the fix: never a KeyError
later, nor a wrong value carried on into best.json or counted by report.py.

    schema.check("best.json", value, "--theta runs/x/best.json")     # the value, or a UserError
    records, whole = schema.read_jsonl(path, "search record")         # files.read_jsonl, each line checked

Interpretation (θ): this package imports no stage, so a schema checks only that θ is a JSON object; its
keys, kinds and ranges are train.check_config's (generator.SPACE and kd_loss.SPACE, one table), which
the caller runs next with `what` naming the file. Other knowledge of a stage reaches check() as a
stricter field: check("best.json", best, where, dataset=text(*DATASETS)).
"""
import dataclasses
import math
from dataclasses import dataclass

import torch

from machinery import cli, files
from machinery.cli import UserError


# ----------------------------------------------------------------------------------------------------
# Field specs: what one field may hold

@dataclass(frozen=True)
class Spec:
    """test(value) accepts a value, `what` describes one in an error. An object's `fields` map names
    to their specs; `each` is the spec of every item of a list or every value of an object."""
    test: object
    what: str
    fields: dict = None
    each: "Spec" = None
    null: bool = False      # null (None) is allowed
    optional: bool = False  # the field may be absent


def _finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number(low=None, high=None, *, above=None, whole=False, null=False, optional=False):
    """A finite number (JSON's true and false are not numbers), an integer if `whole`, within
    [low, high] and greater than `above` where given."""
    def test(value):
        return (_finite(value) and (not whole or isinstance(value, int)) and (low is None or value >= low)
                and (high is None or value <= high) and (above is None or value > above))
    bounds = ([f"in [{low:g}, {high:g}]"] if low is not None and high is not None else
              [f">= {low:g}"] if low is not None else [f"<= {high:g}"] if high is not None else [])
    bounds += [f"> {above:g}"] if above is not None else []
    what = " ".join(["a whole number" if whole else "a number"] + bounds) + (" or null" if null else "")
    return Spec(test, what, null=null, optional=optional)


def text(*choices, null=False, optional=False):
    """A string, one of `choices` if any are given."""
    what = f"one of {', '.join(choices)}" if choices else "a string"
    return Spec(lambda v: isinstance(v, str) and (not choices or v in choices), what + (" or null" if null else ""),
                null=null, optional=optional)


def flag(optional=False):
    return Spec(lambda v: isinstance(v, bool), "true or false", optional=optional)


def obj(fields=None, each=None, *, null=False, optional=False):
    """A JSON object: its named `fields` (others are allowed: files carry provenance), or `each` value."""
    return Spec(lambda v: isinstance(v, dict), "a JSON object" + (" or null" if null else ""), fields, each,
                null, optional)


def array(each=None, *, optional=False):
    return Spec(lambda v: isinstance(v, list), "a JSON list", each=each, optional=optional)


def tensor(null=False):
    """A torch tensor (what a checkpoint holds)."""
    return Spec(lambda value: isinstance(value, torch.Tensor), "a tensor", null=null)


def optional(fields):
    """Every field of `fields` optional: present ones are checked, missing ones are the reader's to judge."""
    return {name: dataclasses.replace(spec, optional=True) for name, spec in fields.items()}


def problem(spec, value, path=""):
    """(field path, what is wrong) for the first part of `value` that `spec` refuses, or None."""
    if value is None:
        return None if spec.null else (path, f"must be {spec.what}, not null")
    if not spec.test(value):
        return path, f"must be {spec.what}, not {cli.excerpt(value)}"
    for name, sub in (spec.fields or {}).items():
        if name not in value:
            if not sub.optional:
                return _join(path, name), "is missing"
        elif found := problem(sub, value[name], _join(path, name)):
            return found
    if spec.each is not None:
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            if found := problem(spec.each, item, _join(path, key)):
                return found
    return None


def _join(path, key):
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else str(key)


# ----------------------------------------------------------------------------------------------------
# The files: one schema per kind

# bohb.py's log record (bohb.make_record): one line of results.jsonl or study.jsonl
RECORD = obj({
    "iteration": number(0, whole=True, null=True),  # null in a study (search.study_jobs)
    "bracket": number(0, whole=True, null=True),
    "rung": number(0, whole=True),
    "index": number(0, whole=True),
    "budget": number(above=0),
    "config": obj(each=number()),  # a point of bohb.Space: numbers only
    "origin": text(),
    "loss": number(null=True),     # null: the evaluation failed, and error says why
    "error": text(null=True),
    "info": obj(),
    "started": number(null=True),  # null: it never ran (its worker died first)
    "finished": number(),
})
# search.py's evaluations: the same, with search.objective's info (loss = 1 - accuracy)
SEARCH_RECORD = obj({
    **RECORD.fields, "loss": number(0, 1, null=True), "arch_seed": number(whole=True, optional=True),
    "info": obj(optional({"accuracy": number(0, 1), "arch_seed": number(whole=True), "params": number(0),
                          "wall_s": number(0), "images": number(0), "images_per_s": number(0, null=True)}))})
# search.resolve's settings: present ones checked; a missing one is check_resume's "other settings"
SEARCH_SETTINGS = obj(optional({
    "dataset": text(), "data_dir": text(null=True), "cache_dir": text(null=True), "no_kd": flag(),
    "teacher": text(null=True), "min_budget": number(above=0), "max_budget": number(above=0),
    "eta": number(2, whole=True), "seed": number(whole=True), "iterations": number(1, whole=True),
    "max_params": number(1, whole=True), "max_nodes": number(1, whole=True),
    "val_size": number(1, whole=True, null=True), "study": number(0, whole=True), "protocol": obj()}))
# search.Progress.update_best's incumbent with search.run's provenance; retrain.py needs config and dataset
BEST = obj({"config": obj(), "dataset": text(), **optional({
    "teacher": text(null=True), "no_kd": flag(), "settings": SEARCH_SETTINGS, "accuracy": number(0, 1),
    "budget": number(above=0), "search_dir": text(),
    "evaluations": array(obj({"budget": number(above=0), "loss": number(0, 1, null=True), "info": obj()}))})})
# workers.prepare's report on the teacher (search.py adds the teacher's path)
TEACHER_REPORT = obj({"accuracy": number(0, 1), "params": number(0), "macs": number(0), "memory_mb": number(0),
                      **optional({"split": text("val", "test"), "images": number(1, whole=True),
                                  "num_classes": number(1, whole=True), "lessons_s": number(0),
                                  "teacher": text(null=True)})})
# retrain.train_student's row: one line of a retraining's results.jsonl
STUDENT = obj({"index": number(0, whole=True), "seed": number(whole=True), "run": number(0, whole=True),
               "accuracy": number(0, 1), "params": number(0), "macs": number(0), "memory_mb": number(0),
               **optional({"wall_s": number(0), "epochs": number(1, whole=True), "checkpoint": text()})})
RETRAIN_SETTINGS = obj(optional({
    "dataset": text(), "data_dir": text(null=True), "config": obj(), "no_kd": flag(), "teacher": text(null=True),
    "epochs": number(1, whole=True), "seed": number(whole=True), "max_params": number(1, whole=True, null=True),
    "k": number(1, whole=True), "runs": number(1, whole=True), "protocol": obj()}))
SUMMARY = obj({"mean": number(0, 100), "std": number(0, null=True), "k": number(1, whole=True),
               "students": array(STUDENT), **optional({
                   "run_std": number(0, null=True), "runs": number(1, whole=True),
                   "teacher": obj(TEACHER_REPORT.fields, null=True), "config": obj(), "dataset": text(),
                   "no_kd": flag(), "epochs": number(1, whole=True), "settings": RETRAIN_SETTINGS})})
# train.checkpoint's top level; a resumed run also needs the optimiser, the clock and the RNG states
CHECKPOINT = obj({"model": obj(each=tensor()), "epoch": number(0, whole=True), "config": obj()})
RESUMABLE = obj({**CHECKPOINT.fields, "optimizer": obj(), "scaler": obj(null=True), "history": array(obj()),
                 "clock": obj({"wall_s": number(0), "train_s": number(0), "images": number(0)}),
                 "rng": obj({"torch": tensor(), "cuda": tensor(null=True), "data": tensor()})})
TEACHER = obj({"model": obj(each=tensor()), "epoch": number(0, whole=True, optional=True),
               "config": obj({"arch": text(), "dataset": text(), "num_classes": number(1, whole=True),
                              "arch_options": obj(optional=True)})})


@dataclass(frozen=True)
class Kind:
    what: str        # "<file> is not a <what>: ..."
    spec: Spec
    fix: str         # the default fix; "{line}" is the line number
    rules: tuple = ()  # value -> (field path, what is wrong) or None: what one field's spec cannot say
    error: type = UserError


def _failure_says_why(record):
    if record["loss"] is None and record["error"] is None:
        return "error", "must say why the evaluation failed (its loss is null), not null"


def _success_has_accuracy(record):
    if record["loss"] is not None and "accuracy" not in record["info"]:
        return "info.accuracy", "is missing (the evaluation has a loss)"


def line_fix(what):
    return f"repair or remove line {{line}} (a removed {what} is run again)"


SAVE_FIX = "give a file written by train.py --save"
KINDS = {
    "bohb record": Kind("BOHB log record", RECORD, line_fix("evaluation"), (_failure_says_why,)),
    "search record": Kind("search result", SEARCH_RECORD, line_fix("evaluation"),
                          (_failure_says_why, _success_has_accuracy)),
    "search.json": Kind("search.json from search.py", obj({"settings": SEARCH_SETTINGS}),
                        "it holds the settings of the folder's results: restore it, or give another --out"),
    "best.json": Kind("best.json from search.py", BEST,
                      "give a best.json written by search.py (run search.py on its folder again to rewrite it)"),
    "teacher.json": Kind("teacher report", TEACHER_REPORT, "delete it (the teacher is measured again before the "
                                                           "next student)"),
    "retrain.json": Kind("retrain.json from retrain.py", obj({"settings": RETRAIN_SETTINGS}),
                         "it holds the settings of the folder's students: restore it, or give another --out"),
    "retrain result": Kind("retrain result", STUDENT, line_fix("student")),
    "summary.json": Kind("retrain.py summary", SUMMARY, "run retrain.py on its folder again to rewrite it"),
    "θ": Kind("θ", obj({"config": obj(optional=True)}),
              'give θ as a JSON object {"top_nodes": ..., ...} or a best.json from search.py'),
    "checkpoint": Kind("train.py checkpoint", CHECKPOINT, SAVE_FIX, error=files.CheckpointError),
    "resumable checkpoint": Kind("train.py checkpoint", RESUMABLE, SAVE_FIX, error=files.CheckpointError),
    "teacher checkpoint": Kind("train.py checkpoint", TEACHER, "train a teacher with `python train.py --arch ... "
                                                               "--save ...`", error=files.CheckpointError),
}


# ----------------------------------------------------------------------------------------------------
# Checking

def check(kind, value, where, line=None, fix=None, **fields):
    """`value` if it is a valid `kind` (a key of KINDS), else a UserError in one line: `where` (a file,
    with its `line`), the field, a short excerpt of the value and the fix (the kind's, or `fix`).
    `fields` replaces top-level field specs with a caller's stricter ones (a stage's knowledge)."""
    k = KINDS[kind]
    spec = dataclasses.replace(k.spec, fields={**k.spec.fields, **fields}) if fields else k.spec
    found = problem(spec, value) or next(filter(None, (rule(value) for rule in k.rules)), None)
    if found is None:
        return value
    path, wrong = found
    at = f"{where} line {line}" if line is not None else str(where)
    subject = f"field {cli.clip(path)}" if path else "it"
    raise k.error(f"{at} is not a {k.what}: {subject} {wrong}; {(fix or k.fix).replace('{line}', str(line))}.")


def read_jsonl(path, kind, fix=None):
    """files.read_jsonl(path) with every line checked as `kind`: (records, whole)."""
    records, whole = files.read_jsonl(path)
    for line, record in enumerate(records, 1):  # read_jsonl keeps one record per line
        check(kind, record, path, line, fix)
    return records, whole


def read_json(text, kind, what=None, fix=None, **fields):
    """JSON (files.read_json) checked as `kind`. Given to a flag `what` (inline or a file), errors
    name the flag; else `text` is a file the stage wrote, named as it is."""
    value = files.read_json(str(text), what or kind)
    return check(kind, value, files.json_where(str(text), what) if what else text, fix=fix, **fields)
