"""The fused path (trainables.fused): K members as one horizontally fused model, equal to the loop."""

import copy
from collections import defaultdict

import pytest
import torch

from conftest import CPU
from trainables.cohort import Halving, Member, fused_by_default, train_cohort
from trainables.fused import arch_fusion_problem, fuse, unfuse
from trainables.kd import kd_loss
from trainables import models as _models
from trainables.models import build_model
from trainables.selection import random_subset
from trainables.train import StopTraining

MEMBERS = [Member(0.0), Member(0.5), Member(1.0, tau=2.0), Member(0.3, tau=1.0)]  # alpha 0 and 1, three taus


@pytest.fixture(scope="module")
def subset(digits_split):
    return random_subset(digits_split.train_ids, 0.1, seed=0)  # 129 examples: 3 steps per epoch


def _cohort(digits, digits_split, digits_teacher, recipe, subset, members, fused, **kwargs):
    kwargs.setdefault("seed", 5)
    result = train_cohort(digits, subset, arch="small_cnn", recipe=recipe, split=digits_split, teacher=digits_teacher,
                          members=members, device=CPU, fused=fused, **kwargs)
    assert fused is None or result.fused == fused
    return result


def _max_diff(a, b):
    pairs = zip(a.state_dict().values(), b.state_dict().values())
    return max((x.double() - y.double()).abs().max().item() for x, y in pairs)


# After epochs of SGD the two paths differ by fp32 summation order only (a grouped convolution and K
# separate ones reduce in another order, and which order depends on the CPU's oneDNN kernels), which
# training amplifies: 2e-4 in the weights and 3e-5 in a loss on an AMD EPYC, 1e-6 elsewhere. One
# forward and backward pass, where nothing amplifies it, is compared at 1e-5 and 1e-4
# (test_fused_model_computes_the_members).
TRAINED_WEIGHTS_ATOL = 1e-3
TRAINED_LOSS_RTOL = 1e-4


def _assert_same_results(a, b, *, weights_atol=TRAINED_WEIGHTS_ATOL, resumed=False):
    """The same members' results, to float tolerance (accuracies: within one example)."""
    assert (a.epochs, a.steps_per_epoch) == (b.epochs, b.steps_per_epoch)
    if not resumed:  # teacher_forwards counts this call's
        assert a.teacher_forwards == b.teacher_forwards
    for x, y in zip(a.members, b.members):
        assert (x.status, x.epochs_run, x.steps_run, x.stopped_epoch, x.stop_reason) == (
            y.status, y.epochs_run, y.steps_run, y.stopped_epoch, y.stop_reason)
        assert x.val_acc == pytest.approx(y.val_acc, abs=0.008)
        assert (x.test_acc is None and y.test_acc is None) or x.test_acc == pytest.approx(y.test_acc, abs=0.003)
        assert [h["train_loss"] for h in x.history] == pytest.approx([h["train_loss"] for h in y.history], rel=TRAINED_LOSS_RTOL)
        assert [h["lr"] for h in x.history] == pytest.approx([h["lr"] for h in y.history], rel=1e-12)
    for x, y in zip(a.models, b.models):
        assert _max_diff(x, y) < weights_atol


def _tiny(name):
    """Each supported kind of model, at small widths (the registered ones are tested by name below)."""
    if name == "small_cnn":
        return build_model("small_cnn", 10, 1)
    if name == "resnet_zero_pad":  # resnet20's blocks: identity and option-A (zero-padding) shortcuts
        return _models.CifarResNet((4, 8, 16), (2, 1, 1), 10, 3, shortcut="zero_pad")
    if name == "resnet_projection":  # resnet18_cifar's blocks: 1x1 convolution + BN shortcuts
        return _models.CifarResNet((4, 8), (1, 2), 10, 3, shortcut="projection")
    return _models.AirbenchArch(10, 3, widths=(8, 16, 16))


