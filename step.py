"""One training step of AutoKD (Alg. 1 line 7, Eq. 2), eager or captured once as a CUDA graph.

A NAGO student has up to 1,000 ReLU-Conv-BN units: thousands of small kernels per step, each launched
by one Python dispatch, which bounds a GPU step eagerly (bench/gpu_check.py measures it). KDStep records
the whole step (forward, L_KD, backward, clipping, SGD) once as a CUDA graph and replays it, so one
launch runs them all; train.fit uses it for students and teachers alike. What a replayed step needs,
and eager training does not, lives here too: an SGD that reads its learning rate from a tensor at
every replay, and a lock that keeps the students of one process from moving the device's random
generator while one of them records.

    step = KDStep(model, optimizer, scaler, autocast, protocol, tau, alpha, teacher, capture=True)
    loss, logits = step(x, y, lesson)     # lesson: the teacher's logits looked up, or None
"""
import sys
import threading
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F

import common
from kd_loss import kd_loss


def precision(protocol, device):
    """(amp name, autocast context, channels_last memory format or not) for `device`. 'auto' AMP is
    bf16 on a CUDA device that has it, fp16 (with a GradScaler) on one that does not, off on the CPU."""
    amp = protocol.amp
    if amp == "auto":
        amp = "off" if device.type != "cuda" else "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp not in ("off", "bf16", "fp16"):
        raise common.UserError(f"--amp must be auto, bf16, fp16 or off, not {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise common.UserError("fp16 AMP needs a CUDA device; use --amp bf16 or --amp off on the CPU")
    dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    # No autocast weight cache: a captured step must cast inside the graph (and eager does the same).
    autocast = torch.autocast(device.type, dtype=dtype, cache_enabled=False) if dtype else nullcontext()
    channels_last = protocol.channels_last in ("on", True) or (protocol.channels_last == "auto"
                                                               and device.type == "cuda")
    return amp, autocast, torch.channels_last if channels_last else torch.contiguous_format


class SGD(torch.optim.Optimizer):
    """torch.optim.SGD's update (momentum, weight decay; no dampening, no Nesterov), in foreach ops
    that read the learning rate as a tensor when it is one. A training step captured as a CUDA graph
    replays the kernels it recorded, and the cosine schedule changes the rate every epoch: it must be
    read from device memory at every replay, which torch.optim.SGD does not promise for every
    version (its foreach path turns a tensor rate into a Python number)."""

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


class SharedExclusiveLock:
    """Students of one process share the device's random generator (dropout), which must not move
    while one of them records a graph: steps hold the lock shared, a recording holds it alone, and a
    waiting recording goes before new steps."""

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


DEVICE_RNG = SharedExclusiveLock()

class KDStep:
    """One training step: the teacher's lesson (looked up, or computed live), the student's forward
    pass, L_KD of Eq. 2, backward, gradient clipping, SGD.

    capture=True (CUDA): the first full batch is recorded as one CUDA graph, and every later full
    batch replays it. A NAGO student has up to 1,000 ReLU-Conv-BN units, thousands of kernels per
    step, and one Python dispatch each is what bounds the step otherwise. The recording needs
    warm-up steps; the weights, buffers and momentum are put back after them, so the captured run
    trains like the eager one. A short last batch runs eagerly on the same tensors. If recording
    fails, the step says so once on stderr, stays eager, and fit's result records it."""

    def __init__(self, model, optimizer, scaler, autocast, protocol, tau, alpha, teacher=None,
                 capture=False):
        self.model, self.optimizer, self.scaler, self.autocast = model, optimizer, scaler, autocast
        self.tau, self.alpha, self.teacher = tau, alpha, teacher
        self.aux_weight, self.grad_clip = protocol.aux_weight, protocol.grad_clip
        self.batch_size, self.can_capture = protocol.batch_size, capture
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.graph, self.static, self.failure = None, None, None

    def loss(self, x, y, lesson):
        """L_KD of a batch: x (B, 3, S, S), y (B,), lesson (B, K) or None (computed live, or α = 0)."""
        with self.autocast:
            if self.teacher is not None:
                with torch.no_grad():
                    lesson = self.teacher(x)                           # (B, K)
            out = self.model(x)
            logits, aux = out if isinstance(out, tuple) else (out, None)  # (B, K) each
            loss = kd_loss(logits, lesson, y, self.tau, self.alpha)
            if aux is not None:
                # Interpretation: the auxiliary head learns from the labels only, as in DARTS.
                loss = loss + self.aux_weight * F.cross_entropy(aux.float(), y)
        return loss, logits

    def update(self, x, y, lesson):
        loss, logits = self.loss(x, y, lesson)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # clip the true gradients (a no-op without fp16)
        torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), logits.detach()

    def __call__(self, x, y, lesson=None):
        """Train on one batch; returns (loss, logits) on the device (no host wait)."""
        full = len(y) == self.batch_size
        if full and self.can_capture and self.graph is None:
            self.capture(x, y, lesson)
        with DEVICE_RNG.hold():
            if full and self.graph is not None:
                for static, value in zip(self.static, (x, y, lesson)):
                    if static is not None:
                        static.copy_(value)
                self.graph.replay()
                return self.outputs
            self.optimizer.zero_grad(set_to_none=self.graph is None)  # a graph owns the .grad tensors
            return self.update(x, y, lesson)

    def capture(self, x, y, lesson):
        self.can_capture = False  # one attempt
        saved = {k: v.clone() for k, v in self.model.state_dict().items()}
        # Alone in the process: the other students' steps move the device's random generator, and
        # torch.cuda.graph synchronises the device and empties the allocator's cache as it starts.
        # The random state is put back too, so that dropout draws what it would have drawn eagerly.
        with DEVICE_RNG.hold(exclusive=True), torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
            self.record(x, y, lesson, saved)

    def record(self, x, y, lesson, saved):
        try:
            side = torch.cuda.Stream() if x.is_cuda else None  # (on the CPU, recording fails below)
            if side is not None:
                side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side) if side is not None else nullcontext():
                for _ in range(3):  # warm-up: cuDNN picks kernels, buffers get allocated
                    self.optimizer.zero_grad(set_to_none=True)
                    self.update(x, y, lesson)
            if side is not None:
                torch.cuda.current_stream().wait_stream(side)
            self.static = [x.clone(), y.clone(), None if lesson is None else lesson.clone()]
            self.optimizer.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            # thread_local: other students of this process may run while this one records
            with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
                self.outputs = self.update(*self.static)
            self.graph = graph
        except Exception as error:  # noqa: BLE001 (any failure: train eagerly instead)
            self.graph, self.static = None, None
            self.failure = common.describe(error)
            print(f"warning: capturing the training step as a CUDA graph failed ({self.failure}); "
                  f"training eagerly", file=sys.stderr, flush=True)
        with torch.no_grad():  # undo the warm-up: the run starts from the initial weights
            for k, v in self.model.state_dict().items():
                v.copy_(saved[k])
            for state in self.optimizer.state.values():
                if state.get("momentum_buffer") is not None:
                    state["momentum_buffer"].zero_()  # m·0 + g: SGD's first step, as in eager


def learning_rate(value, device, capture):
    """The optimiser's learning rate: a float, or a device tensor that a captured step reads."""
    return torch.tensor(float(value), device=device) if capture else float(value)


def set_lr(optimizer, value):
    """Set the learning rate in place: a captured step reads the same tensor at every replay."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value
