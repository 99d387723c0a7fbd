"""Same seed, same numbers on CPU; an interrupted run resumed from its checkpoint ends where a straight one does."""

import pytest
import torch
from conftest import make_mnist_root

from model import Net
from utils import (
    fit,
    get_data_loaders,
    get_recipe,
    grad_scaler,
    load_checkpoint,
    make_optimizer,
    make_scheduler,
    new_history,
    set_seed,
)


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    """256 synthetic training images and 64 test images: 4 batches of 64 an epoch."""
    return make_mnist_root(tmp_path_factory.mktemp("small"), 256, 64)


def start(root, pipeline="fast", schedule="step", seed=0, optimizer="sgd"):
    lr = 0.003 if optimizer == "adam" else 0.02
    step_size = 2 if schedule == "step" else None  # StepLR's; a OneCycle recipe refuses it
    recipe = get_recipe("s5", epochs=4, batch_size=64, step_size=step_size, schedule=schedule, lr=lr,
                        optimizer=optimizer)
    set_seed(seed)
    train_loader, test_loader = get_data_loaders(recipe.batch_size, root, "cpu", pipeline, seed=seed)
    model = Net()
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe, len(train_loader))
    return model, optimizer, scheduler, train_loader, test_loader


def metrics(history):
    return {key: values for key, values in history.items() if key != "seconds"}


@pytest.mark.parametrize("pipeline", ["fast", "s5"])
def test_same_seed_gives_identical_metrics(small_root, pipeline):
    runs = []
    for _ in range(2):
        model, optimizer, scheduler, train_loader, test_loader = start(small_root, pipeline)
        runs.append(fit(model, "cpu", train_loader, test_loader, optimizer, scheduler, 2))
    assert metrics(runs[0]) == metrics(runs[1])
    model, optimizer, scheduler, train_loader, test_loader = start(small_root, pipeline, seed=1)
    other = fit(model, "cpu", train_loader, test_loader, optimizer, scheduler, 1)  # one epoch tells
    assert metrics(other)["train_loss"][0] != metrics(runs[0])["train_loss"][0]


@pytest.mark.parametrize("schedule, opt", [("step", "sgd"), ("onecycle", "sgd"), ("onecycle", "adam")])
def test_resume_matches_a_straight_run(small_root, tmp_path, schedule, opt):
    model, optimizer, scheduler, train_loader, test_loader = start(small_root, schedule=schedule, optimizer=opt)
    straight = fit(model, "cpu", train_loader, test_loader, optimizer, scheduler, 4)
    straight_weights = model.state_dict()

    model, optimizer, scheduler, train_loader, test_loader = start(small_root, schedule=schedule, optimizer=opt)
    fit(model, "cpu", train_loader, test_loader, optimizer, scheduler, 2, checkpoint_path=tmp_path / "last.pt")

    model, optimizer, scheduler, train_loader, test_loader = start(small_root, schedule=schedule, optimizer=opt)
    torch.manual_seed(123)  # disturb the global RNG: the checkpoint must restore what matters
    done, history = load_checkpoint(tmp_path / "last.pt", model, optimizer, scheduler)
    assert done == 2 and len(history["epoch"]) == 2
    resumed = fit(model, "cpu", train_loader, test_loader, optimizer, scheduler, 4, history=history,
                  start_epoch=done + 1)
    assert metrics(resumed) == metrics(straight)
    assert straight["lr"][0] != straight["lr"][-1]
    for key, value in model.state_dict().items():
        assert torch.equal(value, straight_weights[key]), key


def test_best_checkpoint_holds_the_best_epoch(small_root, tmp_path):
    model, optimizer, scheduler, train_loader, test_loader = start(small_root)
    history = new_history()
    fit(model, "cpu", train_loader, test_loader, optimizer, scheduler, 3, history=history,
        best_path=tmp_path / "best.pt")
    best_epoch = history["epoch"][history["test_acc"].index(max(history["test_acc"]))]
    assert load_checkpoint(tmp_path / "best.pt", Net())[0] == best_epoch


def test_fp16_with_its_gradient_scaler_resumes_exactly(tmp_path):
    """fp16 autocast and a GradScaler (on the CPU too, in current torch): the scaler's state is saved, and a
    resumed run ends where a straight one does."""
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 1, 28, 28, generator=g), torch.randint(0, 10, (4,), generator=g)) for _ in range(3)]

    def fp16_run():
        torch.manual_seed(0)
        model = Net()
        optimizer = make_optimizer(model, get_recipe("s5"))
        # A scale that grows every 2 steps: by the resume it is far from its start, so a lost state shows.
        scaler = torch.amp.GradScaler("cpu", growth_interval=2)
        return model, optimizer, make_scheduler(optimizer, get_recipe("s5")), scaler

    model, optimizer, scheduler, scaler = fp16_run()
    straight = fit(model, "cpu", batches, batches, optimizer, scheduler, 4, precision="fp16", scaler=scaler)
    straight_scale = scaler.get_scale()

    model, optimizer, scheduler, scaler = fp16_run()
    fit(model, "cpu", batches, batches, optimizer, scheduler, 2, precision="fp16", scaler=scaler,
        checkpoint_path=tmp_path / "last.pt")
    model, optimizer, scheduler, scaler = fp16_run()
    done, history = load_checkpoint(tmp_path / "last.pt", model, optimizer, scheduler, scaler)
    saved_scale = torch.load(tmp_path / "last.pt", weights_only=True)["scaler"]["scale"]
    assert scaler.get_scale() == saved_scale != 65536.0
    resumed = fit(model, "cpu", batches, batches, optimizer, scheduler, 4, history=history, start_epoch=done + 1,
                  precision="fp16", scaler=scaler)
    assert metrics(resumed) == metrics(straight) and scaler.get_scale() == straight_scale
    assert grad_scaler("fp32", "cpu") is None and grad_scaler("auto", "cpu") is None
    assert isinstance(grad_scaler("fp16", "cpu"), torch.amp.GradScaler)
