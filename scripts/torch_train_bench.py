#!/usr/bin/python3
"""PyTorch peer of examples/train_throughput.rs: the same LeNet-5 and small
ResNet (resnet8: 16-32-64 channels, torchvision BasicBlocks, 1x1 projection
shortcuts) trained at batch 128 (SGD momentum 0.9, lr 0.01, softmax
cross-entropy) on random 1x28x28 images, one warm-up pass of --steps steps
and then --steps timed steps. Prints images/s (wall clock and per
CPU-second times the thread count) and the peak resident memory, in the
same form as the Hasten example.

    /usr/bin/python3 scripts/torch_train_bench.py --model lenet5|resnet8 [--steps N] [--threads T] [--batch B]

Needs PyTorch (Debian: apt-get install python3-torch).
"""

import argparse
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class LeNet5(nn.Module):
    """conv 5x5/pad 2 (6, bias) - relu - maxpool 2 - conv 5x5 (16) - relu -
    maxpool 2 - fc 400->120 - relu - fc 120->84 - relu - fc 84->10."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class BasicBlock(nn.Module):
    """torchvision's BasicBlock with a 1x1 conv + BN shortcut on a stride or
    width change."""

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(y + identity)


class ResNet8(nn.Module):
    """3x3 stem (16, no bias) - BN - relu - blocks of 16, 32/2, 64/2 -
    global average pool - fc 64->10."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = BasicBlock(16, 16, 1)
        self.layer2 = BasicBlock(16, 32, 2)
        self.layer3 = BasicBlock(32, 64, 2)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["lenet5", "resnet8"], default="lenet5")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    model = LeNet5() if a.model == "lenet5" else ResNet8()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    n = a.steps * a.batch
    images = torch.randn(n, 1, 28, 28)
    labels = torch.randint(0, 10, (n,))

    def epoch():
        perm = torch.randperm(n)
        for s in range(a.steps):
            idx = perm[s * a.batch:(s + 1) * a.batch]
            x, y = images[idx], labels[idx]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()

    epoch()  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    epoch()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"torch {torch.__version__} {a.model} batch {a.batch} threads {a.threads}: "
        f"{n / wall:.0f} images/s ({a.steps} steps, {wall:.2f} s), "
        f"{n / cpu * a.threads:.0f} images per CPU-second x threads, "
        f"peak RSS {peak_mib:.0f} MiB"
    )


if __name__ == "__main__":
    main()
