#!/usr/bin/env python3
"""PyTorch peer for tests/bench/gpu_bench.c, run by ops/gpu-check on the GPU machine: what a user
would write instead. The same models, optimizer (Adam lr 1e-3; SparseAdam on the sparse embedding,
the same lazy-row update eddy does), batch and synthetic data, in eager mode with
torch.autocast(bf16) + torch.amp.GradScaler. Each step copies its batch from pinned host memory
(non_blocking), as eddy does: a streaming trainer's examples arrive on the host.
  mlp:   784-256-128-10 softmax (CrossEntropyLoss)
  large: EmbeddingBag(2^22, 64, sum, sparse) over 16 hashed features + MLP 1024-512-256, logistic
Timing: 30 warm-up steps, then whole steps for --seconds, synchronised before reading the clock.
Prints one JSON line like bench_gpu."""
import argparse
import json
import time

import torch


def build(model, device):
    if model == "mlp":
        net = torch.nn.Sequential(
            torch.nn.Linear(784, 256), torch.nn.ReLU(),
            torch.nn.Linear(256, 128), torch.nn.ReLU(),
            torch.nn.Linear(128, 10)).to(device)
        return None, net, torch.nn.CrossEntropyLoss()
    emb = torch.nn.EmbeddingBag(1 << 22, 64, mode="sum", sparse=True).to(device)
    torch.nn.init.normal_(emb.weight, std=0.01)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 1024), torch.nn.ReLU(),
        torch.nn.Linear(1024, 512), torch.nn.ReLU(),
        torch.nn.Linear(512, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 1)).to(device)
    return emb, net, torch.nn.BCEWithLogitsLoss()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["mlp", "large"], default="mlp")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--precision", choices=["bf16", "fp16"], default="bf16")
    a = ap.parse_args()
    device = "cuda"
    torch.manual_seed(0)
    emb, net, loss_fn = build(a.model, device)
    opts = [torch.optim.Adam(net.parameters(), lr=1e-3)]
    if emb is not None:
        opts.append(torch.optim.SparseAdam(emb.parameters(), lr=1e-3))
    scaler = torch.amp.GradScaler("cuda")
    dtype = torch.bfloat16 if a.precision == "bf16" else torch.float16
    pool = max(4096, 4 * a.batch)
    nb = pool // a.batch
    batches = []
    for _ in range(nb):
        if a.model == "mlp":
            x = (torch.randint(0, 256, (a.batch, 784)).float() / 255.0).pin_memory()
            y = torch.randint(0, 10, (a.batch,)).pin_memory()
            batches.append((x, None, y))
        else:
            idx = torch.randint(0, 1 << 22, (a.batch * 16,)).pin_memory()
            y = torch.randint(0, 2, (a.batch,)).float().pin_memory()
            batches.append((idx, None, y))
    offsets = (torch.arange(a.batch) * 16).to(device) if a.model == "large" else None

    def step(batch):
        xh, _, yh = batch
        x = xh.to(device, non_blocking=True)
        y = yh.to(device, non_blocking=True)
        for o in opts:
            o.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype):
            if emb is None:
                loss = loss_fn(net(x), y)
            else:
                loss = loss_fn(net(emb(x, offsets)).squeeze(1), y)
        scaler.scale(loss).backward()
        for o in opts:
            scaler.step(o)
        scaler.update()

    for i in range(30):
        step(batches[i % nb])
    torch.cuda.synchronize()
    steps = 0
    t0 = time.perf_counter()
    while True:
        for _ in range(10):
            step(batches[steps % nb])
            steps += 1
        torch.cuda.synchronize()
        t = time.perf_counter()
        if t - t0 >= a.seconds:
            break
    print(json.dumps({"impl": "pytorch " + torch.__version__, "model": a.model, "batch": a.batch,
                      "precision": a.precision, "examples_per_second": round(steps * a.batch / (t - t0), 1),
                      "steps": steps, "device": torch.cuda.get_device_name(0)}))


if __name__ == "__main__":
    main()
