import pytest
import torch

from trainables.models import build_model, list_models
from contract.registry import UnknownEntryError


def test_registry_lists_the_required_models():
    expected = {"resnet20", "resnet32", "resnet56", "resnet110", "resnet18_cifar", "airbench_arch", "small_cnn",
                "resnet18", "resnet50"}
    assert expected <= set(list_models())


def test_no_model_claims_airbench_without_its_recipe():
    """airbench's architecture is registered as ``airbench_arch``: a plain ``airbench`` would promise
    airbench's training recipe (and its speed and accuracy), which this project does not implement."""
    assert "airbench" not in list_models()
    with pytest.raises(UnknownEntryError, match="unknown model 'airbench'.*airbench_arch"):
        build_model("airbench", 10)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("in_channels,size", [(3, 32), (1, 8)])
def test_every_model_forward_and_backward(name, in_channels, size):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=in_channels)
    model.train()
    x = torch.randn(3, in_channels, size, size)
    out = model(x)
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing}"


def test_cnn3_widths_scale_capacity_and_fuse():
    """The cnn3 family has one knob: doubling the width about quadruples the parameters (teacher-capacity
    studies), and every width trains on the fused cohort path."""
    from trainables.fused import arch_fusion_problem

    counts = [sum(p.numel() for p in build_model(f"cnn3_w{w}", 10, 3).parameters()) for w in (8, 16, 32, 64)]
    assert all(3.5 < bigger / smaller < 4.1 for smaller, bigger in zip(counts, counts[1:]))
    assert all(arch_fusion_problem(f"cnn3_w{w}", 10, 3) is None for w in (8, 16, 32, 64))


def test_he_resnet_depths_have_the_right_number_of_blocks():
    for depth in (20, 32, 56, 110):
        model = build_model(f"resnet{depth}", 10, 3)
        convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
        assert convs == depth - 1  # stem + 2 per block; the last layer is the linear head


def test_channels_last_gives_the_same_output():
    model = build_model("resnet20", 10, 3).eval()
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    out = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(ref, out, atol=1e-4)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(UnknownEntryError, match="unknown model 'resnet19'.*resnet20"):
        build_model("resnet19", 10)
