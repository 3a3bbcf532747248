"""imsa's HME beside the authors' released network, on equal tensors: CPU per training epoch
and per evaluation pass (the harness: ``equal_tensors.py``).

Both sides take the released MOSI command's settings (imsa's defaults: width 192, 16 heads,
4 encoder layers, 4 latent layers, 5 latents, hyper depth 3) at this data's widths
(``mosi-misa``: 384-wide precomputed text vectors, word-aligned audio 74 and video 47, 44
steps), batches of 256 in training (so one batch of the 141 training utterances an epoch)
and 128 in evaluation (the 43 validation utterances). Every batch's missing modalities are
drawn once before timing with the release's draw (GCNet's ``random_mask``, imsa's
``rate:0.2``, the MOSI command's ``--missing_rate``) and given to both sides: imsa's
``Batch.present``, the released ``ps``. A training step is the loop body of the released
``train_epoch`` in ``HME_MSA/HME_main.py`` (forward, ``L1 + 0.8 * mean unimodal L1 + 0.01 *
mean KL``, backward, gradients clipped by value at 0.8, AdamW at 2e-5, decay 1e-4 on the
names without ``bias`` or ``LayerNorm.weight``, the optimiser built anew at every epoch's
first batch as ``train_epoch`` does) or imsa's (``hme_loss``, the same clipping, imsa's
fused AdamW made once, as its loop does). Evaluation is the released ``model.test`` or
imsa's forward. imsa runs with ``text_encoder=''`` (its default), once with its default
``padding_mask=true`` and once with ``padding_mask=false`` (padded steps read, as released:
the same work).

The released module is imported from a checkout of github.com/YetZzzzzz/HME (commit
6f0c9a7; ``--repo``; its ``HME_MSA`` folder goes on ``sys.path``, nothing is copied into
imsa) and patched at run time, in the released side's process only: ``transformers`` is
stubbed (``BertPreTrainedModel`` as a module with BERT's ``init_weights``: linear layers
N(0, 0.02) with zero bias, as ``from_pretrained`` gives the released module; the BERT
classes it imports but never builds here as placeholders), and ``HME_model.BERT_TM`` is the
identity on the precomputed text vectors (BERT's weights cannot be downloaded); the
release sizes its text convolution from ``TEXT_DIM``, set to 384, so nothing is rebuilt.
The optimiser is PyTorch's ``AdamW``: the ``transformers.optimization.AdamW`` the release
imports is gone from transformers 5 (the same update, decay applied before rather than
after the step). ``HME_main.py`` itself is not imported (it parses its arguments and wants
CUDA at import). The released module imports ``einops``: ``--pydeps PATH`` puts a folder
on the released side's ``sys.path`` (``pip install --target PATH einops``). Each side runs
``--repeats`` times in processes of its own, alternating, the fastest kept. Written to
``benchmarks/results/hme_released.{json,md}``.

    python benchmarks/reference/hme_released.py --repo PATH/TO/HME --pydeps PATH
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
MISSING_RATE = 0.2  # the README's MOSI command


def stub_transformers(torch) -> None:
    """What ``HME_model.py`` imports from ``transformers``: the base class with BERT's
    initialiser, and placeholders for the BERT parts that the identity replaces."""

    class BertPreTrainedModel(torch.nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config

        def init_weights(self):
            self.apply(self._init_weights)

        def _init_weights(self, module):  # BertPreTrainedModel's (LayerNorms keep PyTorch's 1 and 0)
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
            if isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.data.zero_()

    root, models, bert, modeling, activations = (
        types.ModuleType(n)
        for n in ("transformers", "transformers.models", "transformers.models.bert", "transformers.models.bert.modeling_bert", "transformers.activations")
    )
    root.BertPreTrainedModel, root.BertConfig = BertPreTrainedModel, None
    modeling.BertEmbeddings = modeling.BertEncoder = modeling.BertPooler = None
    activations.gelu = activations.gelu_new = torch.nn.functional.gelu
    for module in (root, models, bert, modeling, activations):
        sys.modules[module.__name__] = module


class Restarting:
    """The released ``train_epoch``'s optimiser: built anew (fresh Adam moments) at each
    epoch's first batch."""

    def __init__(self, build, per_epoch: int):
        self.build, self.per_epoch, self.calls, self.optimizer = build, per_epoch, 0, None

    def step(self):
        if self.calls % self.per_epoch == 0:
            self.optimizer = self.build()
        self.calls += 1
        self.optimizer.step()

    def zero_grad(self):
        self.optimizer.zero_grad()