@pytest.mark.parametrize("name", ["small_cnn", "resnet_zero_pad", "resnet_projection", "airbench"])
def test_fused_model_computes_the_members(name):
    """Logits (train and eval mode), gradients and state of K different models, fused and apart."""
    torch.manual_seed(0)
    models = [_tiny(name) for _ in range(3)]  # different weights
    in_channels = 1 if name == "small_cnn" else 3
    for model in models:  # non-trivial BN statistics
        model.train()(torch.randn(8, in_channels, 8, 8))
    fused = fuse([copy.deepcopy(m) for m in models])
    assert [s.keys() for s in unfuse(fused)] == [m.state_dict().keys() for m in models]
    assert max(_max_diff(m, build_from(m, s)) for m, s in zip(models, unfuse(fused))) == 0
    x = torch.randn(6, in_channels, 8, 8)
    for train in (True, False):
        fused.train(train)
        for model in models:
            model.train(train)
        logits = fused(x)
        assert logits.shape == (6, len(models), 10)
        torch.testing.assert_close(logits, torch.stack([m(x) for m in models], 1), rtol=1e-5, atol=1e-5)
    fused.train()
    fused.zero_grad()
    (fused(x) * torch.arange(1.0, len(models) + 1)[:, None]).square().sum().backward()  # a loss per member
    for i, model in enumerate(models):
        model.train().zero_grad()
        ((i + 1) * model(x)).square().sum().backward()
        for param_name, param in model.named_parameters():
            grad = fused.split(param_name, fused.model.get_parameter(param_name).grad)[i]
            torch.testing.assert_close(grad, param.grad, rtol=1e-4, atol=1e-4 * param.grad.abs().max().item())
    # the train-mode forwards above moved the fused BN statistics as they moved each member's
    zeros = {k: torch.zeros_like(v) for k, v in models[0].state_dict().items()}
    targets = [build_from(models[0], zeros) for _ in models]
    fused.store_into(targets)
    assert max(_max_diff(m, t) for m, t in zip(models, targets)) < 1e-5


@pytest.mark.parametrize("arch", ["small_cnn", "resnet20", "resnet56", "resnet18_cifar", "airbench_arch"])
def test_the_supported_architectures(arch):
    assert arch_fusion_problem(arch, 10, 3) is None


def build_from(model, state):
    other = copy.deepcopy(model)
    other.load_state_dict(state)
    return other


def test_unsupported_architectures_are_refused_clearly_and_the_cohort_falls_back(digits, digits_split, fast_recipe,
                                                                                 subset, monkeypatch):
    assert arch_fusion_problem("small_cnn", 10, 1) is None
    problem = arch_fusion_problem("resnet18", 10, 3)
    assert "resnet18" in problem and "torchvision.models.resnet.ResNet" in problem
    with torch.device("meta"):
        models = [build_model("resnet18", 10, 3) for _ in range(2)]
    with pytest.raises(NotImplementedError, match="does not support torchvision"):
        fuse(models)
    with pytest.raises(NotImplementedError, match="does not support"):
        fuse([torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.LayerNorm(4))])
    # fused=True with an architecture it cannot fuse (here: said to be so): the loop trains it
    import trainables.cohort

    monkeypatch.setattr(trainables.cohort, "arch_fusion_problem", lambda *args: "small_cnn: not fusable")
    result = train_cohort(digits, subset, arch="small_cnn", recipe=fast_recipe.replace(epochs=1), split=digits_split,
                          teacher=None, members=[Member(0.0), Member(0.0, tau=2.0)], seed=0, device=CPU, fused=True,
                          test=False)
    assert result.fused is False and [m.status for m in result.members] == ["completed"] * 2
    monkeypatch.undo()
    # the default: fused on CUDA from two members up, never for a cohort of one; the loop on the CPU
    assert fused_by_default(torch.device("cuda"), 2) and not fused_by_default(torch.device("cuda"), 1)
    assert not fused_by_default(CPU, 8)
    assert _cohort(digits, digits_split, None, fast_recipe.replace(epochs=1), subset, [Member(0.0)] * 2, None,
                   test=False).fused is fused_by_default(CPU, 2)


def test_fused_training_equals_the_loop(digits, digits_split, digits_teacher, fast_recipe, subset):
    """Same members, same batches: parameters, logits, losses, accuracies and counts agree (fp32)."""
    recipe = fast_recipe.replace(epochs=3, label_smoothing=0.1)
    steps = {}
    results = {}
    for fused in (False, True):
        calls = defaultdict(list)  # member -> [(batch, logits)]
        results[fused] = _cohort(digits, digits_split, digits_teacher, recipe, subset, MEMBERS, fused,
                                 on_step=lambda i, batch, logits, calls=calls: calls[i].append((batch, logits.clone())))
        steps[fused] = calls
    _assert_same_results(results[False], results[True])
    per_epoch = results[True].steps_per_epoch
    assert results[True].teacher_forwards == 3 * per_epoch  # one per batch, shared by the alpha > 0 members
    for i in range(len(MEMBERS)):
        loop, fused = steps[False][i], steps[True][i]
        assert len(loop) == len(fused) == 3 * per_epoch
        assert all(torch.equal(a[0].ids, b[0].ids) for a, b in zip(loop, fused))  # the same batches, in order
        assert fused[0][1].shape == (len(fused[0][0].y), digits.num_classes)
        for (_, a), (_, b) in zip(loop, fused):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    # the members' logits on held-out images, after training
    x = torch.from_numpy(digits.x_test[:32]).permute(0, 3, 1, 2).float() / 16
    for a, b in zip(results[False].models, results[True].models):
        torch.testing.assert_close(b(x), a(x), rtol=1e-3, atol=TRAINED_WEIGHTS_ATOL)
    # one member fused alone is the same student as well
    alone = _cohort(digits, digits_split, digits_teacher, recipe, subset, MEMBERS[1:2], True)
    assert _max_diff(alone.models[0], results[False].models[1]) < 1e-5


