"""Tests for teachers/: the DARTS_V2 network against its published size, the forward contract, drop path,
and the checkpoint loader with its refusals. CPU only, a few seconds."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import generator
import teachers
from teachers import darts
from test_data import write_mit67

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(width=8, layers=5)  # two reductions (cells 1 and 3), auxiliary head on cell 3


def n_params(model, skip_prefix=None):
    return sum(p.numel() for name, p in model.named_parameters()
               if skip_prefix is None or not name.startswith(skip_prefix))


# ----------------------------------------------------------------------------------------------------
# DARTS: size, shapes, drop path


@pytest.mark.slow
def test_darts_parameter_count_matches_published_cifar10_network():
    # Published: 3.3 M parameters for DARTS (second order) on CIFAR-10 (Liu et al., ICLR 2019, Table 1).
    # The exact figure is the reference implementation's log line "param size = 3.349342MB" for
    # DARTS_V2 with --init_channels 36 --layers 20 --auxiliary (quark0/darts, cnn/train.py), where
    # utils.count_parameters_in_MB sums every parameter whose name lacks "auxiliary": weights, biases
    # and BN affine parameters, without BN running statistics, without the auxiliary head.
    model = teachers.build("darts", num_classes=10)  # the defaults are the paper's setting
    assert n_params(model, skip_prefix="auxiliary_head") == 3_349_342
    # The auxiliary head on the 576-channel (16 x 36) 8x8 output of the second reduction cell, by hand:
    # 1x1 conv 576->128, BN(128), 2x2 conv 128->768, BN(768), linear 768->10.
    aux = 576 * 128 + 2 * 128 + 128 * 768 * 2 * 2 + 2 * 768 + 768 * 10 + 10
    assert aux == 476_426
    assert n_params(model) == 3_349_342 + aux
    # the model profile of the reports counts what inference uses: the published figure
    assert generator.profile(model, 32, batch_size=1)["params"] == 3_349_342


def test_darts_without_auxiliary_head_has_the_same_network():
    with_aux = teachers.build("darts", 100, auxiliary=True)
    without = teachers.build("darts", 100, auxiliary=False)
    assert n_params(without) == n_params(with_aux, skip_prefix="auxiliary_head")


@pytest.mark.slow
@pytest.mark.parametrize("image_size", [16, 32])
def test_darts_forward_contract_and_resolutions(image_size):
    model = teachers.build("darts", 7, **SMALL)
    sizes = []
    for cell in model.cells:
        cell.register_forward_hook(lambda module, inputs, out: sizes.append(out.shape[-1]))
    x = torch.randn(4, 3, image_size, image_size)

    model.train()
    logits, aux_logits = model(x)
    assert logits.shape == aux_logits.shape == (4, 7)
    # cells 0, 1 (reduction), 2, 3 (reduction), 4: the resolution halves twice (16 -> 8 -> 4 on digits)
    s = image_size
    assert sizes == [s, s // 2, s // 2, s // 4, s // 4]

    model.eval()
    assert model(x).shape == (4, 7)

    no_aux = teachers.build("darts", 7, auxiliary=False, **SMALL).train()
    out = no_aux(x)
    assert isinstance(out, torch.Tensor) and out.shape == (4, 7)


def test_drop_path_skips_identity_operations():
    # DARTS_V2 read by hand: in the normal cell, ops 5 and 6 are stride-1 skip connections; in the
    # reduction cell, ops 2, 5 and 6 are skip connections from node 2 (stride 1). Only those are
    # identities; a skip connection from a cell input in a reduction cell is a FactorizedReduce.
    model = teachers.build("darts", 10, **SMALL)
    normal, reduction = model.cells[0], model.cells[1]
    assert normal.droppable == [True, True, True, True, True, False, False, True]
    assert reduction.droppable == [True, True, False, True, True, False, False, True]


def test_drop_path_zeroes_whole_samples_and_rescales_the_rest():
    torch.manual_seed(0)
    x = torch.rand(4000, 3, 2, 2) + 1.0
    y = darts.drop_path(x, torch.tensor(0.25))
    kept = (y != 0).flatten(1)
    assert (kept.all(1) | ~kept.any(1)).all()  # a sample keeps all or nothing
    assert abs(kept.all(1).float().mean().item() - 0.75) < 0.03
    survivors = kept.all(1)
    torch.testing.assert_close(y[survivors], x[survivors] / 0.75)


@pytest.mark.slow
def test_drop_path_is_active_only_in_training():
    torch.manual_seed(0)
    model = teachers.build("darts", 10, auxiliary=False, drop_path_prob=0.5, **SMALL)
    x = torch.randn(8, 3, 16, 16)

    model.eval()
    with torch.no_grad():
        reference = model(x)
        model.drop_path_prob = 0.0
        torch.testing.assert_close(model(x), reference, rtol=0, atol=0)  # eval ignores drop_path_prob
        model.drop_path_prob = 0.5
        torch.testing.assert_close(model(x), reference, rtol=0, atol=0)  # and is deterministic

    model.train()  # BN uses batch statistics: deterministic for a fixed batch, so only drop path varies
    with torch.no_grad():
        model.drop_path_prob = 0.0
        a, b = model(x), model(x)
        torch.testing.assert_close(a, b)
        model.drop_path_prob = 0.5
        c, d = model(x), model(x)
    assert not torch.allclose(a, c) and not torch.allclose(c, d)


def test_drop_path_prob_starts_at_the_maximum_and_is_settable():
    model = teachers.build("darts", 10, drop_path_prob=0.3, **SMALL)
    assert model.max_drop_path_prob == 0.3
    assert model.drop_path_prob == 0.3
    model.drop_path_prob = 0.1
    assert model.drop_path_prob == 0.1
    assert not any("drop_path" in key for key in model.state_dict())  # not part of the weights


@pytest.mark.slow
def test_darts_runs_channels_last_and_under_bf16_autocast():
    torch.manual_seed(0)
    model = teachers.build("darts", 10, **SMALL)
    x = torch.randn(4, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        expected = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(model_cl(x.to(memory_format=torch.channels_last)), expected,
                                   rtol=1e-4, atol=1e-4)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, aux_logits = model(x.to(memory_format=torch.channels_last))
        loss = logits.float().logsumexp(1).mean() + 0.4 * aux_logits.float().logsumexp(1).mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_build_refuses_unknown_names_and_bad_sizes():
    with pytest.raises(ValueError, match="unknown teacher 'resnet'"):
        teachers.build("resnet", 10)
    with pytest.raises(ValueError, match="layers >= 3"):
        teachers.build("darts", 10, width=8, layers=2)


# ----------------------------------------------------------------------------------------------------
# Loading a teacher from a train.py checkpoint


def write_checkpoint(path, model, dataset="digits", num_classes=10, arch="darts", arch_options=None,
                     state=None):
    """A checkpoint in the format of notes/CONTRACTS.md, as train.py writes it. (torch.__version__ is a str
    subclass that weights_only loading refuses, hence str().)"""
    config = {"arch": arch, "arch_options": SMALL if arch_options is None else arch_options,
              "dataset": dataset, "num_classes": num_classes, "image_size": 16, "epochs": 1}
    torch.save({"model": model.state_dict() if state is None else state, "optimizer": {}, "scheduler": {},
                "scaler": None, "epoch": 1, "rng": {},
                "versions": {"torch": str(torch.__version__), "autokd": None},
                "config": config}, path)


@pytest.fixture
def trained_teacher():
    torch.manual_seed(0)
    model = teachers.build("darts", 10, **SMALL)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    logits, aux_logits = model(torch.randn(8, 3, 16, 16))  # one step: weights and BN statistics move
    (logits.logsumexp(1).mean() + aux_logits.logsumexp(1).mean()).backward()
    optimizer.step()
    return model.eval()


@pytest.mark.slow
def test_checkpoint_round_trip(tmp_path, trained_teacher):
    path = tmp_path / "teacher.pt"
    write_checkpoint(path, trained_teacher)
    loaded = teachers.load(path, "digits", 10, device="cpu")
    assert not loaded.training
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained_teacher(x), rtol=0, atol=0)


@pytest.mark.slow
def test_checkpoint_from_a_channels_last_model(tmp_path, trained_teacher):
    # channels_last (the GPU default) only changes strides
    state = trained_teacher.to(memory_format=torch.channels_last).state_dict()
    path = tmp_path / "compiled.pt"
    write_checkpoint(path, trained_teacher, state=state)
    loaded = teachers.load(path, "digits", 10)
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained_teacher(x))


def test_load_refuses_another_dataset(tmp_path, trained_teacher):
    path = tmp_path / "teacher.pt"
    write_checkpoint(path, trained_teacher, dataset="cifar100", num_classes=10)
    with pytest.raises(ValueError, match=r"trained on cifar100 \(10 classes\), not cifar10 \(10 classes\)"
                                         r".*python train.py --arch darts --dataset cifar10"):
        teachers.load(path, "cifar10", 10)


@pytest.mark.slow
def test_load_refuses_another_class_count(tmp_path, trained_teacher):
    path = tmp_path / "teacher.pt"
    write_checkpoint(path, trained_teacher)
    with pytest.raises(ValueError, match=r"trained on digits \(10 classes\), not digits \(100 classes\)"):
        teachers.load(path, "digits", 100)


@pytest.mark.slow
def test_load_refuses_a_student_checkpoint(tmp_path, trained_teacher):
    path = tmp_path / "student.pt"
    write_checkpoint(path, trained_teacher, arch="nago", arch_options={"arch": {}})
    with pytest.raises(ValueError, match="holds a 'nago' network, not a teacher"):
        teachers.load(path, "digits", 10)


def test_load_refuses_missing_corrupt_and_inconsistent_files(tmp_path):
    with pytest.raises(ValueError, match="there is no teacher checkpoint at .*missing.pt: train a teacher"):
        teachers.load(tmp_path / "missing.pt", "mit67", 67)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="is not a readable train.py checkpoint.*--arch inception_resnet_v2"):
        teachers.load(corrupt, "mit67", 67)
    mismatched = tmp_path / "mismatched.pt"  # weights of a width-8 network, config says width 16
    write_checkpoint(mismatched, teachers.build("darts", 10, **SMALL),
                     arch_options={"width": 16, "layers": 5})
    with pytest.raises(ValueError, match="holds weights that do not fit its own config"):
        teachers.load(mismatched, "digits", 10)
    bare = tmp_path / "bare.pt"
    torch.save({"weights": {}}, bare)
    with pytest.raises(ValueError, match="is not a train.py checkpoint"):
        teachers.load(bare, "cifar10", 10)


@pytest.mark.slow
def test_load_refuses_non_finite_weights(tmp_path, trained_teacher):
    """A diverged teacher is refused when loaded, not blamed later on the students' configuration."""
    state = {k: v.clone() for k, v in trained_teacher.state_dict().items()}
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name].view(-1)[0] = float("nan")
    path = tmp_path / "nan.pt"
    write_checkpoint(path, trained_teacher, state=state)
    with pytest.raises(ValueError, match=f"holds non-finite weights \\({name}"):
        teachers.load(path, "digits", 10)


