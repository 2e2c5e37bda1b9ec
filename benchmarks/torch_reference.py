"""A plain PyTorch eager MoCo v2 / ASCL train step: the CPU reference for tfascl's step.

    /path/to/torch-venv/bin/python benchmarks/torch_reference.py --method=ascl --threads=2

Not part of tfascl and not a dependency: run it with any Python that has torch and numpy.
It mirrors what ``python -m benchmarks.train_step`` times, op for op where it matters for cost:
ResNet-18 with the CIFAR stem (3×3 conv, no max-pool) and split BatchNorm (8 groups, as the
MoCo CIFAR demo and the ASCL code), projector Linear(8w, 2048)–ReLU–Linear(2048, 128), a
momentum encoder run on the weak view (with the batch shuffled for split BN), a queue of
keys, the soft-target cross-entropy (ASCL: targets from the key's similarity to the queue;
MoCo: one-hot), an SGD step (momentum 0.9, weight decay 5e-4), the EMA update and the enqueue.
The batch is one synthetic batch already in memory, as in the TF benchmark.

Prints one JSON line with the same fields as ``benchmarks.train_step`` (framework="torch").
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm over ``num_splits`` groups of the batch (the MoCo CIFAR demo's layer)."""

    def __init__(self, channels: int, num_splits: int = 8):
        super().__init__(channels)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if not self.training:
            return super().forward(x)
        s = self.num_splits
        running_mean = self.running_mean.repeat(s)
        running_var = self.running_var.repeat(s)
        out = F.batch_norm(
            x.view(-1, c * s, h, w),
            running_mean,
            running_var,
            self.weight.repeat(s),
            self.bias.repeat(s),
            True,
            self.momentum,
            self.eps,
        ).view(n, c, h, w)
        self.running_mean.data.copy_(running_mean.view(s, c).mean(dim=0))
        self.running_var.data.copy_(running_var.view(s, c).mean(dim=0))
        return out


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = SplitBatchNorm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = SplitBatchNorm(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), SplitBatchNorm(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class Encoder(nn.Module):
    """ResNet-18 (CIFAR stem) + projector → L2-normalised [B, 128]."""

    def __init__(self, width: int = 64):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(3, width, 3, 1, 1, bias=False),
            SplitBatchNorm(width),
            nn.ReLU(),
        ]
        cin = width
        for stage in range(4):
            cout = width * 2**stage
            for block in range(2):
                layers.append(BasicBlock(cin, cout, 2 if stage > 0 and block == 0 else 1))
                cin = cout
        self.backbone = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.projector = nn.Sequential(nn.Linear(cin, 2048), nn.ReLU(), nn.Linear(2048, 128))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(self.backbone(x)), dim=1)


class MoCoStep:
    """Query/key encoders, queue and optimizer; ``step`` is one training step."""

    def __init__(self, method: str, width: int, queue_size: int):
        self.method = method
        self.query = Encoder(width)
        self.key = copy.deepcopy(self.query)
        for p in self.key.parameters():
            p.requires_grad = False
        self.queue = F.normalize(torch.randn(queue_size, 128), dim=1)
        self.pointer = 0
        self.optimizer = torch.optim.SGD(
            self.query.parameters(), lr=0.03, momentum=0.9, weight_decay=5e-4
        )
        self.temperature, self.target_temperature, self.momentum = 0.1, 0.05, 0.99

    def targets(self, k: torch.Tensor) -> torch.Tensor:
        """[B, 1+M] targets: one-hot (MoCo) or ASCL's confidence-weighted soft targets."""
        b, m = k.shape[0], self.queue.shape[0]
        hard = torch.zeros(b, 1 + m)
        hard[:, 0] = 1.0
        if self.method == "moco":
            return hard
        logits = k @ self.queue.T / self.target_temperature  # [B, M]
        p = F.softmax(logits, dim=1)
        entropy = -(p * F.log_softmax(logits, dim=1)).sum(dim=1, keepdim=True)
        confidence = 1.0 - entropy / math.log(m)
        # Top-1 neighbour keeps weight c, as ASCL with K=1.
        top = torch.zeros_like(p).scatter_(1, p.argmax(dim=1, keepdim=True), 1.0)
        soft = torch.cat([torch.ones(b, 1), confidence * top], dim=1)
        return soft / soft.sum(dim=1, keepdim=True)

    def step(self, strong: torch.Tensor, weak: torch.Tensor) -> float:
        with torch.no_grad():
            for pk, pq in zip(self.key.parameters(), self.query.parameters()):
                pk.mul_(self.momentum).add_(pq.detach(), alpha=1.0 - self.momentum)
            order = torch.randperm(weak.shape[0])
            k = self.key(weak[order])[torch.argsort(order)]
            targets = self.targets(k)
        q = self.query(strong)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ self.queue.T], 1)
        loss = -(targets * F.log_softmax(logits / self.temperature, dim=1)).sum(1).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        b = k.shape[0]
        self.queue[self.pointer : self.pointer + b] = k
        self.pointer = (self.pointer + b) % self.queue.shape[0]
        return loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", choices=("moco", "ascl"), default="ascl")
    parser.add_argument("--backbone_width", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--queue_size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--steps", type=int, default=2, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MoCoStep(args.method, args.backbone_width, args.queue_size)
    model.query.train()
    model.key.train()
    strong = torch.randn(args.batch_size, 3, 32, 32)
    weak = torch.randn(args.batch_size, 3, 32, 32)
    started = time.perf_counter()
    for _ in range(args.warmup):
        model.step(strong, weak)
    warmup = time.perf_counter() - started
    windows = []
    for _ in range(args.windows):
        started = time.perf_counter()
        for _ in range(args.steps):
            model.step(strong, weak)  # float(loss) waits for the step
        windows.append(time.perf_counter() - started)
    seconds = statistics.median(windows)
    record = {
        "framework": "torch",
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "method": args.method,
        "backbone": "resnet18",
        "backbone_width": args.backbone_width,
        "batch_size": args.batch_size,
        "queue_size": args.queue_size,
        "precision": "float32",
        "jit_compile": False,
        "augment_on": "host",
        "device": "CPU",
        "pairs_per_sec": round(args.steps * args.batch_size / seconds, 2),
        "step_ms": round(1000 * seconds / args.steps, 1),
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "warmup_s": round(warmup, 1),
        "window_s": [round(s, 3) for s in windows],
        "steps_per_window": args.steps,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
