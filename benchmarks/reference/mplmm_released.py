"""imsa's MPLMM beside the authors' released networks, on equal tensors: CPU per training epoch
and per evaluation pass, for both stages (the harness: ``equal_tensors.py``).

Both sides take ``main.py``'s settings with the README's fine-tuning command (imsa's
defaults: width 30, 5 heads, 5 layers, causal attention, prompts of 16 steps, drop rate
0.7) at this data's widths (``mosi-misa``: 384-wide precomputed text vectors, word-aligned
audio 74 and video 47, 44 steps each), batches of 64 in training and evaluation, Adam at
1e-3 without decay, the gradient norm clipped at 0.8. A step is the loop body of the
released ``train`` in ``src/train.py`` (forward, L1, backward, clipping, Adam) or imsa's
(``task_loss`` on the network's prediction, the same clipping, imsa's fused Adam over
the trainable tensors, as its loop does).

* ``prompt`` (the report's main table): the released ``PromptModel`` with the tensors of
  a ``MULTModel`` loaded and frozen as ``src/utils.py``'s ``transfer_model`` does (all but
  the projections and the output layer; the stage-1 weights are this fresh
  ``MULTModel``'s, as timing does not depend on them), beside imsa's ``MPLMMNet`` with
  ``frozen_backbone`` frozen. Each row's missing type is drawn once per batch before
  timing with the released draw (an incomplete type, uniformly, with probability 0.7,
  imsa's ``fine_tuning_masks``) and given to both sides: imsa's ``Batch.present``, the
  released ``missing_mod`` code (0-6).
* ``pretrain``: the released ``MULTModel`` beside imsa's phase-0 network
  (``PretrainNetwork``), on complete data.

The released modules are imported from a checkout of github.com/zrguo/MPLMM (commit
c6f8d18; ``--repo``; its root goes on ``sys.path`` for ``src.model`` and ``modules``,
nothing is copied into imsa), unpatched: they read precomputed text as imsa does, and
their widths come from the settings. Not run: ``main.py`` (it parses its arguments and
loads the pickles at import) and its ``nn.DataParallel`` wrapper above 10 utterances,
which on a machine without CUDA calls the module itself. Each side runs ``--repeats``
times per stage in processes of its own, alternating, the fastest kept. Written to
``benchmarks/results/mplmm_released.{json,md}``.

    python benchmarks/reference/mplmm_released.py --repo PATH/TO/MPLMM
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from equal_tensors import add_phase, checkout_missing, child_arguments, measure_alternating, mosi_misa, shuffled_batches, side_parser, time_epochs, write_report  # noqa: E402

# the released missing_mod codes by the (l, a, v) modalities present
CODES = {(0, 1, 1): 0, (1, 0, 1): 1, (1, 1, 0): 2, (0, 0, 1): 3, (0, 1, 0): 4, (1, 0, 0): 5, (1, 1, 1): 6}
UNFROZEN = ("proj_l.weight", "proj_a.weight", "proj_v.weight", "out_layer.weight", "out_layer.bias")  # transfer_model's


def run_side(args) -> None:
    import json

    import numpy as np
    import torch
    import torch.nn.functional as F

    from imsa.methods.mplmm import MPLMM, PretrainNetwork, fine_tuning_masks, mult_network
    from imsa.methods.phase import task_loss
    from imsa.methods.spec import DataSpec

    torch.set_num_threads(1)
    dataset, split = mosi_misa(args.data_dir)
    method = MPLMM()
    c, spec = method.config, DataSpec.of(dataset)
    prompt = args.phase == "prompt"
    sampler, rng = fine_tuning_masks(dataset.modalities, c.drop_rate), np.random.default_rng(7)

    def masked(batch):  # one draw per batch, before timing, shared by both sides
        return batch.with_present(torch.as_tensor(sampler.sample(len(batch), dataset.modalities, rng))) if prompt else batch

    training = [[masked(b) for b in batches] for batches in shuffled_batches(split["train"], c.batch_size, args.epochs + 1)]
    validation = [masked(b) for b in shuffled_batches(split["valid"], c.batch_size, 1)[0]]
    torch.manual_seed(1)
    if args.side == "released":
        sys.path.insert(0, str(args.repo))
        from src.model import MULTModel, PromptModel

        settings = types.SimpleNamespace(
            orig_d_l=dataset.dims["l"],
            orig_d_a=dataset.dims["a"],
            orig_d_v=dataset.dims["v"],
            proj_dim=c.dim,
            prompt_dim=c.dim,
            num_heads=c.heads,
            layers=c.depth,
            attn_dropout=c.attn_dropout,
            attn_dropout_a=c.attn_dropout_a,
            attn_dropout_v=c.attn_dropout_v,
            relu_dropout=c.relu_dropout,
            res_dropout=c.res_dropout,
            out_dropout=c.output_dropout,
            embed_dropout=c.embed_dropout,
            attn_mask=c.causal,
            prompt_length=c.prompt_length,
            seq_len=tuple(dataset.features[m].shape[1] for m in "lav"),
            output_dim=1,
        )
        model = stage = MULTModel(settings)
        if prompt:  # transfer_model: stage 1's tensors loaded and frozen, but the projections and output layer
            pretrained = {k: v for k, v in stage.state_dict().items() if k not in UNFROZEN}
            model = PromptModel(settings)
            model.load_state_dict(pretrained, strict=False)
            for name, p in model.named_parameters():
                p.requires_grad_(name not in pretrained)
        optimizer = torch.optim.Adam(model.parameters(), lr=c.lr)

        def predict(batch):
            codes = torch.tensor([CODES[tuple(row)] for row in batch.present.int().tolist()])
            return model(batch.inputs["l"], batch.inputs["a"], batch.inputs["v"], codes)

        def step(batch):  # train's loop body
            return F.l1_loss(predict(batch), batch.labels.view(-1, 1))
    else:
        if prompt:
            model = method.build(spec)
            for p in model.frozen_backbone():
                p.requires_grad_(False)
        else:
            model = PretrainNetwork(mult_network(spec, c))
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=c.lr, fused=True)

        def predict(batch):
            return model(batch).prediction

        def step(batch):  # MPLMM.fit's loss
            return task_loss(predict(batch), batch, "regression", "l1")

    trainable = [p for p in model.parameters() if p.requires_grad]
    result = time_epochs(
        model, step, lambda: [predict(b) for b in validation], training, optimizer, lambda: torch.nn.utils.clip_grad_norm_(trainable, c.grad_clip)
    )
    print(json.dumps(result | {"trainable": sum(p.numel() for p in trainable)}))


def main() -> None:
    parser = side_parser(__doc__, "zrguo/MPLMM", ("released", "imsa"), repeats=True)
    parser.add_argument("--phase", choices=("prompt", "pretrain"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return run_side(args)
    if checkout_missing(args.repo, "zrguo/MPLMM", "src/model.py"):
        return
    arguments = child_arguments(args)
    write_report(
        "mplmm",
        "MPLMM: the released networks beside imsa's, on equal tensors",
        "`mosi-misa` fold 0, batches of 64, fine-tuning stage (the released `PromptModel` on a frozen MulT trunk, the release's masks at drop rate 0.7), precomputed text as released,",
        measure_alternating(__file__, ("released", "imsa"), arguments + ["--phase", "prompt"], args.repeats),
        {"imsa": "imsa, fine-tuning stage"},
        sys.argv[1:],
        args.epochs,
        why="The released trainer needs stage-1 weights pretrained on CMU-MOSEI and its pickles, so no test metrics are compared:",
    )
    sides = measure_alternating(__file__, ("released", "imsa"), arguments + ["--phase", "pretrain"], args.repeats)
    add_phase(
        "mplmm",
        "pretrain",
        f"equal tensors, mosi-misa fold 0, {args.epochs} epochs, pretraining stage (MULTModel, complete data)",
        "Pretraining stage: the released `MULTModel` beside imsa's phase-0 network, complete data:",
        sides["released"],
        sides["imsa"],
    )


if __name__ == "__main__":
    main()
