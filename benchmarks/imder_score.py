"""Does IMDer's score network learn a conditional score it can sample from? (the IMDer spec 7.9, 9)

Trains IMDer's conditional 1-D U-Net (imsa.nn.diffusion, small widths) by denoising score
matching alone on a toy conditional distribution: the condition ``c`` is a (16, 8)
sequence of N(0, 0.25) values and the target ``x0 = B c + 0.05 noise`` (B fixed, random),
so a perfect conditional score recovers ``x0`` from ``c`` almost exactly. For each way of
noising the condition in training (``shared``: the target's noise realisation, as released;
``independent``; ``none``) it reports the held-out loss per time band with the condition
noised both ways, and the MSE of 100-step Euler-Maruyama samples (the released sampler,
which always noises the condition independently) against ``x0``, against the zero
sequence, and with the conditions shuffled.

    python benchmarks/imder_score.py                       # 2,000 steps per mode, a few minutes on one core
    python benchmarks/imder_score.py --steps 10000 --modes independent
"""

from __future__ import annotations

import json
import platform
import time

import torch

from common import REPO, benchmark_parser
from imsa import __version__
from imsa.nn.diffusion import VESDE, ScoreUNet, euler_maruyama, sampler_noise_shape, score_matching_loss

WIDTH, STEPS, TRAIN, TEST = 16, 8, 2048, 256
BANDS = ((1e-3, 0.05), (0.05, 0.2), (0.2, 0.5), (0.5, 1.0))


def toy(n: int, mixing: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    condition = torch.randn(n, WIDTH, STEPS, generator=generator) * 0.5
    return condition, torch.einsum("ij,bjt->bit", mixing, condition) + 0.05 * torch.randn(n, WIDTH, STEPS, generator=generator)


@torch.no_grad()
def band_losses(net, sde, condition, target) -> list[dict]:
    """Held-out score-matching loss per time band, the condition noised with fresh noise and with the target's."""
    rows = []
    for k, (low, high) in enumerate(BANDS):
        generator = torch.Generator().manual_seed(100 + k)
        t = torch.rand(len(target), generator=generator) * (high - low) + low
        z = torch.randn(target.shape, generator=generator)
        fresh = torch.randn(condition.shape, generator=generator)
        std = sde.std(t)[:, None, None]
        independent = ((net(target + z * std, t, condition + fresh * std) * std + z) ** 2).sum((1, 2)).mean().item()
        shared = ((net(target + z * std, t, condition + z * std) * std + z) ** 2).sum((1, 2)).mean().item()
        rows.append({"t": [low, high], "independent_noise": independent, "shared_noise": shared})
    return rows


def main() -> None:
    parser = benchmark_parser(__doc__, "imder_score")
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps per mode (batches of 64)")
    parser.add_argument("--modes", nargs="+", default=["shared", "independent", "none"], choices=["shared", "independent", "none"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads or 1)
    torch.manual_seed(args.seed)
    mixing = torch.randn(WIDTH, WIDTH) / WIDTH**0.5
    train_condition, train_target = toy(TRAIN, mixing, 1)
    test_condition, test_target = toy(TEST, mixing, 2)
    sde = VESDE(25.0)
    noise = torch.randn((TEST, sampler_noise_shape(100), WIDTH, STEPS), generator=torch.Generator().manual_seed(3))
    shuffled = test_condition[torch.randperm(TEST, generator=torch.Generator().manual_seed(4))]
    results = []
    for mode in args.modes:
        torch.manual_seed(args.seed)
        net = ScoreUNet(WIDTH, sde, (16, 16, 32, 32), 32, 2, 1, (4, 4))
        optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
        started = time.perf_counter()
        for step in range(args.steps):
            rows = torch.randint(0, TRAIN, (64,))
            loss = score_matching_loss(net, train_target[rows], train_condition[rows], sde, condition_noise=mode).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            sample = euler_maruyama(net, test_condition, sde, noise, steps=100)
            blind = euler_maruyama(net, shuffled, sde, noise, steps=100)
        row = {
            "mode": mode,
            "steps": args.steps,
            "train_s": round(time.perf_counter() - started, 1),
            "final_train_loss": loss.item(),
            "bands": band_losses(net, sde, test_condition, test_target),
            "sample_mse": (sample - test_target).pow(2).mean().item(),
            "shuffled_condition_mse": (blind - test_target).pow(2).mean().item(),
            "zeros_mse": test_target.pow(2).mean().item(),
            "sample_var": sample.var().item(),
        }
        results.append(row)
        print(
            f"{mode}: sample MSE {row['sample_mse']:.3f} (shuffled condition {row['shuffled_condition_mse']:.3f}, zeros {row['zeros_mse']:.3f}); "
            + ", ".join(f"t {b['t'][0]:g}-{b['t'][1]:g}: {b['independent_noise']:.1f} / {b['shared_noise']:.1f}" for b in row["bands"]),
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "results": results,
                "zero_network_loss": WIDTH * STEPS,
                "seed": args.seed,
                "threads": torch.get_num_threads(),
                "imsa": __version__,
                "torch": torch.__version__,
                "machine": platform.processor() or platform.machine(),
            },
            indent=1,
        )
    )
    lines = [
        "# IMDer's score network on a toy conditional distribution",
        "",
        f"`python benchmarks/imder_score.py --steps {args.steps}`: held-out score-matching loss "
        f"per time band (zero network: {WIDTH * STEPS}), condition noised independently / with the target's noise; 100-step sample MSE.",
        "",
        "| trained with | " + " | ".join(f"t {low:g}-{high:g}" for low, high in BANDS) + " | sample MSE | shuffled condition | zeros |",
        "|---|" + "---|" * (len(BANDS) + 3),
    ]
    lines += [
        f"| {r['mode']} | "
        + " | ".join(f"{b['independent_noise']:.1f} / {b['shared_noise']:.1f}" for b in r["bands"])
        + f" | {r['sample_mse']:.3f} | {r['shuffled_condition_mse']:.3f} | {r['zeros_mse']:.3f} |"
        for r in results
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"written: {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")


if __name__ == "__main__":
    main()
