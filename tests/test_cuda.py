"""The CUDA path: the same data, training and checkpoints as on the CPU. Skipped without a GPU."""

import copy
import warnings

import pytest
import torch
from conftest import new_run, synthetic_digits

import utils
from model import Net

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_device_loader_gives_the_cpu_batches_on_the_gpu(mnist_root):
    cpu_loader, _ = utils.get_data_loaders(64, mnist_root, "cpu", seed=3)
    gpu_loader, _ = utils.get_data_loaders(64, mnist_root, "cuda", seed=3)
    for (cpu_images, cpu_labels), (gpu_images, gpu_labels) in zip(cpu_loader, gpu_loader, strict=True):
        assert gpu_images.is_cuda and gpu_labels.is_cuda
        assert torch.equal(gpu_labels.cpu(), cpu_labels)
        # Same draws, same warps; only a pixel whose source lies on a rounding boundary may differ.
        differ = (gpu_images.cpu() - cpu_images).abs() > 1e-4
        assert differ.float().mean() < 0.002


@pytest.mark.parametrize("precision", ["auto", "fp16"])  # auto: bf16 where native (H100), fp16 on a T4
def test_one_batch_overfits_on_the_gpu(precision):
    torch.manual_seed(0)
    images, labels = synthetic_digits(32, seed=0)
    batch = (utils.normalize(images.float().div(255).unsqueeze(1)), labels)  # on the CPU: train moves it
    model = Net().cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    first, _ = utils.test(model, "cuda", [batch], precision=precision)
    scaler = utils.grad_scaler(precision, "cuda")
    assert (scaler is not None) == (precision == "fp16" or utils.autocast_dtype("cuda") == torch.float16)
    utils.train(model, "cuda", [batch] * 60, optimizer, precision=precision, scaler=scaler)
    final, final_acc = utils.test(model, "cuda", [batch], precision=precision)
    assert first > 2.0 and final < 0.05 and final_acc == 100.0, (first, final)
    assert all(p.dtype == torch.float32 and p.is_cuda for p in model.parameters())


def test_gpu_and_cpu_agree_on_the_same_weights(mnist_root):
    model, _, _ = new_run(0)
    _, test_loader = utils.get_data_loaders(64, mnist_root, "cpu")
    cpu_loss, cpu_acc = utils.test(model, "cpu", test_loader, precision="fp32")
    gpu_loss, gpu_acc = utils.test(model.cuda(), "cuda", test_loader, precision="fp32")
    assert gpu_loss == pytest.approx(cpu_loss, rel=1e-3)  # TF32 convolutions on the GPU
    assert abs(gpu_acc - cpu_acc) <= 100 / 128  # at most one of the 128 images decided otherwise


def test_a_gpu_checkpoint_resumes_on_the_cpu(tmp_path, mnist_root):
    model, optimizer, scheduler = new_run(0)
    model.cuda()
    train_loader, test_loader = utils.get_data_loaders(64, mnist_root, "cuda")
    utils.fit(model, "cuda", train_loader, test_loader, optimizer, scheduler, 1, checkpoint_path=tmp_path / "last.pt")
    cpu_model, cpu_optimizer, cpu_scheduler = new_run(1)
    epoch, history = utils.load_checkpoint(tmp_path / "last.pt", cpu_model, cpu_optimizer, cpu_scheduler)
    assert epoch == 1 and len(history["test_acc"]) == 1
    for a, b in zip(model.state_dict().values(), cpu_model.state_dict().values(), strict=True):
        assert torch.equal(a.cpu(), b)
    momentum = cpu_optimizer.state_dict()["state"][0]["momentum_buffer"]
    assert momentum.device.type == "cpu" and momentum.abs().sum() > 0


@pytest.mark.parametrize("precision", ["auto", "fp16"])  # fp16: the scaler steps outside the graphs
def test_a_step_replayed_as_cuda_graphs_trains_as_the_eager_one(mnist_root, precision):
    torch.compiler.reset()  # captures of earlier tests count towards torch's limit of 8 per function
    histories = {}
    for mode in ("off", "cudagraphs"):
        model, optimizer, scheduler = new_run(0)
        model.cuda()
        train_loader, test_loader = utils.get_data_loaders(96, mnist_root, "cuda", seed=1)  # last batch: 32
        step = {"precision": precision, "compile_mode": mode, "scaler": utils.grad_scaler(precision, "cuda")}
        history = utils.fit(model, "cuda", train_loader, test_loader, optimizer, scheduler, 1, **step)
        # Every shape was captured in epoch 1: a new capture in epochs 2-3 is an error.
        with torch.compiler.set_stance("fail_on_recompile"):
            histories[mode] = utils.fit(model, "cuda", train_loader, test_loader, optimizer, scheduler, 3,
                                        history=history, start_epoch=2, **step)
    assert histories["cudagraphs"]["train_loss"] == pytest.approx(histories["off"]["train_loss"], rel=0.02)
    assert histories["cudagraphs"]["test_acc"][-1] == pytest.approx(histories["off"]["test_acc"][-1], abs=2)


@pytest.mark.parametrize("precision", ["auto", "fp16"])  # fp16: the scaler steps outside the graphs
def test_a_graphed_step_trains_as_the_eager_one_capturing_each_shape_once(mnist_root, precision, monkeypatch):
    captured = []
    capture = torch.cuda.make_graphed_callables

    def counting(module, sample_args, **kwargs):
        captured.append(tuple(sample_args[0].shape))
        return capture(module, sample_args, **kwargs)

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", counting)
    histories = {}
    for mode in ("off", "auto"):  # auto, the default: graphed for the Net on CUDA
        model, optimizer, scheduler = new_run(0)
        model.cuda()
        train_loader, test_loader = utils.get_data_loaders(96, mnist_root, "cuda", seed=1)  # last batch: 32
        step = {"precision": precision, "compile_mode": mode, "scaler": utils.grad_scaler(precision, "cuda")}
        with warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("always")
            histories[mode] = utils.fit(model, "cuda", train_loader, test_loader, optimizer, scheduler, 3, **step)
        assert not [w for w in shown if "AccumulateGrad" in str(w.message)]  # torch's stream warning: silenced
    assert captured == [(96, 1, 28, 28), (32, 1, 28, 28)]  # each training shape once in 3 epochs
    assert histories["auto"]["train_loss"] == pytest.approx(histories["off"]["train_loss"], rel=0.02)
    assert histories["auto"]["test_acc"][-1] == pytest.approx(histories["off"]["test_acc"][-1], abs=2)
    # A copy starts without the original's graphs; weights moved to new memory are captured again.
    twin = copy.deepcopy(model)
    model.cpu().cuda()
    for net in (twin, model):
        before = utils.test(net, "cuda", test_loader, precision=precision)[0]
        utils.train(net, "cuda", train_loader, optimizer if net is model else torch.optim.SGD(net.parameters(), 0.01),
                    precision=precision, compile_mode="graphed")
        assert utils.test(net, "cuda", test_loader, precision=precision)[0] < before * 1.05
    assert len(captured) == 6
