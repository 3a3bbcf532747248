"""imsa's LNLN beside the authors' released network, on equal tensors: CPU per training epoch
and per evaluation pass (the harness: ``equal_tensors.py``).

Training batches of 64 carry LNLN's training noise (frames dropped at rate 0 with
probability 1/2, else U(0, 1), per utterance and modality), drawn once by imsa; the
validation split is scored at frame rate 0.5, the one rate the released trainer validates
at. The released network is built from a checkout of github.com/Haoyu-ha/LNLN (commit
80a052c; ``--repo``; its code is never copied into imsa) with its MOSI config, the widths
set to this data's (384 / 74 / 47, 44 steps), and in memory one change: its
``BertTextEncoder`` passes the precomputed vectors through. A training step is the released
``train`` loop's body (both forward passes, the loss, backward, AdamW) or imsa's
(``LNLNNet.losses`` with the same loss weights, backward, AdamW). imsa is measured with its
default ``padding_mask=true`` and with ``padding_mask=false`` (the released behaviour:
padded steps attended, so the same work). Needs ``einops`` (the released code imports it).
Written to ``benchmarks/results/lnln_released.{json,md}``.

    python benchmarks/reference/lnln_released.py --repo PATH/TO/LNLN
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from equal_tensors import checkout_missing, child_arguments, measure, mosi_misa, shuffled_batches, side_parser, time_epochs, write_report  # noqa: E402

LOSS_WEIGHTS = {"completeness": 0.9, "adversarial": 0.8, "reconstruction": 0.1, "task": 1.0}  # MOSI's alpha, beta, gamma, sigma


def run_side(args) -> None:
    import json

    import torch

    from imsa.frames import FrameDrop, FramesInside
    from imsa.methods.lnln import LNLN, completeness_labels
    from imsa.methods.phase import TrainingMasks
    from imsa.methods.spec import DataSpec
    from imsa.missing import Complete

    torch.set_num_threads(1)
    dataset, split = mosi_misa(args.data_dir)
    noise = TrainingMasks(FramesInside(Complete(), FrameDrop("lnln")), dataset.modalities, 1, stream=7, dataset=dataset)
    training = [
        [(batch, noise.draw(batch, epoch).batch) for batch in batches] for epoch, batches in enumerate(shuffled_batches(split["train"], 64, args.epochs + 1))
    ]
    valid = TrainingMasks(FramesInside(Complete(), FrameDrop(0.5)), dataset.modalities, 2, stream=7, dataset=dataset)
    validation = valid.draw(shuffled_batches(split["valid"], 1024, 1)[0][0], 0).batch
    torch.manual_seed(1)
    if args.side == "released":
        import yaml

        sys.path.insert(0, str(args.repo))
        bert = types.ModuleType("models.bert")

        class PassThrough(torch.nn.Module):  # the precomputed word vectors stand in for BERT's states
            def __init__(self, *unused, **unused_keywords):
                super().__init__()

            def forward(self, text):
                return text

        bert.BertTextEncoder = PassThrough
        sys.modules["models.bert"] = bert
        from core.losses import MultimodalLoss
        from models.lnln import build_model

        config = yaml.safe_load((Path(args.repo) / "configs" / "train_mosi.yaml").read_text())
        steps = dataset.features["l"].shape[1]
        config["model"]["feature_extractor"]["input_dims"] = [dataset.dims["l"], dataset.dims["v"], dataset.dims["a"]]
        config["model"]["feature_extractor"]["input_length"] = [steps, steps, steps]
        model, loss_fn = build_model(config), MultimodalLoss(config)

        def inputs(batch):  # (vision, audio, language); dropped and padded steps are zeros
            return batch.inputs["v"], batch.inputs["a"], batch.inputs["l"]

        def step(pair):
            clean, noisy = pair
            out = model(inputs(clean), inputs(noisy))
            n = len(clean)
            label = {
                "sentiment_labels": clean.labels[:, None],
                "completeness_labels": completeness_labels(noisy, dataset, "l")[:, None],
                "effectiveness_labels": torch.cat([torch.ones(n * 8), torch.zeros(n * 8)]).long(),
            }
            return loss_fn(out, label)["loss"]

        def evaluate():
            return model((None, None, None), inputs(validation))["sentiment_preds"]
    else:
        model = LNLN(padding_mask=args.side == "imsa").build(DataSpec.of(dataset))

        def step(pair):
            clean, noisy = pair
            losses = model.losses(noisy, clean, completeness_labels(noisy, dataset, "l"))
            return sum(LOSS_WEIGHTS[k] * v for k, v in losses.items())

        def evaluate():
            return model(validation).prediction

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    print(json.dumps(time_epochs(model, step, evaluate, training, optimizer)))


def main() -> None:
    args = side_parser(__doc__, "Haoyu-ha/LNLN", ("released", "imsa", "imsa-unmasked")).parse_args()
    if args.side:
        return run_side(args)
    if checkout_missing(args.repo, "Haoyu-ha/LNLN", "models/lnln.py"):
        return
    arguments = child_arguments(args)
    sides = {side: measure(__file__, side, arguments) for side in ("released", "imsa", "imsa-unmasked")}
    write_report(
        "lnln",
        "LNLN: the released network beside imsa's, on equal tensors",
        "`mosi-misa` fold 0, batches of 64 with LNLN's training noise, validation at frame rate 0.5,",
        sides,
        {"imsa": "imsa padding_mask=true", "imsa-unmasked": "imsa padding_mask=false"},
        sys.argv[1:],
        args.epochs,
    )


if __name__ == "__main__":
    main()
