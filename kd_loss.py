"""The knowledge-distillation loss of AutoKD (paper Sec. 3.1, Eq. 1-2; Hinton et al., 2015).

    L = (1 - alpha) * CE(s, y) + alpha * tau^2 * KL(softmax(t / tau) || softmax(s / tau))

per batch, with the KL summed over classes and averaged over the batch. train.py calls `kd_loss` on
every training step; search.py adds `SPACE` (tau, alpha) to the generator's θ so that BOHB searches
the KD hyperparameters jointly with the architecture family (paper Sec. 4).

    python kd_loss.py    # why τ² is there: soft-term gradient scale across τ, with and without it
    python -m pytest -q tests/test_kd_loss.py      # checks against a numpy hand computation, < 5 s
"""
import torch
import torch.nn.functional as F

from machinery import cli

# Searched ranges (paper Sec. 4: "the temperature ranges from 1 to 10, the weight from 0 to 1").
SPACE = {"tau": (float, 1.0, 10.0), "alpha": (float, 0.0, 1.0)}


def check_kd_params(tau, alpha, teacher_given=True):
    """Refuse a temperature or weight that is not a number in the paper's ranges (a boolean or a
    string is not a number), or a KD weight above 0 without a teacher, with one clear sentence."""
    for name, value in (("tau", tau), ("alpha", alpha)):
        cli.check_value(name, value, *SPACE[name], what="KD")
    if alpha > 0 and not teacher_given:
        raise cli.UserError(f"KD weight alpha = {alpha} needs --teacher (a teacher to distil from), or set alpha = 0 (--alpha 0)")


def kd_loss(student_logits, teacher_logits, targets, tau, alpha):
    """Eq. 2: (1 - alpha) * cross-entropy + alpha * tau^2 * KL(teacher_soft || student_soft).

    student_logits (B, K), teacher_logits (B, K) or None when alpha == 0, targets (B,) int64.
    Returns a float32 scalar. The arithmetic runs in float32 even under autocast: logits arrive in
    bf16/fp16 from an AMP forward pass, and a softmax at temperature tau in half precision loses the
    small probabilities that carry the teacher's "dark knowledge".

    Why tau^2: the gradient of the soft term with respect to a student logit is
    (softmax(s/tau) - softmax(t/tau)) / tau, so it shrinks like 1/tau^2 for large tau (Hinton et al.,
    2015, Sec. 2). Multiplying by tau^2 keeps the soft term's gradient on the scale of the hard term's
    whatever tau the search picks, so that alpha alone sets the balance. The paper's Eq. 2 omits the
    factor; Hinton et al. and the usual KD code bases (RepDistiller, the NAGO/AutoKD lineage) use it.

    alpha == 0 is exactly cross-entropy and needs no teacher (the "vanilla NAGO" runs of Figs. 2-3).
    """
    check_kd_params(tau, alpha)
    with torch.autocast(student_logits.device.type, enabled=False):
        s = student_logits.float()                                   # (B, K)
        ce = F.cross_entropy(s, targets)
        if alpha == 0:
            return ce
        if teacher_logits is None:
            raise ValueError(f"KD weight alpha = {alpha} needs teacher logits; pass a teacher or use "
                             f"alpha = 0")
        t = teacher_logits.float()                                   # (B, K)
        if t.shape != s.shape:
            raise ValueError(f"teacher logits have shape {tuple(t.shape)} but the student's have "
                             f"{tuple(s.shape)}; use a teacher trained on the same data set")
        log_p_s = F.log_softmax(s / tau, dim=1)
        log_p_t = F.log_softmax(t / tau, dim=1)
        # F.kl_div(input, target) = sum target * (log target - input): KL(teacher || student).
        kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
        return (1.0 - alpha) * ce + alpha * tau * tau * kl


def main():
    """Print the soft term's gradient norm on random logits for several τ, with the τ² factor (Hinton
    et al.) and without it (the paper's Eq. 2 as printed): without it the teacher's signal fades as
    1/τ², so the search's α would mean something else at every τ."""
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(256, 10, generator=gen, requires_grad=True)
    t, y = 3 * torch.randn(256, 10, generator=gen), torch.randint(0, 10, (256,), generator=gen)
    ce = torch.autograd.grad(kd_loss(s, None, y, 1.0, 0.0), s)[0].norm().item()
    print(f"cross-entropy gradient norm {ce:.4f}; soft term (alpha = 1):")
    print("   tau   with tau^2   without")
    for tau in (1.0, 2.0, 4.0, 10.0):
        with_sq = torch.autograd.grad(kd_loss(s, t, y, tau, 1.0), s)[0].norm().item()
        print(f"  {tau:4.0f}   {with_sq:10.4f}   {with_sq / tau ** 2:7.4f}")


if __name__ == "__main__":
    main()
