import math

import numpy as np
import pytest
import torch

from conftest import CPU
from trainables.loader import make_loader
from trainables.models import build_model
from trainables.device import autocast_dtype
from contract.recipe import Recipe
from trainables.train import StopTraining, fit, make_optimizer, make_scheduler, prepare_model, train_on_ids


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"epochs": 0}, "epochs"),
        ({"lr": 0}, "lr"),
        ({"schedule": "step"}, "schedule"),
        ({"precision": "fp16"}, "precision"),
        ({"momentum": 0.0}, "nesterov"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
    ],
)
def test_recipe_rejects_bad_values(changes, message):
    with pytest.raises(ValueError, match=message):
        Recipe(**changes)


def test_recipe_round_trips_through_a_dict():
    recipe = Recipe(epochs=7, lr=0.3, schedule="onecycle")
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    with pytest.raises(ValueError, match="unknown recipe fields"):
        Recipe.from_dict({**recipe.to_dict(), "lr_max": 1})


def _lrs(recipe, steps_per_epoch):
    model = torch.nn.Linear(2, 2)
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe, steps_per_epoch)
    lrs = []
    for _ in range(recipe.epochs * steps_per_epoch):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_schedule_with_warmup():
    lrs = _lrs(Recipe(epochs=10, lr=0.2, warmup_epochs=2), steps_per_epoch=5)
    assert lrs[0] == pytest.approx(0.2 / 10)
    assert lrs[9] == pytest.approx(0.2)  # end of warm-up
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # then only down
    assert lrs[-1] < 0.2 * 0.01
    mid = 10 + (50 - 10) // 2
    assert lrs[mid] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 20 / 40)), rel=1e-6)


def test_onecycle_schedule_rises_then_falls():
    lrs = _lrs(Recipe(epochs=4, lr=0.4, schedule="onecycle"), steps_per_epoch=10)
    peak = int(np.argmax(lrs))
    assert 0 < peak < len(lrs) - 1 and max(lrs) == pytest.approx(0.4, rel=1e-3)
    assert lrs[0] < 0.4 / 10 and lrs[-1] < 0.4 / 100


def test_auto_precision_follows_the_hardware():
    from trainables.device import cpu_has_native_bf16

    assert autocast_dtype("fp32", CPU) is None
    assert autocast_dtype("bf16", CPU) is torch.bfloat16
    assert autocast_dtype("auto", CPU) is (torch.bfloat16 if cpu_has_native_bf16() else None)


def _fit(digits, split, recipe, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = prepare_model(build_model("small_cnn", 10, 1), recipe, CPU)
    loader = make_loader(digits, "train", split.train_ids, recipe.batch_size, train=True, device=CPU, seed=seed)
    val = make_loader(digits, "train", split.val_ids, 512, train=False, device=CPU)
    return model, fit(model, loader, recipe, device=CPU, val_loader=val, **kwargs)


def test_fit_reports_every_epoch_and_learns(digits, digits_split, fast_recipe):
    recipe = fast_recipe.replace(epochs=4)
    reports = []
    _, history = _fit(digits, digits_split, recipe, on_epoch=reports.append)
    assert [r.epoch for r in reports] == [1, 2, 3, 4] and reports == history
    assert all(r.val_acc is not None and 0 <= r.val_acc <= 1 for r in history)
    assert history[-1].train_loss < history[0].train_loss
    assert history[-1].val_acc > 0.8


def test_stop_training_from_a_callback(digits, digits_split, fast_recipe):
    def stop_after_two(report):
        if report.epoch == 2:
            raise StopTraining

    _, history = _fit(digits, digits_split, fast_recipe, on_epoch=stop_after_two)
    assert len(history) == 2


def test_on_step_sees_ids_and_logits(digits, digits_split, fast_recipe):
    seen = []
    _fit(digits, digits_split, fast_recipe.replace(epochs=1), on_step=lambda b, logits: seen.append((b.ids, logits)))
    ids = torch.cat([i for i, _ in seen]).numpy()
    assert np.array_equal(np.sort(ids), digits_split.train_ids)
    assert all(logits.shape == (len(i), 10) and not logits.requires_grad for i, logits in seen)


def test_same_seed_same_model_other_seed_other_model(digits, digits_split, fast_recipe):
    recipe = fast_recipe.replace(epochs=2)
    a, _ = _fit(digits, digits_split, recipe, seed=3)
    b, _ = _fit(digits, digits_split, recipe, seed=3)
    c, _ = _fit(digits, digits_split, recipe, seed=4)
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.state_dict().values(), c.state_dict().values()))


def test_bf16_autocast_trains(digits, digits_split, fast_recipe):
    run = train_on_ids(
        digits, arch="small_cnn", train_ids=digits_split.train_ids, val_ids=digits_split.val_ids,
        recipe=fast_recipe.replace(epochs=3, precision="bf16"), seed=0, device=CPU,
    )
    assert run.val.acc > 0.8 and run.test.n == 360


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_resumed_training_matches_an_uninterrupted_run(digits, digits_split, fast_recipe, schedule, tmp_path):
    recipe = fast_recipe.replace(epochs=4, schedule=schedule)
    full, full_history = _fit(digits, digits_split, recipe, seed=2)

    saved = {}

    def stop_after_two(report):
        if report.epoch == 2:
            torch.save(report.state(), tmp_path / "state.pt")  # as a checkpoint would
            raise StopTraining

    _fit(digits, digits_split, recipe, seed=2, on_epoch=stop_after_two)
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["epoch"] == 2 and len(state["members"][0]["history"]) == 2  # the one resume format
    resumed, history = _fit(digits, digits_split, recipe, seed=2, resume=state)
    assert [r.epoch for r in history] == [1, 2, 3, 4]
    assert history[-1].val_acc == full_history[-1].val_acc
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_min_steps_gives_a_small_subset_more_epochs_and_a_schedule_over_all_of_them(digits, digits_split, fast_recipe):
    """f = 0.1 of digits is 2 batches per epoch: 1 epoch would be 2 steps; min_steps = 11 makes it 6 epochs
    (12 steps), and the cosine schedule runs to zero over those 12 steps, not over 2."""
    recipe = fast_recipe.replace(epochs=1, batch_size=64, min_steps=11)
    subset = digits_split.train_ids[:100]
    assert recipe.epochs_for(2) == 6 and recipe.epochs_for(50) == 1 and recipe.replace(min_steps=0).epochs_for(2) == 1
    lrs, steps = [], []
    run = train_on_ids(digits, arch="small_cnn", train_ids=subset, val_ids=digits_split.val_ids, recipe=recipe, seed=0,
                       device=CPU, test=False, on_step=lambda batch, logits: steps.append(len(batch.y)),
                       on_epoch=lambda report: lrs.append(report.lr))
    assert [report.epoch for report in run.history] == [1, 2, 3, 4, 5, 6]
    assert {report.epochs for report in run.history} == {6}
    assert len(steps) == 12 and sum(steps) == 6 * len(subset)
    assert lrs[0] > 0.5 * recipe.lr and lrs[-1] < 1e-3 * recipe.lr  # one schedule over the 12 steps
    with pytest.raises(ValueError, match="min_steps"):
        Recipe(min_steps=-1)
