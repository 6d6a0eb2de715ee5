"""An independent cat/dog judge: the CIFAR-10 ResNet-20 of He et al. 2016 ("option A" shortcuts).

Weights: `resnet20-12fca82f.th` (akamaster/pytorch_resnet_cifar10, BSD-2-Clause), read with
`weights_only=True`. It is never used in training or sampling; only to score finished images.
A cat/dog decision compares the CIFAR-10 logits of cat (3) and dog (5).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from catdog.data import in_batches
from catdog.errors import UserError

RESNET_SHA256_PREFIX = "12fca82f"
CIFAR_CAT, CIFAR_DOG = 3, 5
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if (stride != 1 or in_planes != planes) else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        # option A: parameter-free shortcut, subsample and zero-pad the channels
        shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad)) if self.pad else x
        return F.relu(out + shortcut)


class ResNet20(nn.Module):
    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(3):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 64-d global-average-pooled features before the classifier."""
        h = F.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(h))).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


def default_judge_path() -> Path | None:
    """$CATDOG_JUDGE, else the shared weights folder next to the repository, if present."""
    if os.environ.get("CATDOG_JUDGE"):
        return Path(os.environ["CATDOG_JUDGE"])
    repo = Path(__file__).resolve().parents[2]
    for folder in (repo.parent / "shared" / "weights", repo / "weights"):
        if (folder / "resnet20-12fca82f.th").is_file():
            return folder / "resnet20-12fca82f.th"
    return None


def load_judge(path: str | os.PathLike | None = None) -> ResNet20:
    """The ResNet-20 with its published weights, in eval mode."""
    path = Path(path) if path else default_judge_path()
    if path is None or not path.is_file():
        raise UserError(f"ResNet-20 judge weights not found ({path or 'no path'}): pass --judge PATH "
                        "or set CATDOG_JUDGE to resnet20-12fca82f.th")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        state = {k.removeprefix("module."): v for k, v in checkpoint["state_dict"].items()}
        model = ResNet20()
        model.load_state_dict(state)
    except Exception as e:  # unreadable, unsafe, or not this architecture
        raise UserError(f"{path}: not a loadable ResNet-20 checkpoint ({str(e).splitlines()[0][:200]})") from None
    return model.eval()


def _judge_input(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    x = torch.as_tensor(batch).permute(0, 3, 1, 2).float() / 255          # [0, 1], as the judge was trained
    return ((x - MEAN) / STD).to(device)


@torch.no_grad()
def judge_features(judge: ResNet20, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """The judge's 64-d penultimate features (N, 64) of uint8 images: a feature space for distances."""
    device = next(judge.parameters()).device
    return np.concatenate(in_batches(lambda b: judge.features(_judge_input(b, device)).cpu().numpy(), images,
                                     batch_size))


@torch.no_grad()
def judge_dog_probability(judge: ResNet20, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """P(dog | cat or dog) for uint8 images (N, 32, 32, 3), from the cat and dog logits."""
    device = next(judge.parameters()).device

    def dog_probability(batch: np.ndarray) -> np.ndarray:
        logits = judge(_judge_input(batch, device))
        return torch.softmax(logits[:, [CIFAR_CAT, CIFAR_DOG]], dim=1)[:, 1].cpu().numpy()

    return np.concatenate(in_batches(dog_probability, images, batch_size))


def class_accuracy(judge: ResNet20, images: np.ndarray, labels: np.ndarray) -> float:
    """Share of images (labels 0 = cat, 1 = dog) that the judge assigns to their class."""
    predicted = (judge_dog_probability(judge, images) > 0.5).astype(np.int64)
    return float((predicted == labels).mean())
