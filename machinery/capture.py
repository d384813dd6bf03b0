"""A training step recorded once as a CUDA graph and replayed: train.py's own step function, unchanged.

A NAGO student has up to 1,000 ReLU-Conv-BN units, thousands of small kernels per step, each launched
by one Python dispatch. CapturedStep records train.kd_step once and replays it, so one launch runs the
whole step. What a replayed step needs, and eager training does not, lives here too: an SGD that reads
its learning rate from a tensor at every replay, and a lock that keeps the students of one process
from moving the device's random generator while one of them records.

    step = CapturedStep(functools.partial(kd_step, run), model, optimizer, batch_size, enabled=True)
    loss, logits = step(x, y, lesson)     # the same call, and the same result, as kd_step(run, x, y, lesson)
"""
import os
import sys
import threading
from contextlib import contextmanager, nullcontext

import torch

from machinery import cli


def precision(protocol, device):
    """(amp name, autocast context, memory format) for `device`. 'auto' AMP is bf16 on a CUDA device
    that has it, fp16 (with a GradScaler) on one that does not, off on the CPU."""
    amp = protocol.amp
    if amp == "auto":
        amp = "off" if device.type != "cuda" else "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp not in ("off", "bf16", "fp16"):
        raise cli.UserError(f"--amp must be auto, bf16, fp16 or off, not {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise cli.UserError("fp16 AMP needs a CUDA device; use --amp bf16 or --amp off on the CPU")
    dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    # No autocast weight cache: a captured step must cast inside the graph (and eager does the same).
    autocast = torch.autocast(device.type, dtype=dtype, cache_enabled=False) if dtype else nullcontext()
    channels_last = protocol.channels_last in ("on", True) or (protocol.channels_last == "auto"
                                                               and device.type == "cuda")
    return amp, autocast, torch.channels_last if channels_last else torch.contiguous_format


def kernels(protocol, device):
    """Set the process's kernel choice for `protocol.deterministic`. off: cuDNN times its kernels for
    the fixed shapes and picks the fastest (which may differ from run to run), TF32 as PyTorch's
    defaults have it. on, for checks: deterministic algorithms (a warning where an op has none),
    cuDNN's deterministic kernels, no timing, and no TF32, so fp32 is fp32. These are process-wide
    settings: students of one process share them."""
    on = protocol.deterministic == "on"
    if on:  # cuBLAS's deterministic workspace; read when its first handle is made
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.deterministic = on
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not on
        torch.backends.cudnn.allow_tf32 = not on           # PyTorch's default: TF32 convolutions
        torch.backends.cuda.matmul.allow_tf32 = False      # PyTorch's default: fp32 matrix products


class SGD(torch.optim.Optimizer):
    """torch.optim.SGD's update (momentum, weight decay; no dampening, no Nesterov), in foreach ops
    that read the learning rate as a tensor when it is one: a replayed graph must read the cosine
    schedule's rate from device memory, which torch.optim.SGD does not promise for every version
    (its foreach path turns a tensor rate into a Python number)."""

    def __init__(self, params, lr, momentum, weight_decay):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])   # g + wd·p
            if group["momentum"]:
                buffers = [self.state[p].get("momentum_buffer") for p in params]
                if any(b is None for b in buffers):  # the first step: the buffer is the gradient
                    buffers = [g.clone() for g in grads]
                    for p, b in zip(params, buffers):
                        self.state[p]["momentum_buffer"] = b
                else:
                    torch._foreach_mul_(buffers, group["momentum"])                      # m·buf + g
                    torch._foreach_add_(buffers, grads)
                grads = buffers
            torch._foreach_add_(params, torch._foreach_mul(grads, group["lr"]), alpha=-1.0)  # p − lr·buf


def learning_rate(value, device, captured):
    """The optimiser's learning rate: a float, or a device tensor that a captured step reads."""
    return torch.tensor(float(value), device=device) if captured else float(value)


def set_lr(optimizer, value):
    """Set the learning rate in place: a captured step reads the same tensor at every replay."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value


class SharedExclusiveLock:
    """Held shared by many, or exclusively by one; a waiting exclusive holder goes before new shared ones."""

    def __init__(self):
        self.cond, self.shared, self.exclusive, self.waiting = threading.Condition(), 0, False, 0

    @contextmanager
    def hold(self, exclusive=False):
        with self.cond:
            if exclusive:
                self.waiting += 1
                self.cond.wait_for(lambda: not self.exclusive and self.shared == 0)
                self.waiting -= 1
                self.exclusive = True
            else:
                self.cond.wait_for(lambda: not self.exclusive and self.waiting == 0)
                self.shared += 1
        try:
            yield
        finally:
            with self.cond:
                if exclusive:
                    self.exclusive = False
                else:
                    self.shared -= 1
                self.cond.notify_all()


# Students of one process share the device's random generator (dropout, drop path): it must not move
# while one of them records. Steps hold this lock shared, a recording holds it alone.
DEVICE_RNG_LOCK = SharedExclusiveLock()


def device_rng_state(device):
    """The state of the generator that dropout draws from on `device`: the GPU's own on CUDA."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def set_device_rng_state(state, device):
    torch.cuda.set_rng_state(state, device) if device.type == "cuda" else torch.set_rng_state(state)