# ----------------------------------------------------------------------------------------------------
# Inception-ResNet-V2 through timm (optional)


def test_inception_resnet_v2_without_timm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    with pytest.raises(ValueError, match="pip install timm"):
        teachers.build("inception_resnet_v2", 67)


@pytest.mark.slow
def test_inception_resnet_v2_has_a_new_classifier():
    pytest.importorskip("timm", reason="timm (optional) is not installed: pip install timm")
    model = teachers.build("inception_resnet_v2", 67)
    assert model.get_classifier().out_features == 67
    # The paper gives the MIT67 teacher "54M" parameters (AutoKD, Fig. 6 caption).
    assert round(n_params(model) / 1e6) == 54
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 67)


@pytest.fixture(scope="module")
def imagenet_weights(tmp_path_factory):
    """A stand-in for timm's model.safetensors of inception_resnet_v2.tf_in1k: the same tensors (names
    and shapes, 1000 classes), random values, written by safetensors as the hub's file is."""
    timm = pytest.importorskip("timm", reason="timm (optional) is not installed: pip install timm")
    from safetensors.torch import save_file
    torch.manual_seed(1)
    state = timm.create_model("inception_resnet_v2", num_classes=1000).state_dict()
    path = tmp_path_factory.mktemp("weights") / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path, state