def run_side(args) -> None:
    import json

    import numpy as np
    import torch
    import torch.nn.functional as F

    from imsa.methods.hme import HME, hme_loss
    from imsa.methods.phase import parameter_groups
    from imsa.methods.spec import DataSpec
    from imsa.missing import make_sampler

    torch.set_num_threads(1)
    dataset, split = mosi_misa(args.data_dir)
    sampler, rng = make_sampler(f"rate:{MISSING_RATE}"), np.random.default_rng(7)

    def masked(batch):  # one draw per batch, before timing, shared by both sides
        return batch.with_present(torch.as_tensor(sampler.sample(len(batch), dataset.modalities, rng)))

    training = [[masked(b) for b in batches] for batches in shuffled_batches(split["train"], 256, args.epochs + 1)]
    validation = [masked(b) for b in shuffled_batches(split["valid"], 128, 1)[0]]
    method = HME(padding_mask=args.side != "imsa-unmasked")
    c = method.config
    torch.manual_seed(1)
    if args.side == "released":
        add_pydeps(args)
        sys.path.insert(0, str(args.repo / "HME_MSA"))
        stub_transformers(torch)
        import HME_model

        class Identity(torch.nn.Module):  # BERT: the precomputed word vectors stand in for its last states
            def __init__(self, *_):
                super().__init__()

            def forward(self, input_ids, **_):
                return input_ids

        HME_model.BERT_TM = Identity
        settings = types.SimpleNamespace(
            TEXT_DIM=dataset.dims["l"],
            ACOUSTIC_DIM=dataset.dims["a"],
            VISUAL_DIM=dataset.dims["v"],
            d_l=c.dim,
            train_batch_size=c.batch_size,
            num_heads=c.heads,
            layers=c.encoder_layers,
            attn_dropout=c.attn_dropout,
            attn_dropout_a=0.2,  # MOSI's; read by nothing (every encoder takes attn_dropout)
            attn_dropout_v=0.0,
            relu_dropout=c.relu_dropout,
            res_dropout=c.res_dropout,
            embed_dropout=c.embed_dropout,
            latent_layers=c.latent_layers,
            missing_rate=MISSING_RATE,
            similarity_threshold=c.similarity_threshold,
            num_latents=c.num_latents,
            hyper_depth=c.hyper_depth,
            output_dim=1,
            uncertainty_LB=c.uncertainty_lb,
            uncertainty_UB=c.uncertainty_ub,
            dropout=c.head_dropout,
        )
        model = HME_model.HME(types.SimpleNamespace(initializer_range=0.02), settings)
        named = list(model.named_parameters())
        no_decay = ("bias", "LayerNorm.weight")
        groups = [
            {"params": [p for n, p in named if not any(nd in n for nd in no_decay)], "weight_decay": c.weight_decay},
            {"params": [p for n, p in named if any(nd in n for nd in no_decay)], "weight_decay": 0.0},
        ]
        optimizer = Restarting(lambda: torch.optim.AdamW(groups, lr=c.lr, eps=1e-8), len(training[0]))

        def run(call, batch):
            return call(batch.inputs["l"], batch.inputs["v"], batch.inputs["a"], batch.present.long())

        def step(batch):  # train_epoch's loop body
            out, y = run(model, batch), batch.labels.view(-1)
            unimodal = sum(F.l1_loss(out[f"logits_{m}_p"].view(-1), y) for m in "lav") / 3.0
            return F.l1_loss(out["predictions"].view(-1), y) + 0.8 * unimodal + 0.01 * out["info_losses"]

        def evaluate():
            return [run(model.test, batch)["predictions"] for batch in validation]
    else:
        model = method.build(DataSpec.of(dataset))
        optimizer = torch.optim.AdamW(parameter_groups(model, c.weight_decay), lr=c.lr, fused=True)

        def step(batch):
            return hme_loss(model, batch, "regression", c)

        def evaluate():
            return [model(batch).prediction for batch in validation]

    parameters = list(model.parameters())
    print(json.dumps(time_epochs(model, step, evaluate, training, optimizer, lambda: torch.nn.utils.clip_grad_value_(parameters, c.grad_clip))))


def main() -> None:
    parser = side_parser(__doc__, "YetZzzzzz/HME", SIDES, repeats=True, pydeps="einops")
    args = parser.parse_args()
    if args.side:
        return run_side(args)
    if checkout_missing(args.repo, "YetZzzzzz/HME", "HME_MSA/HME_model.py"):
        return
    arguments = child_arguments(args)
    write_report(
        "hme",
        "HME: the released network beside imsa's, on equal tensors",
        f"`mosi-misa` fold 0, one training batch of 256 (141 utterances) and one evaluation batch of 128 (43), the release's masks at rate {MISSING_RATE}, precomputed text on both sides,",
        measure_alternating(__file__, SIDES, arguments, args.repeats),
        {"imsa": "imsa padding_mask=true", "imsa-unmasked": "imsa padding_mask=false"},
        sys.argv[1:],
        args.epochs,
    )


if __name__ == "__main__":
    main()
