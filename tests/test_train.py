"""train.py on the CPU: exact resume, the schedule, precision, scores and the failure modes of fit and
its command line."""
import dataclasses
import math

import pytest
import torch
import torch.nn as nn

from machinery import files
import data as D
from machinery import capture
import train as T


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


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tests run many tiny ops: one thread avoids waking a pool for each (on a busy 2-core
    machine each parallel region can wait a whole scheduler time slice)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    return D.load_data("digits")


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
    assert T.main(["--theta", str(theta), "--dataset", "digits", "--epochs", "1", "--max-params",
                   "30000"]) == 1  # alpha = 0.7 from the θ file needs a teacher
    assert "--teacher" in capsys.readouterr().err


def test_sgd_matches_torch_sgd():
    """train.SGD (foreach ops, a tensor learning rate allowed) against torch.optim.SGD's own update,
    in float64, over steps with a changing learning rate; the tensor rate is read at every step."""
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    b = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    b.load_state_dict(a.state_dict())
    lr = torch.tensor(0.1, dtype=torch.float64)
    ours = capture.SGD(a.parameters(), lr, momentum=0.9, weight_decay=3e-4)
    ref = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4, foreach=False)
    x = torch.randn(16, 6, dtype=torch.float64)
    for i in range(5):
        for net, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
        lr.fill_(0.1 / (i + 2))  # the schedule moves the tensor in place
        ref.param_groups[0]["lr"] = 0.1 / (i + 2)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_shared_exclusive_lock_lets_a_recording_go_first():
    """Steps share the lock; a recording waits for the running step, runs alone, and a step that
    comes while the recording waits goes after it."""
    import threading
    lock, order = capture.SharedExclusiveLock(), []
    step_running, release_step, release_recording = threading.Event(), threading.Event(), threading.Event()
    recording_running = threading.Event()

    def first_step():
        with lock.hold():
            order.append("step 1")
            step_running.set()
            release_step.wait(30)

    def recording():
        with lock.hold(exclusive=True):
            order.append("recording")
            recording_running.set()
            release_recording.wait(30)

    def later_step():
        with lock.hold():
            order.append("step 2")

    threads = [threading.Thread(target=first_step)]
    threads[0].start()
    step_running.wait(5)
    threads.append(threading.Thread(target=recording))
    threads[1].start()
    while not lock.waiting:  # the recording is waiting for step 1
        pass
    threads.append(threading.Thread(target=later_step))
    threads[2].start()
    threads[2].join(0.2)
    assert order == ["step 1"]  # step 2 waits behind the waiting recording
    release_step.set()
    assert recording_running.wait(30)
    threads[2].join(0.2)
    assert order == ["step 1", "recording"]  # the recording runs alone
    release_recording.set()
    for t in threads:
        t.join(30)
    assert order == ["step 1", "recording", "step 2"]


def test_a_failed_recording_is_said_once_and_trains_like_eager(digits, capsys):
    """On the CPU recording a CUDA graph fails after the warm-up steps: the step says so once, puts
    the weights, buffers and momentum back, and the run's losses and weights are eager's exactly."""
    data = dataclasses.replace(digits, train=D.TensorSplit(digits.train.x[:256], digits.train.y[:256]))
    runs = []
    for capture in (False, True):
        net = model(seed=2)
        run = T.setup(net, data, T.Protocol(epochs=2, batch_size=64), None, T.TAU, 0.0, T.RunOptions(workers=0))
        run.step.can_capture = capture
        losses = [T.train_epoch(run, data.generator(0))[0] for _ in range(2)]
        runs.append((losses, [p.detach().clone() for p in net.parameters()], run.step.failure))
    (eager, w_eager, _), (tried, w_tried, failure) = runs
    assert failure is not None and capsys.readouterr().err.count("training eagerly") == 1
    assert tried == eager
    for a, b in zip(w_eager, w_tried):
        assert torch.equal(a, b)