@pytest.mark.slow
@pytest.mark.parametrize("classes", [67, 1000])
def test_weights_file_gives_every_imagenet_tensor_and_a_classifier_for_the_classes(imagenet_weights, classes):
    path, state = imagenet_weights
    model = teachers.build("inception_resnet_v2", classes, weights=str(path))
    own = model.state_dict()
    same = [k for k in own if torch.equal(own[k], state[k])] if classes == 1000 else \
        [k for k in own if not k.startswith("classif.") and torch.equal(own[k], state[k])]
    assert len(same) == len(own) - (0 if classes == 1000 else 2)  # all but a new classifier's weight and bias
    assert model.get_classifier().out_features == classes


def test_weights_that_are_not_inception_resnet_v2s_are_refused(imagenet_weights, tmp_path):
    from safetensors.torch import save_file
    path, state = imagenet_weights
    with pytest.raises(ValueError, match="no such file.*--weights FILE.*--from-scratch"):
        teachers.build("inception_resnet_v2", 67, weights=str(tmp_path / "missing.safetensors"))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="is not a weights file"):
        teachers.build("inception_resnet_v2", 67, weights=str(garbage))
    darts_state = teachers.build("darts", 10, **SMALL).state_dict()  # another network's weights
    save_file({k: v.contiguous() for k, v in darts_state.items()}, str(tmp_path / "darts.safetensors"))
    with pytest.raises(ValueError, match="does not hold inception_resnet_v2's weights"):
        teachers.build("inception_resnet_v2", 67, weights=str(tmp_path / "darts.safetensors"))
    partial = {k: v for k, v in state.items() if not k.startswith("conv2d_7b.")}  # one tensor short
    save_file({k: v.contiguous() for k, v in partial.items()}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match="conv2d_7b.* is missing"):
        teachers.build("inception_resnet_v2", 67, weights=str(tmp_path / "partial.safetensors"))


