"""train.py on the CPU: exact resume, the schedule, precision, scores and the failure modes of fit and
its command line."""
import dataclasses
import math

import pytest
import torch
import torch.nn as nn

from machinery import files
import data as D
import train as T
from helpers import Tiny, model, worker_settings


pytestmark = pytest.mark.usefixtures("one_thread")


def quiet(*_):
    pass


# ---------------------------------------------------------------------------------------------
# The training loop

def test_resume_gives_the_same_weights_as_straight(digits, tmp_path):
    """2 epochs, stop, resume for 2 more == 4 epochs straight, bitwise (KD, aux head, drop path)."""
    teacher = model(seed=9)
    kd = dict(teacher=teacher, tau=3.0, alpha=0.5)
    run = T.RunOptions(seed=3, log=quiet)
    four = T.Protocol(epochs=4, cutout=4)
    straight = model(auxiliary=True, drop_path_prob=0.3)
    r_straight = T.fit(straight, digits, four, **kd, options=run)
    ckpt = tmp_path / "run.pt"
    first = model(auxiliary=True, drop_path_prob=0.3)
    T.fit(first, digits, four, **kd, options=dataclasses.replace(run, save=ckpt, stop_after=2))
    assert T.load_checkpoint(ckpt)["epoch"] == 2
    torch.manual_seed(12345)  # a different global RNG state: the checkpoint must restore it
    resumed = model(seed=5, auxiliary=True, drop_path_prob=0.3)  # other initial weights too
    r_resumed = T.fit(resumed, digits, four, **kd, options=dataclasses.replace(run, save=ckpt, resume=True))
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert r_resumed["epochs"] == 4 and r_resumed["accuracy"] == r_straight["accuracy"]
    state = T.load_checkpoint(ckpt)
    assert state["epoch"] == 4 and state["config"]["tau"] == 3.0 and state["versions"]["torch"]
    with pytest.raises(files.CheckpointError, match="alpha 0.5 there, 0.7 now"):
        T.fit(model(auxiliary=True, drop_path_prob=0.3), digits, four, **{**kd, "alpha": 0.7},
              options=dataclasses.replace(run, save=ckpt, resume=True))
    with pytest.raises(ValueError, match="--resume"):
        T.fit(model(), digits, four, options=dataclasses.replace(run, save=ckpt))


def test_cosine_schedule_and_drop_path_ramp(digits):
    net = model(drop_path_prob=0.2)
    seen = []
    forward = net.forward
    net.forward = lambda x: (seen.append(net.drop_path_prob), forward(x))[1]
    result = T.fit(net, digits, T.Protocol(epochs=4, batch_size=48), options=T.RunOptions(log=quiet))
    # lr after each epoch: 0.025 * 48/96 * (1 + cos(pi e / 4)) / 2
    for row in result["history"]:
        expected = 0.0125 * (1 + math.cos(math.pi * row["epoch"] / 4)) / 2
        assert row["lr"] == pytest.approx(expected, abs=1e-12)
    assert sorted(set(seen))[:4] == pytest.approx([0.0, 0.05, 0.1, 0.15])


def test_step_schedule_is_torchs_step_lr(digits):
    """--schedule step (NAGO's search) against torch.optim.lr_scheduler.StepLR stepped once per epoch."""
    protocol = T.Protocol(epochs=5, batch_size=48, schedule="step", lr_step=2, lr_gamma=0.5)
    result = T.fit(model(), digits, protocol, options=T.RunOptions(log=quiet))
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0125)  # 0.025 at 96 -> 48
    reference = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    expected = []
    for _ in range(5):
        optimizer.step()
        reference.step()
        expected.append(reference.get_last_lr()[0])
    assert [row["lr"] for row in result["history"]] == pytest.approx(expected, abs=1e-12)


def one_step(digits, clip):
    """The weights after one kd_step at --grad-clip `clip` (a large rate, so that clipping binds)."""
    net = model(seed=4)
    run = T.setup(net, digits, T.Protocol(grad_clip=clip, lr=5.0), None, T.TAU, 0.0, T.RunOptions(workers=0))
    x, y, _ = next(iter(D.batches(digits, digits.train, 64, train=False, workers=0)))
    torch.manual_seed(0)  # dropout
    T.kd_step(run, x, y, None)
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_grad_clip_zero_does_not_clip(digits):
    unclipped = one_step(digits, 0.0)
    assert torch.equal(unclipped, one_step(digits, 1e12))        # a norm no gradient reaches
    assert not torch.allclose(unclipped, one_step(digits, 1e-3))  # a norm that binds