class CapturedStep:
    """`step(x, y, lesson)` (train.kd_step: zero the gradients, forward, L_KD, backward, clipping, SGD;
    returns (loss, logits)), recorded once as a CUDA graph on the first full batch and replayed for
    every later full batch. A short last batch runs `step` eagerly on the same tensors.

    The recording needs warm-up steps (cuDNN picks kernels, buffers are allocated); the weights,
    buffers and optimiser state are put back after them, so that the captured run trains like the
    eager one, a resumed run included. If recording fails, the step says so once on stderr and runs
    eagerly; `failure` records why. enabled=False: always eager (the CPU, --capture off)."""

    def __init__(self, step, model, optimizer, batch_size, enabled):
        self.step, self.model, self.optimizer, self.batch_size = step, model, optimizer, batch_size
        self.can_capture = enabled
        self.graph, self.static, self.outputs, self.failure = None, None, None, None

    def __call__(self, x, y, lesson=None):
        """Train on one batch; returns (loss, logits) on the device (no host wait)."""
        full = len(y) == self.batch_size
        if full and self.can_capture and self.graph is None:
            self.capture(x, y, lesson)
        with DEVICE_RNG_LOCK.hold():
            if full and self.graph is not None:
                for static, value in zip(self.static, (x, y, lesson)):
                    if static is not None:
                        static.copy_(value)
                self.graph.replay()
                return self.outputs
            return self.step(x, y, lesson)

    def capture(self, x, y, lesson):
        self.can_capture = False  # one attempt
        saved = self.snapshot()
        # Alone in the process: the other students' steps move the device's random generator, and
        # torch.cuda.graph synchronises the device and empties the allocator's cache as it starts.
        # The device's random state is put back too, so that dropout draws what it would have drawn
        # eagerly. Only the device's: on a GPU, the CPU generator belongs to whichever student of this
        # process is seeding its model now.
        with DEVICE_RNG_LOCK.hold(exclusive=True):
            rng = device_rng_state(x.device)
            try:
                self.record(x, y, lesson)
            except Exception as error:  # noqa: BLE001 (any failure: train eagerly instead)
                self.graph, self.static = None, None
                self.failure = cli.describe(error)
                print(f"warning: capturing the training step as a CUDA graph failed ({self.failure}); "
                      f"training eagerly", file=sys.stderr, flush=True)
            finally:
                self.restore(saved)
                set_device_rng_state(rng, x.device)

    def record(self, x, y, lesson):
        side = torch.cuda.Stream() if x.is_cuda else None  # (on the CPU, recording fails below)
        if side is not None:
            side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side) if side is not None else nullcontext():
            for _ in range(3):  # warm-up: cuDNN picks kernels, buffers get allocated
                self.step(x, y, lesson)
        if side is not None:
            torch.cuda.current_stream().wait_stream(side)
        self.static = [x.clone(), y.clone(), None if lesson is None else lesson.clone()]
        graph = torch.cuda.CUDAGraph()
        # thread_local: other students of this process may run while this one records
        with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
            self.outputs = self.step(*self.static)
        self.graph = graph

    def snapshot(self):
        """The weights, buffers and momentum before the warm-up (the momentum of a resumed run too)."""
        momenta = {p: state["momentum_buffer"].clone() for p, state in self.optimizer.state.items()
                   if state.get("momentum_buffer") is not None}
        return {k: v.clone() for k, v in self.model.state_dict().items()}, momenta

    @torch.no_grad()
    def restore(self, saved):
        """Undo the warm-up: the run goes on from the state it had before it."""
        weights, momenta = saved
        for k, v in self.model.state_dict().items():
            v.copy_(weights[k])
        for p, state in self.optimizer.state.items():
            buffer = state.get("momentum_buffer")
            if buffer is not None:  # a fresh run had none: m·0 + g is SGD's first step, as in eager
                buffer.copy_(momenta[p]) if p in momenta else buffer.zero_()
