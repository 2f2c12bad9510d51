"""The training study's early-exit model: the exit head reads the trunk where it claims to, and the
W2S objectives train it (gradients reach the exit head exactly when the objective uses it)."""
import torch

from sgg_kernels.demo.training_study import OBJECTIVES, VelocityMLPWithExit
from sgg_kernels.training import OPERANDS


def test_exit_head_reads_the_hidden_activation_after_exit_layer():
    torch.manual_seed(0)
    model = VelocityMLPWithExit(num_classes=3, width=8, layers=4)
    x, t, labels = torch.randn(5, 2), torch.rand(5), torch.randint(0, 4, (5,))
    v, v_mid = model.forward_with_exit(x, t, labels)
    angles = t[:, None] * model.freqs
    h = torch.cat((x, angles.sin(), angles.cos()), 1)
    for i, layer in enumerate(model.hidden[: model.exit_after + 1]):
        h = torch.nn.functional.silu(layer(h) + (model.embed(labels) if i == 0 else 0))
    torch.testing.assert_close(v, model(x, t, labels))
    torch.testing.assert_close(v_mid, model.exit_head(h))


def test_only_objectives_with_the_exit_term_train_the_exit_head():
    torch.manual_seed(0)
    x, u, labels = torch.randn(16, 2), torch.randn(16, 2), torch.randint(0, 3, (16,))
    t = torch.linspace(0.01, 0.99, 16)  # samples in every segment
    for name, loss_fn in OBJECTIVES.items():
        model = VelocityMLPWithExit(num_classes=3, width=8, layers=4)
        v, v_mid = model.forward_with_exit(x, t, labels)
        with torch.no_grad():
            weak = model(x, t, model.null_labels(16))
        operands = {"weak": weak, "mid": v_mid}
        loss_fn(v, u, t, **{k: operands[k] for k in OPERANDS[loss_fn.weak_type]}).backward()
        assert (model.exit_head.weight.grad is not None) == (name == "segmented"), name
