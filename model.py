"""The S5 network: four 3x3 convolutions, two max-pools, two linear layers."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    """MNIST classifier: [N, 1, 28, 28] images in, [N, 10] log-probabilities out.

    Shapes (and receptive field) layer by layer:
        conv1  1->32   28 -> 26  (RF 3)
        conv2  32->64  26 -> 24  (RF 5),  max-pool 24 -> 12 (RF 6)
        conv3  64->128 12 -> 10  (RF 10)
        conv4 128->256 10 -> 8   (RF 14), max-pool  8 -> 4  (RF 16)
        fc1   256*4*4=4096 -> 50, fc2 50 -> 10
    593,200 parameters.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.conv3 = nn.Conv2d(64, 128, kernel_size=3)
        self.conv4 = nn.Conv2d(128, 256, kernel_size=3)
        self.fc1 = nn.Linear(4096, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"Net expects a torch.Tensor, got {type(x).__module__}.{type(x).__name__}; "
                            "convert with torch.from_numpy(x).float()")
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(
                f"Net expects images of shape [N, 1, 28, 28], got {list(x.shape)}; "
                "add the channel axis with x.unsqueeze(1) or resize to 28x28"
            )
        if not x.is_floating_point():
            raise ValueError(
                f"Net expects a floating-point tensor, got {x.dtype}; "
                "convert with x.float() / 255 and normalise as utils.test_transforms does"
            )
        weights = self.conv1.weight.dtype
        # Autocast casts float32 images to its own type, but leaves float64 as it is.
        if x.dtype != weights and (x.dtype == torch.float64 or not torch.is_autocast_enabled(x.device.type)):
            raise ValueError(f"Net's weights are {weights} but the images are {x.dtype}; convert the images with "
                             f"x.to({weights}) (or the model with model.to({x.dtype}))")
        # Max-pool before ReLU where both follow a conv: the same function (both are monotone, so they
        # commute, gradients included) with 4x less ReLU work.
        x = F.relu(self.conv1(x))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        x = F.relu(self.conv3(x))
        x = F.relu(F.max_pool2d(self.conv4(x), 2))
        x = torch.flatten(x, 1)  # works for channels_last too, unlike view(-1, 4096)
        x = F.relu(self.fc1(x))
        # In fp32 even under CPU autocast, where bf16 would round log-probabilities near 0 to 0.
        return F.log_softmax(self.fc2(x).float(), dim=1)
