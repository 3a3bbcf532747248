"""imsa's DiCMoR beside the authors' released network, on equal tensors: CPU per training epoch
of the recovery phase and per evaluation pass (the harness: ``equal_tensors.py``).

Both networks take imsa's DiCMoR defaults (the released MOSI settings: MulT width 32, 8
heads, 4 crossmodal and 4 memory layers, kernel 5, dropouts 0.3 attention, 0.2 audio
attention and embedding, 0.5 output and text; three flows of 32 affine couplings, hidden
64; seven class priors; 20-block refiners), micro-batches of 4 with gradients summed over 8
of them (an incomplete last group dropped, as released), Adam at 1e-4, gradient values
clipped at 0.6 after every backward, and the released loss
``L1 + 0.1 (three flow NLLs in bits per dimension + reconstruction MSE)``. Missing
modalities: one pattern per micro-batch (as the release draws them), drawn uniformly from
the seven modality combinations by a seeded generator, the same on both sides (the
release's ``random.sample`` is replaced by the drawn pattern); imsa gets that pattern on
every row, so both recover the same rows. imsa runs with ``padding_mask=false``, as
released. An evaluation pass scores the validation split under all seven combinations
(imsa's fixed protocol does so every epoch): imsa in one stacked forward, as
``imsa.evaluation`` does, the release in seven forwards, each given the labels (its
forward computes the flows' likelihood from them even in evaluation).

The released network comes from a checkout of github.com/mdswyz/DiCMoR (``--repo``; commit
3d7e617; never copied into imsa) with ``use_bert`` off, so it reads the precomputed text
vectors as imsa does. Patched in memory only: its package ``__init__`` files are skipped
(they import the trainers) and ``BertTextEncoder`` is a stub (unused); the network itself
runs on the CPU unchanged. Weights are not shared. Written to
``benchmarks/results/dicmor_released.{json,md}``.

    python benchmarks/reference/dicmor_released.py --repo PATH/TO/DiCMoR
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from equal_tensors import checkout_missing, child_arguments, measure, mosi_misa, mult_settings, shuffled_batches, side_parser, time_epochs, write_report  # noqa: E402

RELEASED_INDEX = {"l": 0, "v": 1, "a": 2}  # the release's modal_idx: 0 text, 1 vision, 2 audio
SIDES = ("released", "imsa")


def import_released(repo: Path):
    """The released ``trains.singleTask.model.dicmor`` module, its package ``__init__`` files skipped."""
    import importlib

    for name, folder in (
        ("trains", "trains"),
        ("trains.subNets", "trains/subNets"),
        ("trains.singleTask", "trains/singleTask"),
        ("trains.singleTask.model", "trains/singleTask/model"),
    ):
        package = types.ModuleType(name)
        package.__path__ = [str(repo / folder)]
        sys.modules[name] = package
    sys.modules["trains.subNets"].BertTextEncoder = None  # use_bert is off
    return importlib.import_module("trains.singleTask.model.dicmor")


class Accumulated:
    """An optimizer stepped every ``every`` micro-batches, gradients summed in between;
    :meth:`new_epoch` drops an incomplete group (the released ``update_epochs``)."""

    def __init__(self, optimizer, every: int):
        self.optimizer, self.every, self.calls = optimizer, every, 0

    def step(self):
        self.calls += 1
        if self.calls % self.every == 0:
            self.optimizer.step()

    def zero_grad(self):
        if self.calls % self.every == 0:
            self.optimizer.zero_grad()

    def new_epoch(self):
        self.calls = 0
        self.optimizer.zero_grad()


def run_side(args) -> None:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from imsa.methods.dicmor import DiCMoR, bits_per_dim_nll, sentiment_classes, squared_error
    from imsa.methods.phase import task_loss
    from imsa.methods.spec import DataSpec
    from imsa.missing import fixed_conditions

    torch.set_num_threads(1)
    dataset, split = mosi_misa(args.data_dir)
    modalities = dataset.modalities
    masks = [torch.from_numpy(c.mask(modalities)) for c in fixed_conditions(modalities)]  # (M,) bool per combination
    method = DiCMoR()
    c = method.config
    training = [
        [(batch, masks[rng.integers(len(masks))]) for batch in batches]
        for epoch, batches in enumerate(shuffled_batches(split["train"], c.batch_size, args.epochs + 1))
        for rng in [np.random.default_rng([7, epoch])]
    ]
    validation = shuffled_batches(split["valid"], 1024, 1)[0][0]
    torch.manual_seed(1)
    if args.side == "released":
        released = import_released(args.repo)
        config = mult_settings(c, dataset.dims)
        model = released.DICMOR(config)
        pattern = [None]
        released.sample = lambda population, k: [RELEASED_INDEX[modalities[j]] for j in np.flatnonzero(pattern[0].numpy())]

        def forward(batch, present):
            pattern[0] = present
            labels = batch.labels.view(-1, 1)
            return model(batch.inputs["l"], batch.inputs["a"], batch.inputs["v"], labels, num_modal=int(present.sum()))

        def step(pair):  # the released do_train's loop body
            batch, present = pair
            out = forward(batch, present)
            task = F.l1_loss(out["M"], batch.labels.view(-1, 1))
            return task + c.nll_weight * (out["log_p_l"] + out["log_p_v"] + out["log_p_a"] + out["loss_rec"])

        def evaluate():
            return [forward(validation, present)["M"] for present in masks]

        parameters = list(model.parameters())
    else:
        model = method.build(DataSpec.of(dataset))
        model.backbone.projections.requires_grad_(False)  # frozen in the recovery phase

        def step(pair):  # DiCMoR._recovery's loss, the drawn pattern on every row
            batch, pattern = pair
            present = pattern.expand(len(batch), -1)
            drawn = batch.with_present(present)
            x, mask = model.backbone.projections(model.backbone.inputs(batch), batch.padding, torch.ones_like(present))
            classes = sentiment_classes(batch.labels)
            nll, latents = 0.0, {}
            for m in modalities:
                latents[m], logdet = model.flows[m](x[m])
                nll = nll + bits_per_dim_nll(logdet, model.priors.log_prob(latents[m], classes), x[m][0].numel(), clamp=c.clamp_nll)
            visible = {m: x[m] * present[:, k].to(x[m].dtype)[:, None, None] for k, m in enumerate(modalities)}
            recovered = model.recover(visible, present, None, latents)
            errors = torch.stack([squared_error(recovered[m], x[m].detach(), None) for m in modalities], dim=1)
            missing = (~present).to(errors.dtype)
            reconstruction = ((errors * missing).sum(1) / missing.sum(1).clamp(min=1)).mean()
            prediction = model.backbone.head(recovered, mask)[0]
            return task_loss(prediction, drawn, "regression", "l1") + c.nll_weight * nll + c.recon_weight * reconstruction

        stacked = validation.repeat(len(masks)).with_present(torch.stack(masks).repeat_interleave(len(validation), 0))

        def evaluate():  # imsa.evaluation's stacked forward over every combination
            return model(stacked).prediction

        parameters = [p for p in model.parameters() if p.requires_grad]

    def clip():
        torch.nn.utils.clip_grad_value_([p for p in model.parameters() if p.requires_grad], c.grad_clip)

    optimizer = Accumulated(torch.optim.Adam(parameters, lr=c.lr), c.accumulate)

    def evaluate_then_new_epoch():
        out = evaluate()
        optimizer.new_epoch()
        return out

    print(json.dumps(time_epochs(model, step, evaluate_then_new_epoch, training, optimizer, clip)))


def main() -> None:
    parser = side_parser(__doc__, "mdswyz/DiCMoR", SIDES)
    args = parser.parse_args()
    if args.side:
        return run_side(args)
    if checkout_missing(args.repo, "mdswyz/DiCMoR", "trains/singleTask/model/dicmor.py"):
        return
    arguments = child_arguments(args)
    sides = {side: measure(__file__, side, arguments) for side in SIDES}
    write_report(
        "dicmor",
        "DiCMoR: the released network beside imsa's, on equal tensors",
        "`mosi-misa` fold 0, recovery phase (micro-batches of 4, gradients summed over 8, one missing pattern per micro-batch drawn "
        "uniformly from the seven combinations, the same on both sides), evaluation under all seven combinations,",
        sides,
        {"imsa": "recovery phase, one model, imsa padding_mask=false (as released)"},
        sys.argv[1:],
        args.epochs,
        why="The released trainer needs BERT's weights and the authors' unreleased complete-data checkpoint, so no test metrics are compared:",
    )


if __name__ == "__main__":
    main()
