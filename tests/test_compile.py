"""The captured step (compile_mode): the same training as eager, one capture per batch shape, made once.

On the CPU "cudagraphs" runs torch.compile's captured graphs eagerly; tests/test_cuda.py replays them as
CUDA graphs."""

import pytest
import torch
from conftest import new_run

import utils
from model import Net


def run(mnist_root, compile_mode, epochs, checkpoint_path=None, resume=None):
    """The S5 recipe on the synthetic set in batches of 96 (512 = 5 x 96 + 32: a smaller last batch)."""
    model, optimizer, scheduler = new_run(0)
    history, start = None, 1
    if resume:
        start, history = utils.load_checkpoint(resume, model, optimizer, scheduler)
        start += 1
    train_loader, test_loader = utils.get_data_loaders(96, mnist_root, "cpu", seed=1)
    history = utils.fit(model, "cpu", train_loader, test_loader, optimizer, scheduler, epochs, history=history,
                        start_epoch=start, precision="fp32", compile_mode=compile_mode,
                        checkpoint_path=checkpoint_path)
    return model, history


def test_a_captured_run_trains_as_the_eager_one_and_captures_each_shape_once(mnist_root, tmp_path):
    torch.compiler.reset()  # captures of earlier tests count towards torch's limit of 8 per function
    eager, eager_history = run(mnist_root, "off", 3)
    run(mnist_root, "cudagraphs", 1, checkpoint_path=tmp_path / "last.pt")
    # Epochs 2-3, resumed from the checkpoint: every batch shape (96, 32; training and test) was captured
    # in epoch 1, so any new capture now is an error.
    with torch.compiler.set_stance("fail_on_recompile"):
        captured, history = run(mnist_root, "cudagraphs", 3, tmp_path / "last.pt", resume=tmp_path / "last.pt")
    assert history["epoch"] == [1, 2, 3]
    assert history["train_loss"] == pytest.approx(eager_history["train_loss"], rel=1e-3)
    assert history["test_loss"] == pytest.approx(eager_history["test_loss"], rel=1e-3)
    for a, b in zip(eager.parameters(), captured.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    # The checkpoint holds the Net's own weights, loadable without torch.compile.
    utils.load_checkpoint(tmp_path / "last.pt", Net())


def test_an_unknown_or_impossible_compile_mode_is_refused_before_training():
    model, optimizer, _ = new_run(0)
    before = [p.detach().clone() for p in model.parameters()]
    batch = (torch.randn(4, 1, 28, 28), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="compile mode must be 'auto', 'off', 'graphed', 'cudagraphs' or "
                                         "'reduce-overhead', got 'max'"):
        utils.train(model, "cpu", [batch], optimizer, compile_mode="max")
    with pytest.raises(ValueError, match="compile mode 'graphed' replays CUDA graphs and needs a CUDA device, got "
                                         "cpu; use compile mode 'off'"):
        utils.train(model, "cpu", [batch], optimizer, compile_mode="graphed")
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_auto_replays_only_the_net_on_cuda_and_never_with_hooks():
    net = Net()
    assert utils.compile_model(net, "cpu", "auto") is net  # eager: nothing to replay on a CPU
    assert utils.compile_model(net, "cuda", "auto") is not net  # graphed (captured at the first training batch)
    # A replay skips the forward's Python: a learner's own model, or hooks collecting activations, stay eager.
    own = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10), torch.nn.LogSoftmax(dim=1))
    assert utils.compile_model(own, "cuda", "auto") is own
    assert utils.compile_model(own, "cuda", "graphed") is not own  # asked for by name: the user's call
    seen = []
    net.conv2.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    assert utils.compile_model(net, "cuda", "auto") is net