@pytest.mark.slow
def test_mit67_teacher_without_hub_or_weights_file_names_both_fixes(tmp_path):
    """The recipe's default is timm's ImageNet weights; offline, with nothing cached, the command ends
    in one line that names --weights FILE and --from-scratch."""
    pytest.importorskip("timm", reason="timm (optional) is not installed: pip install timm")
    write_mit67(tmp_path / "mit67", np.random.default_rng(0))  # all 67 classes: data.py refuses fewer
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "th")}
    out = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--arch", "inception_resnet_v2",
                          "--dataset", "mit67", "--data-dir", str(tmp_path / "mit67"), "--split", "final",
                          "--epochs", "1", "--batch-size", "8", "--device", "cpu"], capture_output=True, text=True, env=env)
    assert out.returncode == 1
    err = out.stderr.strip()
    assert "\n" not in err and "Traceback" not in err
    assert "could not be fetched" in err and "--weights FILE" in err and "--from-scratch" in err


def test_resumed_teacher_reads_no_initial_weights(tmp_path):
    """A resumed run takes its weights from the checkpoint: the --weights file, gone by now, is not read,
    and the options recorded for the checkpoint are still those given."""
    pytest.importorskip("timm", reason="timm (optional) is not installed: pip install timm")
    import types
    import train
    save = tmp_path / "teacher.pt"
    save.write_bytes(b"a checkpoint")
    args = train.parser().parse_args(["--arch", "inception_resnet_v2", "--dataset", "mit67", "--weights",
                                      str(tmp_path / "gone.safetensors"), "--save", str(save), "--resume"])
    model, config, _ = train.build_model(args, types.SimpleNamespace(num_classes=67, image_size=224))
    assert config == {"arch": "inception_resnet_v2", "arch_options": {"weights": str(tmp_path / "gone.safetensors")}}
    assert model.get_classifier().out_features == 67


@pytest.mark.parametrize("flags,fragment", [
    (["--arch", "darts", "--weights", "w.safetensors"], "apply to --arch inception_resnet_v2 only"),
    (["--arch", "darts", "--from-scratch"], "apply to --arch inception_resnet_v2 only"),
    (["--arch", "inception_resnet_v2", "--weights", "w.safetensors", "--from-scratch"], "drop one"),
])
def test_teacher_weight_flags_are_checked(flags, fragment, capsys):
    import train
    assert train.main([*flags, "--dataset", "digits", "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_teacher_trained_by_train_py_loads(tmp_path):
    # The README's teacher command at toy size: train.py writes the checkpoint, teachers.load reads it.
    train = pytest.importorskip("train")
    path = tmp_path / "teacher.pt"
    rc = train.main(["--arch", "darts", "--dataset", "digits", "--split", "final", "--width", "4",
                     "--layers", "3", "--epochs", "1", "--batch-size", "256", "--save", str(path)])
    assert rc == 0
    teacher = teachers.load(path, "digits", 10)
    assert not teacher.training and teacher.auxiliary_head is not None
    assert [cell.preprocess1[1].out_channels for cell in teacher.cells] == [4, 8, 16]  # width 4, 3 cells
    with pytest.raises(ValueError, match="trained on digits"):
        teachers.load(path, "cifar10", 10)
