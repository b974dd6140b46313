"""`maskedbert example`: train mask scores of one masked linear layer (seconds, CPU or GPU).

A frozen random weight W and a hidden "true" mask M* define a teacher y = x (W*M*)^T. Only the
scores S are trained (straight-through estimator), starting from |W| (magnitude init), to find M*
back; the printout shows the loss falling and how much of M* the learned mask recovers.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from maskedbert._atomic import write_text_atomic
from maskedbert.kernels import masked_linear


def parse_args(argv):
    p = argparse.ArgumentParser(prog="maskedbert example", description=__doc__.splitlines()[0])
    p.add_argument("--in-features", type=int, default=128)
    p.add_argument("--out-features", type=int, default=64)
    p.add_argument("--sparsity", type=float, default=0.5, help="fraction of the true mask that is pruned")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=0.05, help="Adam on scores; scores live on the scale of |W|")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--backend", default="auto", help="masked_linear backend (auto, torch, triton, ...)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="optional directory for the resolved config and results")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not 0.0 <= args.sparsity < 1.0:
        raise SystemExit(f"--sparsity must be in [0, 1), got {args.sparsity}")
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    N, K = args.out_features, args.in_features
    weight = torch.randn(N, K, device=dev) / K**0.5
    true_mask = torch.rand(N, K, device=dev) >= args.sparsity
    scores = weight.abs().clone().requires_grad_(True)  # magnitude init: the mask starts as |W| > tau
    threshold = float(weight.abs().flatten().kthvalue(max(1, int(args.sparsity * N * K))).values)
    opt = torch.optim.Adam([scores], lr=args.lr * threshold)
    start = time.perf_counter()
    for step in range(args.steps + 1):
        x = torch.randn(args.batch, K, device=dev)
        target = x @ (weight * true_mask).T
        y = masked_linear(x, weight, scores=scores, threshold=threshold, backend=args.backend)
        loss = torch.nn.functional.mse_loss(y, target)
        if step % max(1, args.steps // 6) == 0 or step == args.steps:
            learned = scores.detach() > threshold
            agree = (learned == true_mask).float().mean().item()
            print(f"step {step:4d}  loss {loss.item():.5f}  mask sparsity {1 - learned.float().mean().item():.3f}"
                  f"  agreement with the true mask {agree:.3f}")
        if step == args.steps:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    result = {"final_loss": loss.item(), "mask_agreement": agree, "seconds": seconds, "device": str(dev)}
    print(f"done in {seconds:.1f} s on {dev}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        for name, payload in (("config.json", vars(args)), ("results.json", result)):
            write_text_atomic(os.path.join(args.out, name), json.dumps(payload, indent=2))
    return 0
