import gzip
import os
import subprocess
import sys

import pytest
import torch
from conftest import N_TEST, N_TRAIN, ROOT, write_idx

import utils
from model import Net
from utils import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, MNIST_FILES, MNIST_MEAN, MNIST_STD, get_data_loaders

ALL_FILES = [name for pair in MNIST_FILES.values() for name in pair]


@pytest.mark.parametrize("pipeline", ["fast", "s5"])
def test_loaders_yield_normalised_batches(mnist_root, pipeline):
    train_loader, test_loader = get_data_loaders(100, mnist_root, "cpu", pipeline, num_workers=0)
    assert len(train_loader) == -(-N_TRAIN // 100) and len(test_loader) == -(-N_TEST // 100)
    images, labels = next(iter(train_loader))
    assert images.shape == (100, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (100,) and labels.dtype == torch.int64
    assert images.min() >= -MNIST_MEAN / MNIST_STD - 1e-4
    assert images.max() <= (1 - MNIST_MEAN) / MNIST_STD + 1e-4
    assert sum(len(y) for _, y in test_loader) == N_TEST


def test_both_pipelines_give_the_same_test_batches(mnist_root):
    fast, _ = zip(*get_data_loaders(64, mnist_root, "cpu", "fast")[1], strict=True)
    s5, _ = zip(*get_data_loaders(64, mnist_root, "cpu", "s5", num_workers=0)[1], strict=True)
    for a, b in zip(fast, s5, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_test_loop_written_for_a_dataloader_runs_on_the_fast_loaders(mnist_root):
    """pytorch/examples' and S5's test loops divide by len(test_loader.dataset) and look at
    dataset.targets: the fast path's loaders have a `dataset` as the original pipeline's do."""
    fast_train, fast_test = get_data_loaders(64, mnist_root, "cpu", "fast")
    s5_train, s5_test = get_data_loaders(64, mnist_root, "cpu", "s5", num_workers=0)
    assert (len(fast_train.dataset), len(fast_test.dataset)) == (len(s5_train.dataset), len(s5_test.dataset))
    assert torch.equal(fast_test.dataset.targets, s5_test.dataset.targets)
    assert torch.equal(fast_train.dataset.data, s5_train.dataset.data)
    first, _ = next(iter(fast_test))
    for i in (0, 1, N_TEST - 1):  # one image, as test_transforms makes it: never augmented
        image, label = fast_test.dataset[i]
        assert image.shape == (1, 28, 28) and label == s5_test.dataset[i][1]
        assert torch.allclose(image, s5_test.dataset[i][0], atol=1e-6)
    assert torch.equal(fast_test.dataset[0][0], first[0])
    torch.manual_seed(0)
    model, correct = Net().eval(), 0
    with torch.no_grad():
        for data, target in fast_test:
            correct += model(data).argmax(1).eq(target).sum().item()
    accuracy = utils.test(model, "cpu", fast_test, precision="fp32")[1]
    assert 100.0 * correct / len(fast_test.dataset) == pytest.approx(accuracy)


@pytest.mark.skipif(sys.platform != "linux", reason="the start methods of Linux")
def test_the_original_pipeline_gives_the_same_batches_however_its_workers_start(mnist_root):
    """Python 3.14 starts worker processes by forkserver, not fork, on Linux: each worker then gets the
    dataset and transforms pickled, not copied. The augmented batches must not change."""
    script = ("import multiprocessing\n"
              "multiprocessing.set_start_method('forkserver')\n"
              "from utils import get_data_loaders\n"
              "if __name__ == '__main__':\n"
              f"    loader, _ = get_data_loaders(128, {str(mnist_root)!r}, 'cpu', 's5', seed=3, num_workers=2)\n"
              "    loader.set_epoch(2)\n"
              "    print(*(round(images.double().sum().item(), 3) for images, _ in loader))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    loader, _ = get_data_loaders(128, mnist_root, "cpu", "s5", seed=3, num_workers=2)  # forked, before Python 3.14
    loader.set_epoch(2)
    assert result.stdout.split() == [f"{round(images.double().sum().item(), 3)}" for images, _ in loader]


def test_test_images_are_raw_pixels_normalised(mnist_root):
    from torchvision import datasets

    raw = datasets.MNIST(mnist_root, train=False).data[:32].float() / 255
    images, _ = next(iter(get_data_loaders(32, mnist_root, "cpu")[1]))
    assert torch.allclose(images[:, 0], (raw - MNIST_MEAN) / MNIST_STD, atol=1e-6)


def test_data_dir_falls_back_to_the_environment(mnist_root, monkeypatch):
    monkeypatch.setenv("MNIST_DATA_DIR", str(mnist_root))
    _, test_loader = get_data_loaders(64, device="cpu")
    assert sum(len(y) for _, y in test_loader) == N_TEST


def test_missing_files_and_no_network_give_one_clear_error(tmp_path, monkeypatch):
    # A proxy on a closed local port stands in for "no network": every download fails at once.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(FileNotFoundError) as info:
        get_data_loaders(64, tmp_path / "nowhere", "cpu")
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert all(name in message for name in ALL_FILES)
    assert "\n" not in message and info.value.__context__ is None


def test_missing_files_without_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        get_data_loaders(64, tmp_path, "cpu", download=False)


def raw(root, name):
    return root / "MNIST" / "raw" / name


def test_the_files_as_mnist_publishes_them_are_uncompressed(mnist_root, fresh_mnist_root):
    for name in ALL_FILES:  # only the .gz files, as downloaded by hand
        path = raw(fresh_mnist_root, name)
        path.with_name(f"{name}.gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    _, test_loader = get_data_loaders(64, fresh_mnist_root, "cpu", download=False)
    _, original = get_data_loaders(64, mnist_root, "cpu", download=False)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(test_loader, original, strict=True))
    assert all(raw(fresh_mnist_root, name).read_bytes() == raw(mnist_root, name).read_bytes() for name in ALL_FILES)
    half = raw(fresh_mnist_root, "t10k-labels-idx1-ubyte.gz")
    half.write_bytes(half.read_bytes()[:20])
    raw(fresh_mnist_root, "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz is not a whole gzip file .*; download it again"):
        get_data_loaders(64, fresh_mnist_root, "cpu", download=False)


@pytest.mark.parametrize("inside", ["MNIST", "MNIST/raw"])
def test_data_dir_given_as_the_mnist_folder_itself_names_the_right_one(mnist_root, inside, capsys):
    with pytest.raises(ValueError) as info:
        get_data_loaders(64, mnist_root / inside, "cpu")  # download on: none is tried
    assert str(info.value) == (f"{mnist_root / inside} holds the MNIST files itself; give {mnist_root}, the folder "
                               "that holds MNIST/raw/, as data_dir / MNIST_DATA_DIR")
    assert "downloading" not in capsys.readouterr().out and not (mnist_root / inside / "MNIST").exists()


def test_wrong_magic_number_names_the_file(fresh_mnist_root):
    path = raw(fresh_mnist_root, "train-images-idx3-ubyte")
    data = bytearray(path.read_bytes())
    data[3] = 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte is not an MNIST IDX file: magic number"):
        get_data_loaders(64, fresh_mnist_root, "cpu")


def test_truncated_file_names_the_file(fresh_mnist_root):
    path = raw(fresh_mnist_root, "t10k-images-idx3-ubyte")
    os.truncate(path, path.stat().st_size - 100)
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte is truncated or corrupt"):
        get_data_loaders(64, fresh_mnist_root, "cpu")


def test_image_and_label_counts_must_agree(fresh_mnist_root):
    write_idx(raw(fresh_mnist_root, "train-labels-idx1-ubyte"), torch.zeros(N_TRAIN - 1), IDX_LABELS_MAGIC)
    with pytest.raises(ValueError, match=f"{N_TRAIN} images but .*train-labels-idx1-ubyte has {N_TRAIN - 1}"):
        get_data_loaders(64, fresh_mnist_root, "cpu")


def test_a_failed_download_leaves_no_folders_behind(tmp_path, monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(FileNotFoundError):
        get_data_loaders(64, tmp_path / "mnist_dta" / "nested", "cpu")  # a typo in the path
    assert list(tmp_path.iterdir()) == []


def test_label_values_outside_0_to_9_name_the_file_and_index(fresh_mnist_root):
    labels = torch.arange(N_TRAIN) % 10
    labels[300] = 10
    write_idx(raw(fresh_mnist_root, "train-labels-idx1-ubyte"), labels, IDX_LABELS_MAGIC)
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte holds label 10 at index 300; MNIST labels are 0-9"):
        get_data_loaders(64, fresh_mnist_root, "cpu")


def test_files_with_no_images_are_named(fresh_mnist_root):
    write_idx(raw(fresh_mnist_root, "t10k-images-idx3-ubyte"), torch.zeros(0, 28, 28), IDX_IMAGES_MAGIC)
    write_idx(raw(fresh_mnist_root, "t10k-labels-idx1-ubyte"), torch.zeros(0), IDX_LABELS_MAGIC)
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte holds no images"):
        get_data_loaders(64, fresh_mnist_root, "cpu")


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "batch_size must be a positive"),
    ({"batch_size": -5}, "batch_size must be a positive"),
    ({"batch_size": True}, "batch_size must be a positive whole number, got True"),
    ({"batch_size": 64.0}, "batch_size must be a positive whole number, got 64.0"),
    ({"batch_size": N_TRAIN + 1}, f"batch_size {N_TRAIN + 1} is larger than the {N_TRAIN} training images"),
    ({"pipeline": "torchvision"}, "pipeline must be one of"),
    ({"seed": 2**64}, r"seed must be a whole number from 0 to 2\*\*63 - 1, got 18446744073709551616"),
    ({"seed": -1}, "seed must be a whole number from 0"),
    ({"seed": 1.5}, "seed must be a whole number from 0"),
])
def test_bad_arguments(mnist_root, kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_data_loaders(data_dir=mnist_root, device="cpu", **kwargs)