def test_a_checkpoint_from_before_a_setting_existed_reads_as_that_version_trained():
    """train.as_now: a config without the schedule fields trained with the cosine; a student without
    its stage rule and build options was even-staged, without auxiliary head or drop path."""
    arch = {"theta": {}, "cells": [], "width": 4}
    old = {"arch": "nago", "arch_options": {"arch": arch}, "lr": 0.025, "grad_clip": 5.0}
    now = T.as_now(old)
    assert (now["schedule"], now["lr_step"], now["lr_gamma"]) == ("cosine", 20, 0.5)
    assert now["arch_options"] == {"arch": {**arch, "stages_rule": "even"}, "auxiliary": False, "drop_path_prob": 0.0}
    given = {"arch": "nago", "schedule": "step", "arch_options": {"arch": {**arch, "stages_rule": "nago"},
                                                                  "auxiliary": True, "drop_path_prob": 0.2}}
    assert T.as_now(given) == {**T.BEFORE, **given}  # what a file says is kept
    assert T.as_now({"arch": "darts", "arch_options": {"width": 8}})["arch_options"] == {"width": 8}


def test_student_options_reach_the_model_and_the_checkpoint(digits, tmp_path):
    """f_kd's `student`: the stage rule to generator.sample, the auxiliary head and drop path to
    generator.build; all three in the checkpoint's arch_options, and a resume that changes one refused."""
    theta = {"top_nodes": 4, "top_k": 2, "top_p": 0.5, "mid_nodes": 3, "mid_p": 0.5, "bottom_nodes": 3,
             "bottom_k": 2, "bottom_p": 0.5}
    student = {"max_params": 30000, "stages": "nago", "auxiliary": True, "drop_path_prob": 0.1}
    data = dataclasses.replace(digits, train=D.TensorSplit(digits.train.x[:128], digits.train.y[:128]))
    options = T.RunOptions(save=str(tmp_path / "s.pt"), resume=True, stop_after=1, log=quiet, workers=0)
    protocol = T.Protocol(batch_size=64, bn_batches=1)
    result, arch, net = T.f_kd(theta, 2, 0, data, None, protocol, options, student)
    # NAGO's rule keeps 4 cells in one stage, so there is no third stage for the auxiliary head
    assert arch["stages_rule"] == "nago" and [c["stage"] for c in arch["cells"]] == [0, 0, 0, 0]
    assert net.auxiliary_head is None and result["config"]["drop_path_prob"] == pytest.approx(0.1)
    saved = T.load_checkpoint(tmp_path / "s.pt")["config"]["arch_options"]
    assert saved == {"arch": arch, "auxiliary": True, "drop_path_prob": 0.1}
    with pytest.raises(files.CheckpointError, match="arch_options"):
        T.f_kd(theta, 2, 0, data, None, protocol, options, {**student, "auxiliary": False})
    even = dataclasses.replace(options, save=str(tmp_path / "even.pt"))
    result, arch, net = T.f_kd(theta, 2, 0, data, None, protocol, even, {**student, "stages": "even"})
    assert [c["stage"] for c in arch["cells"]] == [0, 0, 1, 2] and net.auxiliary_head is not None
    assert result["epochs"] == 1 and T.load_checkpoint(even.save)["config"]["arch_options"]["auxiliary"]


def test_training_learns_and_reports(digits):
    result = T.fit(model(), digits, T.Protocol(epochs=8, batch_size=32, lr=0.2), options=T.RunOptions(seed=0, log=quiet))
    assert not result["failed"] and result["error"] is None and result["epochs"] == 8
    assert result["accuracy"] > 0.6  # chance is 0.1; this 8-channel net reaches about 0.8
    assert result["images_per_s"] > 0 and result["wall_s"] > 0


def test_bf16_autocast_on_cpu(digits):
    result = T.fit(model(), digits, T.Protocol(epochs=1, amp="bf16"), teacher=model(seed=1), alpha=0.5,
                   options=T.RunOptions(log=quiet))
    assert not result["failed"] and result["config"]["amp"] == "bf16"
    with pytest.raises(ValueError, match="CUDA"):
        T.fit(model(), digits, T.Protocol(epochs=1, amp="fp16"), options=T.RunOptions(log=quiet))


def test_score_matches_a_plain_forward(digits):
    net = model().eval()
    acc, loss = T.score(net, digits, digits.val, 64)
    with torch.no_grad():
        logits = net(D.normalise(digits.val.x, digits.preset))
    assert acc == pytest.approx((logits.argmax(1) == digits.val.y).float().mean().item())
    assert loss == pytest.approx(nn.functional.cross_entropy(logits, digits.val.y).item(), rel=1e-5)


class NaNNet(Tiny):
    def forward(self, x):
        return super().forward(x) * float("nan")


def test_nan_loss_is_a_failed_run_not_a_crash(digits):
    result = T.fit(NaNNet(), digits, T.Protocol(epochs=3), options=T.RunOptions(log=quiet))
    assert result["failed"] and result["accuracy"] is None and "nan" in result["error"]
    assert result["epochs"] == 0


