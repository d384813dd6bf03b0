"""The DARTS teacher for small images (AutoKD Sec. 4: "the best DARTS architecture"): the DARTS_V2 cell
in the DARTS paper's CIFAR-10 evaluation network (Liu et al., ICLR 2019, App. A.2): width 36, 20
cells, reductions at 1/3 and 2/3 depth, an auxiliary head at 2/3 depth (loss weight 0.4), drop path
0.2. Its parameter count is the DARTS paper's (tests/test_teachers.py); layers, order and outputs
match quark0/darts; the code is our own.

    python train.py --arch darts --dataset cifar10 --split final --download --save teacher.pt

Width and depth are options, so the quick start trains a small one on the bundled digits.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------------
# The genotype (DARTS paper Figs. 4-5: the cells learned by second-order DARTS on CIFAR-10)

# Each cell has two input states (0: the output of the cell two back, 1: of the previous cell) and four
# intermediate nodes 2..5; node i sums two (operation, input state) pairs. The cell's output is the
# channel concatenation of nodes 2..5. In a reduction cell, operations reading state 0 or 1 have stride 2.
DARTS_V2 = {
    "normal": [
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)],  # node 2
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)],  # node 3
        [("sep_conv_3x3", 1), ("skip_connect", 0)],  # node 4
        [("skip_connect", 0), ("dil_conv_3x3", 2)],  # node 5
    ],
    "normal_concat": [2, 3, 4, 5],
    "reduce": [
        [("max_pool_3x3", 0), ("max_pool_3x3", 1)],  # node 2
        [("skip_connect", 2), ("max_pool_3x3", 1)],  # node 3
        [("max_pool_3x3", 0), ("skip_connect", 2)],  # node 4
        [("skip_connect", 2), ("max_pool_3x3", 1)],  # node 5
    ],
    "reduce_concat": [2, 3, 4, 5],
}

# ----------------------------------------------------------------------------------------------------
# Operations (DARTS paper Sec. 3.1.1; every convolution is ReLU-conv-BN, without bias)


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv(k x k) -> BN: the 1x1 preprocessing of a cell's inputs."""

    def __init__(self, c_in, c_out, kernel_size, stride=1, padding=0):
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c_in, c_out, kernel_size, stride, padding, bias=False),
            nn.BatchNorm2d(c_out),
        )


class DilConv(nn.Sequential):
    """Dilated separable convolution: ReLU -> depthwise k x k (dilation d) -> pointwise 1x1 -> BN."""

    def __init__(self, c, kernel_size, stride, dilation):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c, c, kernel_size, stride, padding, dilation=dilation, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
        )


class SepConv(nn.Sequential):
    """Separable convolution, applied twice as in DARTS (after NASNet): the first one carries the stride."""

    def __init__(self, c, kernel_size, stride):
        super().__init__(
            DilConv(c, kernel_size, stride, dilation=1),
            DilConv(c, kernel_size, 1, dilation=1),
        )


class FactorizedReduce(nn.Module):
    """Halve the spatial size without losing every other pixel: two 1x1 stride-2 convolutions, the second
    on the input shifted by one pixel, concatenated. Used for a stride-2 skip connection and to bring the
    output of a reduction cell two steps back to the resolution of the current cell."""

    def __init__(self, c_in, c_out):
        super().__init__()
        assert c_out % 2 == 0
        self.relu = nn.ReLU()
        self.conv_even = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_odd = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):  # (B, c_in, H, W), H and W even
        x = self.relu(x)
        out = torch.cat([self.conv_even(x), self.conv_odd(x[:, :, 1:, 1:])], dim=1)  # (B, c_out, H/2, W/2)
        return self.bn(out)


# Only the four operations DARTS_V2 selects; the DARTS search space also has average pooling, 5x5
# separable and dilated convolutions and "none", which this genotype does not use.
OPS = {
    "sep_conv_3x3": lambda c, stride: SepConv(c, 3, stride),
    "dil_conv_3x3": lambda c, stride: DilConv(c, 3, stride, dilation=2),
    "max_pool_3x3": lambda c, stride: nn.MaxPool2d(3, stride, padding=1),
    "skip_connect": lambda c, stride: nn.Identity() if stride == 1 else FactorizedReduce(c, c),
}


def drop_path(x, drop_prob):
    """Drop path (DARTS's evaluation setting, after NASNet's ScheduledDropPath): zero an operation's whole
    output for each sample independently with probability drop_prob and scale the survivors by
    1 / (1 - drop_prob). drop_prob is a 0-dim tensor; at 0 the mask is all ones and x is unchanged.
    This is torchvision.ops.stochastic_depth (mode "row") with the probability read from a tensor:
    stochastic_depth takes a Python float, which a training step captured as a CUDA graph
    (train.KDStep) would freeze at its first value, while DARTS ramps it every epoch."""
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)  # (B, 1, 1, 1)
    return x * mask / keep


class ScheduledDropPath:
    """The drop-path probability of a network, as the training loop ramps it every epoch: `drop_path_prob`
    reads and sets a float (None where the network has no drop path); forward reads the 0-dim buffer
    `_drop_path_prob`, not a Python float, which torch.compile would recompile the model for every time it
    changes and a captured CUDA graph would freeze. The buffer is not saved in the state dict."""

    def init_drop_path(self, p):
        """Call from __init__: p is the starting probability, or None for a network without drop path."""
        self._drop_path_prob_value = None
        if p is not None:
            self.register_buffer("_drop_path_prob", torch.zeros(()), persistent=False)
            self.drop_path_prob = p

    @property
    def drop_path_prob(self):
        return self._drop_path_prob_value  # the float as set, without a device sync

    @drop_path_prob.setter
    def drop_path_prob(self, p):
        self._drop_path_prob_value = float(p)
        self._drop_path_prob.fill_(p)


