"""`maskedbert example`: train mask scores of one masked linear layer (seconds, CPU or GPU).

A frozen random weight W and a hidden "true" mask M* define a teacher y = x (W*M*)^T. Only the
scores S are trained (straight-through estimator), starting from |W| (magnitude init), to find M*
back; the printout shows the loss falling and how much of M* the learned mask recovers.

    maskedbert example
    maskedbert example --sparsity 0.9 --steps 600 --out runs/example
"""
from __future__ import annotations

import argparse
import json
import os
import time

from maskedbert._atomic import write_text_atomic
from maskedbert.config import BACKENDS, SPARSITY_RULE, check_sparsity
from maskedbert.errors import UsageError
from maskedbert.experiments.cli_common import (HelpFormatter, check_device, check_number, check_out_dir,
                                               set_interrupt_note)

# torch and the kernels load in main(), after parsing, so that --help answers at once


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="maskedbert example", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--in-features", type=int, default=128, help="K, the layer's input width")
    p.add_argument("--out-features", type=int, default=64, help="N, the layer's output width")
    p.add_argument("--sparsity", type=float, default=0.5, help=f"of the true mask: {SPARSITY_RULE}")
    p.add_argument("--steps", type=int, default=300, help="Adam steps on the scores")
    p.add_argument("--lr", type=float, default=0.05,
                   help="Adam learning rate in units of the threshold (scores live on the scale of |W|)")
    p.add_argument("--batch", type=int, default=256, help="random inputs per step")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="masked_linear backend; triton* on CPU needs TRITON_INTERPRET=1")
    p.add_argument("--device", default="auto", help="auto (cuda when available, else cpu), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None,
                   help="directory for the resolved config and results (config.json, results.json); none: print only")
    return p


def parse_args(argv):
    """Parse and check every argument; raises UsageError before anything is computed or written."""
    args = build_parser().parse_args(argv)
    check_sparsity(args.sparsity, "--sparsity")
    for flag, value in (("--in-features", args.in_features), ("--out-features", args.out_features),
                        ("--batch", args.batch)):
        check_number(flag, value, low=1, integer=True)
    check_number("--steps", args.steps, low=0, integer=True)
    check_number("--lr", args.lr, low=0, low_open=True)
    check_device(args.device)
    if args.out is not None:
        check_out_dir(args.out)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch  # keeps --help torch-free

    from maskedbert.kernels import masked_linear  # keeps --help torch-free

    torch.manual_seed(args.seed)
    dev = torch.device(args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
    if args.backend.startswith("triton") and dev.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise UsageError(f"--backend: {args.backend!r} runs Triton kernels, which need a CUDA device "
                         f"(here: {dev}); use --backend auto or torch, or set TRITON_INTERPRET=1 to interpret them")
    N, K = args.out_features, args.in_features
    weight = torch.randn(N, K, device=dev) / K**0.5
    true_mask = torch.rand(N, K, device=dev) >= args.sparsity
    scores = weight.abs().clone().requires_grad_(True)  # magnitude init: the mask starts as |W| > tau
    threshold = float(weight.abs().flatten().kthvalue(max(1, int(args.sparsity * N * K))).values)
    opt = torch.optim.Adam([scores], lr=args.lr * threshold)
    start = time.perf_counter()
    step = 0
    set_interrupt_note(lambda: f"stopped at step {step} of {args.steps}; this example saves nothing before it "
                               f"ends, so run it again")
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
        print(f"wrote {os.path.join(args.out, 'config.json')}, {os.path.join(args.out, 'results.json')}")
    return 0
