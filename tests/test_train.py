import math
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import ROOT, synthetic_digits
from torch.utils.data import DataLoader, TensorDataset

import utils
from model import Net

# Ten samples whose "images" are already log-probabilities; nn.LogSoftmax leaves them as they are.
LOGITS = [[math.log(p) for p in row] for row in (
    [0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.25, 0.25], [0.2, 0.2, 0.6],
    [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.25, 0.5, 0.25], [0.9, 0.05, 0.05], [0.4, 0.4, 0.2],
)]
TARGETS = [0, 1, 1, 0, 2, 2, 2, 0, 0, 1]


def hand_loader(batch_size):
    return DataLoader(TensorDataset(torch.tensor(LOGITS), torch.tensor(TARGETS)), batch_size=batch_size)


def test_test_returns_the_exact_per_sample_mean():
    # Batches of 4, 4, 2: a mean of batch means would be wrong here.
    expected_loss = sum(-LOGITS[i][t] for i, t in enumerate(TARGETS)) / 10
    correct = [1, 1, 0, 1, 1, 0, 1, 0, 1, 0]  # argmax of each row vs its target; ties go to the first
    loss, acc = utils.test(nn.LogSoftmax(dim=1), "cpu", hand_loader(4))
    assert type(loss) is float and type(acc) is float
    assert loss == pytest.approx(expected_loss, abs=1e-6)
    assert acc == pytest.approx(100 * sum(correct) / 10)


def test_train_with_zero_learning_rate_reports_what_test_does():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.LogSoftmax(dim=1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    train_result = utils.train(model, "cpu", hand_loader(3), optimizer, precision="fp32")
    test_result = utils.test(model, "cpu", hand_loader(10), precision="fp32")
    assert train_result == pytest.approx(test_result, abs=1e-6)
    assert model.training is False  # test() switched to eval mode


def test_train_and_test_accept_a_plain_tensor_dataset_loader():
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(40, 1, 28, 28), torch.randint(0, 10, (40,)))
    model = Net()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss, acc = utils.train(model, "cpu", DataLoader(data, batch_size=16, shuffle=True), optimizer)
    assert math.isfinite(loss) and 0 <= acc <= 100
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    loss, acc = utils.test(model, "cpu", DataLoader(data, batch_size=16))
    assert math.isfinite(loss) and 0 <= acc <= 100


def test_one_batch_overfits():
    torch.manual_seed(0)
    images, labels = synthetic_digits(32, seed=0)
    batch = (utils.normalize(images.float().div(255).unsqueeze(1)), labels)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)  # the S5 recipe's
    first, _ = utils.test(model, "cpu", [batch])
    utils.train(model, "cpu", [batch] * 60, optimizer)
    final, final_acc = utils.test(model, "cpu", [batch])
    assert first > 2.0 and final < 0.05 and final_acc == 100.0, (first, final)


def test_nan_loss_stops_training_naming_epoch_and_batch():
    batches = [(torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))) for _ in range(5)]
    batches[2][0][0, 0, 0, 0] = float("nan")
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(FloatingPointError, match="loss became nan in epoch 7, batch 3"):
        utils.train(model, "cpu", batches, optimizer, epoch=7)


def test_a_criterion_of_the_users_own():
    batch = (torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))
    loss, _ = utils.test(Net(), "cpu", [batch], criterion=lambda out, y: F.nll_loss(out, y) * 0)
    assert loss == 0.0


def test_label_smoothing_spreads_the_target_over_all_classes():
    log_probs, targets = torch.tensor(LOGITS), torch.tensor(TARGETS)
    nll = -log_probs[range(10), targets]
    for smoothing in (0.0, 0.1, 0.3):
        criterion = utils.make_criterion(utils.get_recipe("onecycle", label_smoothing=smoothing))
        # (1 - e) of the target's log-probability, e spread evenly over the 3 classes
        expected = ((1 - smoothing) * nll - smoothing * log_probs.mean(dim=1)).mean()
        assert criterion(log_probs, targets).item() == pytest.approx(expected.item(), abs=1e-6)
    assert utils.make_criterion(utils.get_recipe("s5")) is F.nll_loss


def test_optimizers_take_the_recipes_weight_decay():
    for name, kind in (("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)):
        optimizer = utils.make_optimizer(Net(), utils.get_recipe("s5", optimizer=name, weight_decay=0.02))
        assert type(optimizer) is kind and optimizer.param_groups[0]["weight_decay"] == 0.02


def test_fit_calls_on_epoch_after_each_epoch_and_stops_when_it_raises(tmp_path):
    batches = [(torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))) for _ in range(2)]
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    seen = []

    def on_epoch(history):
        seen.append(list(history["epoch"]))
        if len(seen) == 2:
            raise StopIteration("enough")

    with pytest.raises(StopIteration):
        utils.fit(model, "cpu", batches, batches, optimizer, None, 5, on_epoch=on_epoch,
                  checkpoint_path=tmp_path / "last.pt")
    assert seen == [[1], [1, 2]]
    assert utils.read_checkpoint(tmp_path / "last.pt")["epoch"] == 2  # saved before on_epoch was called


def test_bad_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be"):
        utils.test(Net(), "cpu", [(torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long))], precision="fp8")


THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
HUGE_PAGES_AFTER_KEEP_FREED_MEMORY = """
import re, torch
from s5 import cpu_memory
def huge_kb():
    return int(re.search(r"AnonHugePages:\\s+(\\d+)", open("/proc/self/smaps_rollup").read()).group(1))
GROW_HEAP
before = huge_kb()
kept = cpu_memory.keep_freed_memory()
x = torch.ones(32 * 2**20, dtype=torch.uint8)
print(kept, before, huge_kb())
"""
# As a run before the fast path does (the original S5 pipeline in benchmarks/bench.py): 200 MB of blocks
# under glibc's 128 KB mmap threshold grow the heap in 4 KB pages; the last one kept stops it shrinking.
GROW_HEAP_IN_4_KB_PAGES = """
blocks = [torch.ones(100 * 2**10, dtype=torch.uint8) for _ in range(2048)]
del blocks[:-1]
"""
KERNEL = tuple(int(v) for v in re.findall(r"\d+", platform.release())[:2])


@pytest.mark.skipif(platform.system() != "Linux" or not THP.exists() or "[never]" in THP.read_text(),
                    reason="needs Linux with transparent huge pages")
@pytest.mark.parametrize("grow_heap", [
    pytest.param("", id="fresh heap"),
    # The tensor then reuses heap pages handed back to the kernel, which come back as 2 MB pages only
    # where the kernel also frees their page tables (CONFIG_PT_RECLAIM, Linux 6.14+ on x86-64).
    pytest.param(GROW_HEAP_IN_4_KB_PAGES, id="heap grown before", marks=pytest.mark.skipif(
        platform.machine() != "x86_64" or KERNEL < (6, 14), reason="needs Linux 6.14+ on x86-64")),
])
def test_memory_kept_for_reuse_comes_in_huge_pages(grow_heap):
    # In a fresh process: the setting is per process, and this one has allocated plenty already.
    script = HUGE_PAGES_AFTER_KEEP_FREED_MEMORY.replace("GROW_HEAP", grow_heap)
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    kept, before, after = run.stdout.split()
    if kept != "True":
        pytest.skip("the C library is not glibc")
    assert int(after) - int(before) >= 16 * 1024  # kB of the 32 MB tensor in 2 MB pages
