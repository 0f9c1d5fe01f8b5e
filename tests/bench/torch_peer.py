#!/usr/bin/python3
"""PyTorch peer for tests/bench/learner_bench.c: the same MLP (784-256-128-10, softmax
cross-entropy, Adam lr 1e-3), the same batch size and thread count, synthetic data from a pool of
4096 examples; bf16 through torch.autocast (CPU). Prints one JSON line like the eddy benchmark.
Run with Debian's python3 (python3-torch): /usr/bin/python3 torch_peer.py --batch 64"""
import argparse
import json
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    pool = 4096 // a.batch * a.batch or a.batch
    xs = torch.randint(0, 256, (pool, 784)).float() / 255.0
    ys = torch.randint(0, 10, (pool,))
    nb = pool // a.batch
    batches = [(xs[i * a.batch:(i + 1) * a.batch], ys[i * a.batch:(i + 1) * a.batch]) for i in range(nb)]

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        if a.precision == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = loss_fn(model(x), y)
        else:
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    for i in range(20):
        step(*batches[i % nb])
    steps = 0
    t0 = time.perf_counter()
    while True:
        for _ in range(10):
            step(*batches[steps % nb])
            steps += 1
        t = time.perf_counter()
        if t - t0 >= a.seconds:
            break
    print(json.dumps({"impl": "pytorch " + torch.__version__, "batch": a.batch, "precision": a.precision,
                      "threads": a.threads, "examples_per_second": round(steps * a.batch / (t - t0), 1),
                      "steps": steps}))


if __name__ == "__main__":
    main()
