import numpy as np
import pytest
import torch

from model import Net


@pytest.fixture
def net():
    torch.manual_seed(0)
    return Net().eval()


def test_output_shape_and_log_probabilities(net):
    out = net(torch.randn(5, 1, 28, 28))
    assert out.shape == (5, 10)
    assert torch.allclose(out.exp().sum(dim=1), torch.ones(5), atol=1e-5)
    assert (out <= 0).all()


def test_parameter_count(net):
    assert sum(p.numel() for p in net.parameters()) == 593_200


def test_channels_last_input_gives_the_same_output(net):
    x = torch.randn(4, 1, 28, 28)
    expected = net(x)
    net_cl = net.to(memory_format=torch.channels_last)
    got = net_cl(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("shape", [(4, 28, 28), (4, 3, 28, 28), (4, 1, 32, 32)])
def test_wrong_shape_names_expected_and_received(net, shape):
    with pytest.raises(ValueError, match=r"\[N, 1, 28, 28\].*" + ", ".join(map(str, shape))):
        net(torch.zeros(shape))


def test_wrong_dtype_is_refused(net):
    with pytest.raises(ValueError, match="floating-point.*uint8"):
        net(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))


def test_numpy_and_float64_images_are_named_in_the_error(net):
    with pytest.raises(TypeError, match="torch.Tensor, got numpy.ndarray"):
        net(np.zeros((2, 1, 28, 28), dtype=np.float32))
    with pytest.raises(ValueError, match="weights are torch.float32 but the images are torch.float64"):
        net(torch.zeros(2, 1, 28, 28, dtype=torch.float64))
