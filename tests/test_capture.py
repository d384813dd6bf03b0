"""machinery/capture.py on the CPU: its SGD against torch's, the lock that lets a recording run alone,
and the state handling around a recording, which a CPU exercises because recording a CUDA graph
fails there after the warm-up steps: a resumed run keeps its momentum, and a recording leaves the
weights another student of the process is building as its seed makes them."""
import dataclasses
import threading

import pytest
import torch
import torch.nn as nn

import data as D
import generator
import train as T
from helpers import model
from machinery import capture

pytestmark = pytest.mark.usefixtures("one_thread")


def small(digits, n=256):
    """The first n training images of the digits: 4 full batches of 64."""
    return dataclasses.replace(digits, train=D.TensorSplit(digits.train.x[:n], digits.train.y[:n]))


def test_sgd_matches_torch_sgd():
    """capture.SGD (foreach ops, a tensor learning rate allowed) against torch.optim.SGD's own update,
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
    data = small(digits)
    runs = []
    for forced in (False, True):
        net = model(seed=2)
        run = T.setup(net, data, T.Protocol(epochs=2, batch_size=64), None, T.TAU, 0.0, T.RunOptions(workers=0))
        run.step.can_capture = forced
        losses = [T.train_epoch(run, data.generator(0))[0] for _ in range(2)]
        runs.append((losses, [p.detach().clone() for p in net.parameters()], run.step.failure))
    (eager, w_eager, _), (tried, w_tried, failure) = runs
    assert failure is not None and capsys.readouterr().err.count("training eagerly") == 1
    assert tried == eager
    for a, b in zip(w_eager, w_tried):
        assert torch.equal(a, b)


class ForcedCapture(capture.CapturedStep):
    """train.setup's step, made to try a recording on the CPU as on a GPU: it runs the warm-up steps,
    fails to record and puts back the state from before them, so that a CPU run goes through
    everything a captured run does to the weights, the momentum and the random state."""

    def __init__(self, step, model, optimizer, batch_size, enabled):
        super().__init__(step, model, optimizer, batch_size, enabled=True)


def test_a_resumed_run_with_captures_state_handling_equals_an_uninterrupted_one(digits, tmp_path, monkeypatch,
                                                                                  capsys):
    """2 epochs eager with a checkpoint, then 2 more resumed with capture's warm-up, recording attempt and
    restore, equal 4 epochs straight eager: the weights bitwise and every epoch's loss. The restore must
    put back the momentum the checkpoint loaded (zeroing it, right for a fresh run, loses it)."""
    data, four = small(digits), T.Protocol(epochs=4, batch_size=64)
    options = T.RunOptions(seed=1, workers=0, log=lambda _: None)
    straight = model(seed=2)
    r_straight = T.fit(straight, data, four, options=options)
    saved = dataclasses.replace(options, save=tmp_path / "run.pt")
    T.fit(model(seed=2), data, four, options=dataclasses.replace(saved, stop_after=2))
    monkeypatch.setattr(T, "CapturedStep", ForcedCapture)
    resumed = model(seed=2)
    r_resumed = T.fit(resumed, data, four, options=dataclasses.replace(saved, resume=True))
    assert r_resumed["config"]["capture_error"] is not None  # the recording was tried, and failed
    assert capsys.readouterr().err.count("training eagerly") == 1
    assert [row["loss"] for row in r_resumed["history"]] == [row["loss"] for row in r_straight["history"]]
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_a_recording_leaves_another_students_build_as_its_seed_makes_it(digits, monkeypatch):
    """Student A seeds and builds its network (train.build_student) while student B of the same process
    records its step: B's warm-up waits until A has seeded, and A's build waits until B's recording has
    finished. A's initial weights must still be the ones its seed makes alone. The recording runs on a
    simulated GPU: on CUDA dropout draws from the GPU's generator, which the recording saves and puts
    back, so here the device's generator is one of the test's own, apart from the CPU's."""
    arch = generator.sample({k: lo for k, (_, lo, _) in generator.SPACE.items()}, 0, 16, 10, max_params=30_000)
    alone = T.build_student(arch, seed=3).state_dict()
    gpu = torch.Generator().manual_seed(7)
    monkeypatch.setattr(capture, "device_rng_state", lambda device: gpu.get_state())
    monkeypatch.setattr(capture, "set_device_rng_state", lambda state, device: gpu.set_state(state))

    b_in_warm_up, a_seeded, b_done, order = threading.Event(), threading.Event(), threading.Event(), []
    net_b = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 10))  # no dropout: B's own steps draw nothing
    run_b = T.setup(net_b, small(digits), T.Protocol(batch_size=16), None, T.TAU, 0.0, T.RunOptions(workers=0))

    def pausing_step(x, y, lesson):
        if not b_in_warm_up.is_set():  # B's first warm-up step: wait for A's seed
            order.append("B warms up")
            b_in_warm_up.set()
            assert a_seeded.wait(30)
        return T.kd_step(run_b, x, y, lesson)

    step_b = capture.CapturedStep(pausing_step, net_b, run_b.optimizer, 16, enabled=True)
    x, y = D.normalise(digits.train.x[:16], digits.preset), digits.train.y[:16]

    def student_b():
        step_b(x, y)
        order.append("B recorded")
        b_done.set()

    real_build = generator.build

    def build_after_b(arch):  # called by build_student once A's seed is set
        order.append("A seeded")
        a_seeded.set()
        assert b_done.wait(30)
        return real_build(arch)

    monkeypatch.setattr(generator, "build", build_after_b)
    built = {}
    threads = [threading.Thread(target=student_b),
               threading.Thread(target=lambda: b_in_warm_up.wait(30) and built.setdefault(
                   "a", T.build_student(arch, seed=3)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert order == ["B warms up", "A seeded", "B recorded"] and step_b.failure is not None
    for (k, a), b in zip(alone.items(), built["a"].state_dict().values()):
        assert torch.equal(a, b), k
