#!/usr/bin/env python3
"""The projection of docs/scaling.md: data-parallel efficiency of eddy's ranks at R = 8 and 64, for
the Fashion-MNIST MLP and the large embedding model, on 100 Gb/s Ethernet and on NVLink, from the
compute time per example measured by tests/bench/run-ranks (one CPU thread per rank) and a ring
all-reduce cost model. Prints markdown tables; every input is an option, so that a run on other
hardware (a GPU's time per example) gives its own projection.

Model of one step per rank (no overlap of compute and communication, as eddy steps today):
  compute   T_c = b * t_ex                                  (b examples per rank and step)
  sums      T_ar = 2 (R-1)/R * S / B + 2 (R-1) * alpha      (ring all-reduce of S bytes)
  rows      the embedding rows any rank touched are summed as one packed list, so S grows with R:
            S = dense bytes + U * d * 4 and the row ids are all-gathered ((R-1)/R * 4 * R * k * b
            bytes), with U the distinct rows of R * k * b hashed draws from H rows:
            U = H (1 - exp(-R k b / H)) (uniform hashing: the worst case; real features repeat)
  rounds    4 small collectives per step (barrier, the round's records, the counts, the row-id
            sizes): 4 * 2 ceil(log2 R) * alpha
  E = T_c / (T_c + T_ar + rounds)
"""
import argparse
import math


def step_times(model, r, b, net):
    t_c = b * model["t_ex"]
    if model["k"]:
        draws = r * model["k"] * b
        u = model["rows"] * (1 - math.exp(-draws / model["rows"]))
        s = model["dense_bytes"] + u * model["d"] * 4
        ids = (r - 1) / r * 4 * draws / net["bw"] if r > 1 else 0.0
    else:
        s, ids = model["dense_bytes"], 0.0
    t_ar = (2 * (r - 1) / r * s / net["bw"] + 2 * (r - 1) * net["alpha"]) if r > 1 else 0.0
    rounds = 4 * 2 * math.ceil(math.log2(r)) * net["alpha"] if r > 1 else 0.0
    return t_c, t_ar + ids, rounds, s


def efficiency(model, r, b, net):
    t_c, t_ar, rounds, _ = step_times(model, r, b, net)
    return t_c / (t_c + t_ar + rounds)


def batch_for(model, r, net, target=0.9, limit=1 << 20):
    """Smallest power-of-two batch per rank with efficiency >= target, or None. For a model with
    embeddings only batches whose R k b hashed draws stay below the table's rows count: beyond, the
    union nears the whole table and the sums would carry most of it every step."""
    b = 1
    while b <= limit:
        if model["k"] and r * model["k"] * b > model["rows"]:
            return None
        if efficiency(model, r, b, net) >= target:
            return b
        b *= 2
    return None


def per_example_comm(model, r, net):
    """Seconds of sums per example (embedding rows, far from saturating the table): the ceiling
    of the efficiency is t_ex / (t_ex + this), whatever the batch."""
    return 2 * (r - 1) / r * (r * model["k"] * model["d"] * 4) / net["bw"] + (r - 1) / r * 4 * r * model["k"] / net["bw"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mlp-us", type=float, default=1.47e3 / 256, help="MLP compute per example, microseconds")
    ap.add_argument("--large-us", type=float, default=44.90e3 / 1024, help="large model compute per example, us")
    ap.add_argument("--mlp-batch", type=int, default=256)
    ap.add_argument("--large-batch", type=int, default=1024)
    ap.add_argument("--eth-gbs", type=float, default=10.0, help="100 Gb/s Ethernet all-reduce bandwidth, GB/s")
    ap.add_argument("--eth-us", type=float, default=15.0, help="100 Gb/s Ethernet latency per hop, us")
    ap.add_argument("--nvl-gbs", type=float, default=350.0, help="NVLink all-reduce bandwidth, GB/s")
    ap.add_argument("--nvl-us", type=float, default=5.0, help="NVLink latency per hop, us")
    a = ap.parse_args()
    models = {
        "Fashion-MNIST MLP 784-256-128-10": {"t_ex": a.mlp_us * 1e-6, "dense_bytes": 235146 * 4, "k": 0,
                                             "batch": a.mlp_batch},
        "large embedding model (2^22 x 64, 16 features, 1024-512-256)": {
            "t_ex": a.large_us * 1e-6, "dense_bytes": 722945 * 4, "k": 16, "d": 64, "rows": 1 << 22,
            "batch": a.large_batch},
    }
    nets = {"100 Gb/s Ethernet": {"bw": a.eth_gbs * 1e9, "alpha": a.eth_us * 1e-6},
            "NVLink": {"bw": a.nvl_gbs * 1e9, "alpha": a.nvl_us * 1e-6}}
    mlp, large = models.values()
    print("Fashion-MNIST MLP 784-256-128-10 (%.2f MB all-reduced per step), measured batch %d per rank, "
          "%.2f us per example:\n" % (mlp["dense_bytes"] / 1e6, mlp["batch"], mlp["t_ex"] * 1e6))
    print("| network | R | compute ms | sums ms | rounds ms | efficiency | batch per rank for >= 0.9 "
          "| compute per step for >= 0.9 |")
    print("|---|---|---|---|---|---|---|---|")
    for nname, net in nets.items():
        for r in (2, 8, 64):
            t_c, t_ar, rounds, s = step_times(mlp, r, mlp["batch"], net)
            need = batch_for(mlp, r, net)
            print(f"| {nname} | {r} | {t_c * 1e3:.2f} | {t_ar * 1e3:.3f} | {rounds * 1e3:.3f} | "
                  f"{efficiency(mlp, r, mlp['batch'], net):.2f} | {need} | {9 * (t_ar + rounds) * 1e3:.2f} ms |")
    print("\nLarge embedding model (2^22 x 64 embeddings, 16 features per example, MLP 1024-512-256; %.2f MB "
          "dense), measured batch %d per rank, %.1f us per example:\n" %
          (large["dense_bytes"] / 1e6, large["batch"], large["t_ex"] * 1e6))
    print("| network | R | MB per step | compute ms | sums ms | rounds ms | efficiency | ceiling (any batch) "
          "| batch per rank for >= 0.9 | compute per example for >= 0.9 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for nname, net in nets.items():
        for r in (2, 8, 64):
            t_c, t_ar, rounds, s = step_times(large, r, large["batch"], net)
            need = batch_for(large, r, net)
            pe = per_example_comm(large, r, net)
            print(f"| {nname} | {r} | {s / 1e6:.1f} | {t_c * 1e3:.1f} | {t_ar * 1e3:.2f} | {rounds * 1e3:.3f} | "
                  f"{efficiency(large, r, large['batch'], net):.2f} | {large['t_ex'] / (large['t_ex'] + pe):.2f} | "
                  f"{need if need else 'none'} | {9 * pe * 1e6:.1f} us |")


if __name__ == "__main__":
    main()