@pytest.mark.parametrize("first, then", [(True, False), (False, True)])
def test_checkpoints_move_between_the_paths(digits, digits_split, digits_teacher, fast_recipe, subset, tmp_path,
                                            first, then):
    """One epoch on one path, checkpointed, resumed on the other: an uninterrupted run's results."""
    recipe = fast_recipe.replace(epochs=3, schedule="onecycle")
    full = _cohort(digits, digits_split, digits_teacher, recipe, subset, MEMBERS, False)

    def stop_after_one(report):
        if report.epoch == 1:
            torch.save(report.state(), tmp_path / "cohort.pt")
            raise StopTraining

    _cohort(digits, digits_split, digits_teacher, recipe, subset, MEMBERS, first, on_report=stop_after_one, test=False)
    state = torch.load(tmp_path / "cohort.pt", weights_only=True)
    # the same format whichever path wrote it: a member's model, momentum buffers and schedule
    member = state["members"][1]
    reference = full.models[1].state_dict()
    assert {k: v.shape for k, v in member["model"].items()} == {k: v.shape for k, v in reference.items()}
    params = list(full.models[1].parameters())
    buffers = member["optimizer"]["state"]
    assert sorted(buffers) == list(range(len(params)))
    assert all(buffers[j]["momentum_buffer"].shape == p.shape for j, p in enumerate(params))
    assert member["scheduler"]["last_epoch"] == full.steps_per_epoch
    resumed = _cohort(digits, digits_split, digits_teacher, recipe, subset, MEMBERS, then, resume=state)
    _assert_same_results(full, resumed, resumed=True)


def test_halving_in_the_fused_path_stops_members_as_the_loop_does(digits, digits_split, digits_teacher, fast_recipe,
                                                                  subset):
    members = [Member(0.0), Member(0.2), Member(0.4), Member(0.6), Member(0.8), Member(1.0)]
    halving = Halving(rungs=(0.25, 0.5), keep=0.5)  # after epochs 1 and 2: 5 candidates -> 3 -> 2
    runs = {}
    for fused in (False, True):
        trained = defaultdict(set)
        epoch = {"now": 1}

        def on_report(report, epoch=epoch):
            epoch["now"] = report.epoch + 1

        result = _cohort(digits, digits_split, digits_teacher, fast_recipe.replace(epochs=4), subset, members, fused,
                         halving=halving, on_report=on_report, test=False,
                         on_step=lambda i, batch, logits, trained=trained, epoch=epoch: trained[i].add(epoch["now"]))
        runs[fused] = (result, trained)
    (loop, loop_trained), (fused, fused_trained) = runs[False], runs[True]
    assert sorted((m.status, m.stopped_epoch) for m in fused.members) == [
        ("completed", None)] * 3 + [("stopped", 1), ("stopped", 1), ("stopped", 2)]
    _assert_same_results(loop, fused)  # the same members stopped, with the same final weights
    assert fused_trained == loop_trained  # a stopped member takes no step after its rung
    for m in fused.members:
        assert fused_trained[m.index] == set(range(1, m.epochs_run + 1))


def test_bf16_and_a_custom_loss_run_fused(digits, digits_split, digits_teacher, fast_recipe, subset):
    """bf16 autocast (the recipe's precision) and a loss other than kd_loss: close to the loop."""
    seen = []

    def loss(logits, teacher_logits, y, alpha, tau, **kwargs):
        seen.append(logits.dtype)
        return kd_loss(logits, teacher_logits, y, alpha, tau, **kwargs)

    recipe = fast_recipe.replace(epochs=1, precision="bf16")
    loop = _cohort(digits, digits_split, digits_teacher, recipe, subset, MEMBERS[:2], False, loss=loss, test=False)
    fused = _cohort(digits, digits_split, digits_teacher, recipe, subset, MEMBERS[:2], True, loss=loss, test=False)
    assert set(seen) == {torch.bfloat16}
    for a, b in zip(loop.members, fused.members):
        assert a.history[0]["train_loss"] == pytest.approx(b.history[0]["train_loss"], rel=0.02)
    assert max(_max_diff(a, b) for a, b in zip(loop.models, fused.models)) < 0.05