def test_teacher_with_other_classes_is_refused(digits):
    with pytest.raises(ValueError, match="same data set"):
        T.fit(model(), digits, T.Protocol(epochs=1), teacher=Tiny(num_classes=100), alpha=0.5, options=T.RunOptions(log=quiet))
    with pytest.raises(ValueError, match="needs --teacher"):
        T.fit(model(), digits, T.Protocol(epochs=1), alpha=0.5, options=T.RunOptions(log=quiet))


def test_corrupt_checkpoint_is_one_sentence(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(files.CheckpointError, match="not a readable checkpoint"):
        T.load_checkpoint(bad)
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(files.CheckpointError, match="not a train.py checkpoint"):
        T.load_checkpoint(bad)


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "c.pt"
    files.save_checkpoint(path, {"model": {}, "epoch": 1, "config": {}})
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind
    assert T.load_checkpoint(path)["epoch"] == 1


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    rc = T.main(["--arch", "darts", "--dataset", "cifar10", "--data-dir", str(tmp_path / "none")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("error: no cifar10 data") and "\n" not in err
    rc = T.main(["--arch", "darts", "--dataset", "digits", "--resume"])
    assert rc == 1 and "--save" in capsys.readouterr().err
    rc = T.main(["--arch", "darts", "--dataset", "digits", "--from-scratch", "--epochs", "1"])
    assert rc == 1 and "--from-scratch apply to --arch inception_resnet_v2" in capsys.readouterr().err
    rc = T.main(["--arch", "darts", "--dataset", "digits", "--stages", "nago", "--epochs", "1"])
    assert rc == 1 and "--stages sets how a --theta student" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_teacher_then_student_with_kd(tmp_path, capsys):
    """The README's two commands on the bundled digits: train a (tiny) DARTS teacher, then a student
    of G(θ) with KD from it; each prints progress lines and a final JSON summary."""
    import json
    teacher = tmp_path / "teacher.pt"
    assert T.main(["--arch", "darts", "--width", "4", "--layers", "3", "--dataset", "digits",
                   "--split", "final", "--epochs", "1", "--batch-size", "700", "--save", str(teacher)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["config"]["arch"] == "darts" and summary["profile"]["params"] > 0
    theta = tmp_path / "theta.json"
    theta.write_text(json.dumps({"config": {"top_nodes": 3, "top_k": 2, "top_p": 0.5, "mid_nodes": 3,
                                            "mid_p": 0.5, "bottom_nodes": 3, "bottom_k": 2,
                                            "bottom_p": 0.5, "tau": 2.0, "alpha": 0.7}}))
    assert T.main(["--theta", str(theta), "--dataset", "digits", "--epochs", "1", "--max-params",
                   "30000", "--batch-size", "550", "--teacher", str(teacher)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("epoch    1/1") and " val " in out[0]
    summary = json.loads(out[-1])
    assert (summary["config"]["tau"], summary["config"]["alpha"]) == (2.0, 0.7)
    assert summary["config"]["teacher"] == str(teacher) and summary["profile"]["params"] <= 30000
    assert summary["config"]["arch_options"]["arch"]["stages_rule"] == "even"
    assert T.main(["--theta", str(theta), "--dataset", "digits", "--epochs", "1", "--max-params", "30000",
                   "--batch-size", "550", "--alpha", "0", "--stages", "nago"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["config"]["arch_options"]["arch"][
        "stages_rule"] == "nago"
    assert T.main(["--theta", str(theta), "--dataset", "digits", "--epochs", "1", "--max-params",
                   "30000"]) == 1  # alpha = 0.7 from the θ file needs a teacher
    assert "--teacher" in capsys.readouterr().err


def test_a_worker_makes_the_shared_tensors_before_any_student_starts():
    """Worker.load (the pool's init, before any task) makes the padded views and the normalisation
    constants that data.batches would otherwise make on first use, on whichever student's stream
    came first while the others read them."""
    D.stats_on.cache_clear()
    worker = T.Worker.load("cpu", worker_settings())
    data, preset = worker.data, worker.data.preset
    assert (preset.pad, preset.flip) in data.train.padded
    before = D.stats_on.cache_info()
    D.stats_on(preset, data.device)
    assert D.stats_on.cache_info().hits == before.hits + 1  # made already


def test_the_kernel_settings_follow_each_runs_protocol(digits):
    """--deterministic on sets deterministic algorithms for the process; the next run without it
    undoes them. --capture is eager by default, and an old `auto` reads as on."""
    def setup(**protocol):
        T.setup(model(), digits, T.Protocol(**protocol), None, T.TAU, 0.0, T.RunOptions(workers=0))
        return torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic
    assert setup(deterministic="on") == (True, True)
    assert setup() == (False, False)
    flags = ["--arch", "darts"]
    assert T.parser().parse_args(flags).capture == "off" and T.Protocol().capture == "off"
    assert T.parser().parse_args(flags + ["--capture", "auto"]).capture == "on"
