"""imsa's P-RMF beside the authors' released network, on equal tensors: CPU per training epoch
and per evaluation pass (the harness: ``equal_tensors.py``).

Both sides take the released MOSI config (``P-RMF/configs/train_mosi.yaml``, imsa's
defaults: width 128, 8 prefix tokens, 8 heads, depth 2, four shared injection layers) at
this data's widths (``mosi-misa``: 384-wide precomputed text vectors, word-aligned audio 74
and video 47, 44 steps each) and batches of 32 in training and evaluation (the release's
one batch size for every loader). Training batches carry LNLN's training noise (frames
dropped at rate 0 with probability 1/2, else U(0, 1), per utterance and modality), drawn
once by imsa before timing; the validation split is scored at frame rate 0.5, the
release's ``missing_rate_eval_test``. A training step is the loop body of the released
``train`` in ``P-RMF/train.py`` (the forward on the clean and noisy inputs, its
``MultimodalLoss``: 0.1 reconstruction + MSE + 0.5 KL, backward, the gradient norm of every
parameter clipped at 1, AdamW in the released groups: the injection layers at 5e-6, the
encoders, proxy generator and head at 1e-4, decay 1e-4, the reconstructors left out) or
imsa's (``PRMFNet.losses`` with the same weights, the same clipping, imsa's fused AdamW in
``PRMF.param_groups``, as its loop does). Evaluation is the released forward without clean
inputs, or imsa's. imsa runs with ``text_encoder=''`` (its default), once with its default
``padding_mask=true`` and once with ``padding_mask=false`` (padded steps attended, as
released).

The released network is built from a checkout of github.com/1579364808/PRD-Net (commit
cdb0039, its ``P-RMF`` folder on ``sys.path``; ``--repo``; nothing is copied into imsa)
with its MOSI config, the input widths and lengths set to this data's, and in the released
side's process one run-time change: its ``models.bert`` module is replaced by one whose
``BertTextEncoder`` passes the precomputed text vectors through (BERT's weights cannot be
downloaded; the release's text projection is sized from the config's ``input_dims``, so
nothing is rebuilt). ``train.py`` itself is not imported (it parses its arguments at
import). The released modules import ``einops``: ``--pydeps PATH`` puts a folder on the
released side's ``sys.path`` (``pip install --target PATH einops``). Each side runs
``--repeats`` times in processes of its own, alternating, the fastest kept. Written to
``benchmarks/results/prmf_released.{json,md}``.

    python benchmarks/reference/prmf_released.py --repo PATH/TO/PRD-Net --pydeps PATH
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from equal_tensors import (  # noqa: E402
    add_pydeps,
    checkout_missing,
    child_arguments,
    measure_alternating,
    mosi_misa,
    shuffled_batches,
    side_parser,
    time_epochs,
    write_report,
)

SIDES = ("released", "imsa", "imsa-unmasked")
BATCH = 32  # base.batch_size, every loader's


def run_side(args) -> None:
    import json

    import torch

    from imsa.frames import FrameDrop, FramesInside
    from imsa.methods.phase import TrainingMasks, parameter_groups
    from imsa.methods.prmf import PRMF
    from imsa.methods.spec import DataSpec
    from imsa.missing import Complete

    torch.set_num_threads(1)
    dataset, split = mosi_misa(args.data_dir)
    noise = TrainingMasks(FramesInside(Complete(), FrameDrop("lnln")), dataset.modalities, 1, stream=7, dataset=dataset)
    training = [
        [(batch, noise.draw(batch, epoch).batch) for batch in batches] for epoch, batches in enumerate(shuffled_batches(split["train"], BATCH, args.epochs + 1))
    ]
    valid = TrainingMasks(FramesInside(Complete(), FrameDrop(0.5)), dataset.modalities, 2, stream=7, dataset=dataset)
    validation = [valid.draw(batch, 0).batch for batch in shuffled_batches(split["valid"], BATCH, 1)[0]]
    method = PRMF(padding_mask=args.side != "imsa-unmasked")
    c = method.config
    torch.manual_seed(1)
    if args.side == "released":
        import yaml

        add_pydeps(args)
        sys.path.insert(0, str(args.repo / "P-RMF"))
        bert = types.ModuleType("models.bert")

        class PassThrough(torch.nn.Module):  # the precomputed word vectors stand in for BERT's states
            def __init__(self, *_, **__):
                super().__init__()

            def forward(self, text):
                return text

        bert.BertTextEncoder = PassThrough
        sys.modules["models.bert"] = bert
        from core.losses import MultimodalLoss
        from models.P_RMF import build_model

        config = yaml.safe_load((args.repo / "P-RMF" / "configs" / "train_mosi.yaml").read_text())
        extractor = config["model"]["feature_extractor"]
        extractor["input_dims"] = [dataset.dims[m] for m in "lva"]
        extractor["input_length"] = [dataset.features[m].shape[1] for m in "lva"]
        model, loss_fn = build_model(config), MultimodalLoss(config)
        lr, slow = config["base"]["lr"], 5e-6  # train.py's groups: BERT and the injection layers at 5e-6
        parts = [model.bertmodel, model.crossmodal_encoder, model.proj_l, model.proj_a, model.proj_v, model.generate_proxy_modality, model.fc1, model.fc2]
        groups = [{"params": part.parameters(), "lr": slow if i < 2 else lr} for i, part in enumerate(parts)]
        optimizer = torch.optim.AdamW(groups, weight_decay=config["base"]["weight_decay"])

        def inputs(batch):  # (vision, audio, language); dropped and padded steps are zeros
            return batch.inputs["v"], batch.inputs["a"], batch.inputs["l"]

        def step(pair):  # train's loop body
            clean, noisy = pair
            return loss_fn(model(inputs(clean), inputs(noisy)), {"sentiment_labels": clean.labels[:, None]})["loss"]

        def evaluate():
            return [model((None, None, None), inputs(batch))["sentiment_preds"] for batch in validation]
    else:
        model = method.build(DataSpec.of(dataset))
        optimizer = torch.optim.AdamW(
            [{**group, **part} for group in method.param_groups(model) for part in parameter_groups(group["params"], c.weight_decay)], lr=c.lr, fused=True
        )

        def step(pair):  # PRMF.fit's loss
            clean, noisy = pair
            losses = model.losses(noisy, clean)
            return c.gamma * losses["reconstruction"] + c.sigma * losses["task"] + c.kl_weight * losses["variational"]

        def evaluate():
            return [model(batch).prediction for batch in validation]

    parameters = list(model.parameters())
    print(json.dumps(time_epochs(model, step, evaluate, training, optimizer, lambda: torch.nn.utils.clip_grad_norm_(parameters, c.grad_clip))))


def main() -> None:
    parser = side_parser(__doc__, "1579364808/PRD-Net", SIDES, repeats=True, pydeps="einops")
    args = parser.parse_args()
    if args.side:
        return run_side(args)
    if checkout_missing(args.repo, "1579364808/PRD-Net", "P-RMF/models/P_RMF.py"):
        return
    arguments = child_arguments(args)
    write_report(
        "prmf",
        "P-RMF: the released network beside imsa's, on equal tensors",
        f"`mosi-misa` fold 0, batches of {BATCH} with LNLN's training noise, validation at frame rate 0.5,",
        measure_alternating(__file__, SIDES, arguments, args.repeats),
        {"imsa": "imsa padding_mask=true", "imsa-unmasked": "imsa padding_mask=false"},
        sys.argv[1:],
        args.epochs,
    )


if __name__ == "__main__":
    main()