# ----------------------------------------------------------------------------------------------------
# Cell and network (DARTS paper Sec. 2.1 for the cell, Sec. 3.2 and App. A.2 for the network)


class Cell(nn.Module):
    """One DARTS cell. Its two inputs are first brought to c channels at this cell's input resolution by
    1x1 ReLU-conv-BN (by a FactorizedReduce for the older input when the previous cell reduced)."""

    def __init__(self, genotype, c_prev_prev, c_prev, c, reduction, reduction_prev):
        super().__init__()
        kind = "reduce" if reduction else "normal"
        self.preprocess0 = (FactorizedReduce(c_prev_prev, c) if reduction_prev
                            else ReLUConvBN(c_prev_prev, c, 1))
        self.preprocess1 = ReLUConvBN(c_prev, c, 1)
        self.inputs = [i for node in genotype[kind] for _, i in node]  # two per node, in node order
        self.ops = nn.ModuleList(
            OPS[name](c, 2 if reduction and i < 2 else 1) for node in genotype[kind] for name, i in node
        )
        # Drop path leaves identity operations alone, as the DARTS reference implementation does.
        self.droppable = [not isinstance(op, nn.Identity) for op in self.ops]
        self.concat = genotype[kind + "_concat"]
        self.multiplier = len(self.concat)

    def forward(self, s0, s1, drop_prob=None):
        states = [self.preprocess0(s0), self.preprocess1(s1)]  # each (B, c, H, W)
        for node in range(len(self.ops) // 2):
            node_sum = 0
            for j in (2 * node, 2 * node + 1):
                h = self.ops[j](states[self.inputs[j]])
                if drop_prob is not None and self.droppable[j]:
                    h = drop_path(h, drop_prob)
                node_sum = node_sum + h
            states.append(node_sum)
        return torch.cat([states[i] for i in self.concat], dim=1)  # (B, multiplier * c, H', W')


class AuxiliaryHead(nn.Module):
    """Auxiliary classifier on the output of the second reduction cell (Szegedy et al. 2015; DARTS A.2).

    The reference implementation pools its 8x8 input with 5x5 windows at stride 3 to 2x2 and then applies
    a 2x2 convolution. Interpretation: at any other input size (4x4 on the 16 px digits set) we pool
    adaptively to 2x2, so the same layers, with the same parameter count, work at every size."""

    def __init__(self, c, num_classes):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):  # (B, c, H, W)
        x = F.relu(x)
        if x.shape[-2:] == (8, 8):
            x = F.avg_pool2d(x, 5, stride=3)  # (B, c, 2, 2), overlapping windows as in the reference
        else:
            x = F.adaptive_avg_pool2d(x, 2)  # (B, c, 2, 2)
        x = self.features(x)  # (B, 768, 1, 1)
        return self.classifier(x.flatten(1))  # (B, num_classes)


class DARTSNetwork(ScheduledDropPath, nn.Module):
    """The DARTS CIFAR evaluation network: stem -> `layers` cells -> global pool -> linear.

    Width doubles at each of the two reduction cells (at layers // 3 and 2 * layers // 3), which also
    halve the resolution. Training mode returns (logits, aux_logits) when the auxiliary head is on, and
    logits otherwise; eval mode returns logits. `drop_path_prob` starts at its maximum
    `max_drop_path_prob`; the training loop sets it every epoch (DARTS ramps it linearly from 0 at the
    first epoch towards the maximum)."""

    def __init__(self, num_classes, width=36, layers=20, auxiliary=True, drop_path_prob=0.2,
                 genotype=DARTS_V2):
        super().__init__()
        self.max_drop_path_prob = drop_path_prob  # what the training loop ramps towards
        self.init_drop_path(drop_path_prob)

        c_stem = 3 * width  # DARTS's stem multiplier
        self.stem = nn.Sequential(nn.Conv2d(3, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))

        self.aux_index = 2 * layers // 3  # the auxiliary head reads the second reduction cell
        c_prev_prev, c_prev, c = c_stem, c_stem, width
        reduction_prev = False
        self.cells = nn.ModuleList()
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c *= 2
            cell = Cell(genotype, c_prev_prev, c_prev, c, reduction, reduction_prev)
            self.cells.append(cell)
            c_prev_prev, c_prev = c_prev, cell.multiplier * c
            reduction_prev = reduction
            if i == self.aux_index:
                c_aux = c_prev
        self.auxiliary_head = AuxiliaryHead(c_aux, num_classes) if auxiliary else None
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x):  # (B, 3, H, W)
        drop_prob = self._drop_path_prob if self.training else None
        aux_logits = None
        s0 = s1 = self.stem(x)  # (B, 3 * width, H, W)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, drop_prob)
            if i == self.aux_index and self.auxiliary_head is not None and self.training:
                aux_logits = self.auxiliary_head(s1)  # (B, num_classes)
        logits = self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))  # (B, 16 * width) -> (B, classes)
        return (logits, aux_logits) if aux_logits is not None else logits


def build(num_classes, width=36, layers=20, auxiliary=True, drop_path_prob=0.2):
    """The DARTS_V2 network; the defaults are the DARTS paper's CIFAR-10 evaluation setting."""
    if width < 1 or layers < 3:
        raise ValueError(f"darts needs width >= 1 and layers >= 3 (two reduction cells), not width={width}, "
                         f"layers={layers}: pick e.g. width=16, layers=8")
    if not 0.0 <= drop_path_prob < 1.0:
        raise ValueError(f"drop_path_prob must be in [0, 1), not {drop_path_prob}")
    return DARTSNetwork(num_classes, width, layers, auxiliary, drop_path_prob)
