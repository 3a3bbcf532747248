"""imsa's MMIN beside the authors' released network, on equal tensors: CPU per training epoch and
per evaluation pass (the harness: ``equal_tensors.py``), for both phases.

Imagination phase (the costlier; its rows are the main comparison): the pretrained
encoders (a frozen copy, the teacher) embed the modalities a batch's mask removes; the
student encoders read the masked batch, a 5-block cascade residual autoencoder imagines
the teacher's embedding, a second one maps it back (cycle), and the classifier reads the
latents; loss ``1 * task + 4 * imagination MSE + 2 * cycle MSE``, Adam (beta1 0.5), each
network's gradient norm clipped at 1.0 (the released ``MMINModel.backward``). Each
utterance gets one of the 6 incomplete conditions per epoch; imsa draws them (its
``incomplete`` sampler, in its step) and the released side gets the same masks,
precomputed, as its data loader draws them outside the step. Pretraining phase (the
released ``UttFusionModel``, imsa's ``UttFusion``): complete data, Adam (beta1 0.9),
dropout 0.3, clipping at 0.5. Settings: the released IEMOCAP scripts (``CAP_mmin.sh``,
``CAP_utt_fusion.sh``) at this data's widths, which imsa's ``MMINConfig`` defaults match
in widths (embeddings 128 per modality, LSTM + max-pool for audio and video, TextCNN for
text, autoencoder 256,128,64 x 5, classifier 128,128, dropout 0.5); its recipe keys set as
released: batches of 128, lr 2e-4 in both phases, clipping 1.0 / 0.5, no weight decay.
Data: ``mosi-misa`` fold 0, word-aligned sequences of 44 steps (the released encoders read
sequences); regression, so the task loss is the MSE (imsa's default for MMIN) on both
sides. imsa packs the LSTMs and masks padded steps; the released encoders run over them.

The released code comes from a checkout of github.com/AIM3-RUC/MMIN (branch ``master``,
commit 69a45fe; ``--repo``; never copied into imsa). Patched in memory only: the
pretrained encoder is an ``UttFusionModel`` built in memory (the released
``load_pretrained_encoder`` reads a checkpoint and calls ``.cuda()``), its encoders copied
into the student as ``post_process`` does, without the ``DataParallel`` prefix; weights
initialised by the released ``init_weights`` (kaiming), as ``setup`` does; the
cross-entropy criterion replaced by the MSE of the squeezed output (MOSI is regression);
checkpoints go to a temporary folder. Written to ``benchmarks/results/mmin_released.{json,md}``.

    python benchmarks/reference/mmin_released.py --repo PATH/TO/MMIN
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from equal_tensors import add_phase, checkout_missing, child_arguments, measure, mosi_misa, shuffled_batches, side_parser, time_epochs, write_report  # noqa: E402

SIDES = ("released", "imsa", "released-pretrain", "imsa-pretrain")
RECIPE = {"batch_size": 128, "lr": 2e-4, "pretrain_lr": 2e-4, "grad_clip": 1.0, "pretrain_grad_clip": 0.5, "weight_decay": 0.0}


class ReleasedModel:
    """What the harness needs of a released ``BaseModel``: train / eval modes and the trained parameters."""

    def __init__(self, model):
        self.model = model

    def train(self):
        self.model.train()

    def eval(self):
        self.model.eval()

    def parameters(self):
        return (p for name in self.model.model_names for p in getattr(self.model, "net" + name).parameters())


def released_model(repo: Path, phase: str, dataset, c, work: Path):
    """The released ``MMINModel`` (phase ``mmin``) or ``UttFusionModel`` (``pretrain``), patched for a CPU run on this data."""
    import torch.nn.functional as F

    sys.path.insert(0, str(repo))
    from models.mmin_model import MMINModel
    from models.networks import tools
    from models.utt_fusion_model import UttFusionModel

    (work / "mmin").mkdir(parents=True, exist_ok=True)
    opt = types.SimpleNamespace(
        gpu_ids=[],
        isTrain=True,
        checkpoints_dir=str(work),
        name="mmin",
        cuda_benchmark=False,
        cvNo=1,
        input_dim_a=dataset.dims["a"],
        input_dim_v=dataset.dims["v"],
        input_dim_l=dataset.dims["l"],
        embd_size_a=c.embed_dim,
        embd_size_v=c.embed_dim,
        embd_size_l=c.embed_dim,
        embd_method_a="maxpool",
        embd_method_v="maxpool",
        AE_layers="256,128,64",
        n_blocks=5,
        cls_layers="128,128",
        dropout_rate=c.dropout,
        bn=False,
        output_dim=1,
        share_weight=False,
        ce_weight=c.ce_weight,
        mse_weight=4.0,
        cycle_weight=c.cycle_weight,
        lr=c.lr,
        beta1=0.5,
        weight_decay=0.0,
        modality="AVL",
        pretrained_path=None,
    )
    pretrain_opt = types.SimpleNamespace(**{**vars(opt), "dropout_rate": c.pretrain_dropout, "beta1": 0.9, "isTrain": phase == "pretrain"})
    if phase == "pretrain":
        model = UttFusionModel(pretrain_opt)
    else:

        def load_pretrained_encoder(self, opt):  # in memory, on the CPU
            self.pretrained_encoder = UttFusionModel(pretrain_opt)
            self.pretrained_encoder.eval()

        MMINModel.load_pretrained_encoder = load_pretrained_encoder
        model = MMINModel(opt)
    for name in model.model_names:  # setup's init_net
        tools.init_weights(getattr(model, "net" + name), "kaiming", 0.012)
    if phase == "mmin":  # post_process: the student starts from the pretrained encoders
        for name in "AVL":
            getattr(model, "net" + name).load_state_dict(getattr(model.pretrained_encoder, "net" + name).state_dict())
    model.criterion_ce = lambda logits, label: F.mse_loss(logits.squeeze(-1), label)  # regression
    return model


def run_side(args) -> None:
    import tempfile

    import torch
    import torch.nn.functional as F

    from imsa.methods.mmin import MMIN, UttFusion, _module_groups, _squeezed
    from imsa.methods.phase import TrainingMasks, task_loss
    from imsa.methods.spec import DataSpec
    from imsa.missing import make_sampler
    from imsa.nn.autoencoders import init_weights, mlp
    from imsa.protocols import Protocol

    torch.set_num_threads(1)
    method = MMIN(**RECIPE)
    c = method.config
    phase = "pretrain" if args.side.endswith("pretrain") else "mmin"
    dataset, split = mosi_misa(args.data_dir)
    spec = DataSpec.of(dataset)
    masks = TrainingMasks(Protocol().training_sampler(make_sampler(c.train_missing)), spec.modalities, 1, stream=7)
    training = [[(batch, epoch) for batch in batches] for epoch, batches in enumerate(shuffled_batches(split["train"], c.batch_size, args.epochs + 1))]
    validation = shuffled_batches(split["valid"], 1024, 1)[0][0]
    torch.manual_seed(1)
    if args.side.startswith("released"):
        work = Path(tempfile.mkdtemp(prefix="mmin_released_"))
        released = released_model(args.repo, phase, dataset, c, work)
        model = ReleasedModel(released)
        clip_value = c.pretrain_grad_clip if phase == "pretrain" else c.grad_clip
        columns = [spec.modalities.index(m) for m in "avl"]  # the released missing_index: (A, V, L)
        missing = {}
        if phase == "mmin":  # the data loader's draw, outside the step: the masks imsa's step draws
            for batches in training:
                for batch, epoch in batches:
                    missing[id(batch)] = masks.draw(batch, epoch).present[:, columns].long()

        def feed(batch, missing_index=None):
            released.set_input(
                {"A_feat": batch.inputs["a"], "V_feat": batch.inputs["v"], "L_feat": batch.inputs["l"], "label": batch.labels, "missing_index": missing_index}
            )

        def step(pair):
            batch, _ = pair
            feed(batch, missing.get(id(batch)))
            released.forward()
            if phase == "pretrain":
                return released.criterion_ce(released.logits, released.label)
            return (  # MMINModel.backward's loss
                released.ce_weight * released.criterion_ce(released.logits, released.label)
                + released.mse_weight * released.criterion_mse(released.T_embds, released.recon_fusion)
                + released.cycle_weight * released.criterion_mse(released.feat_fusion_miss.detach(), released.recon_cycle)
            )

        def clip():
            for name in released.model_names:
                torch.nn.utils.clip_grad_norm_(getattr(released, "net" + name).parameters(), clip_value)

        def evaluate():
            feed(validation)
            released.forward()
            return released.logits

        optimizer = released.optimizer
    else:
        _, ae_blocks, mse_weight = c.resolved
        pretrained = UttFusion(
            method._encoders(spec, c.pretrain_dropout), mlp(len(spec.modalities) * c.embed_dim, c.classifier_layers, 1, dropout=c.pretrain_dropout), spec.task
        )
        init_weights(pretrained, c.pretrain_init)
        if phase == "pretrain":
            model, clip_value, betas, lr = pretrained, c.pretrain_grad_clip, c.pretrain_betas, c.pretrain_lr

            def step(pair):
                batch, _ = pair
                return task_loss(model(batch).prediction, batch, spec.task, c.regression_loss)

            def evaluate():
                return model(validation).prediction
        else:
            from imsa.methods.mmin import MMINTraining

            net = method.build(spec)
            model = MMINTraining(net, method._autoencoder(len(spec.modalities) * c.embed_dim)[0], None)
            init_weights(model, c.init)
            net.encoders.load_state_dict(pretrained.encoders.state_dict())
            teacher = pretrained.encoders.requires_grad_(False).eval()
            clip_value, betas, lr = c.grad_clip, c.betas, c.lr

            def step(pair):  # MMIN.fit's phase-2 loss
                batch, epoch = pair
                drawn = masks.draw(batch, epoch)
                h, out, feature = model.net.run(drawn.batch)
                value = c.ce_weight * task_loss(_squeezed(model.net.classifier(feature), spec.task), drawn.batch, spec.task, c.regression_loss)
                with torch.no_grad():
                    target = teacher(drawn.complete.with_present(~drawn.present))
                value = value + mse_weight * F.mse_loss(out, target)
                return value + c.cycle_weight * F.mse_loss(model.cycle(out)[0], h.detach())

            def evaluate():
                return model.net(validation).prediction

        groups = _module_groups(model)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=betas, weight_decay=c.weight_decay, fused=True)

        def clip():  # imsa.training: each group's norm separately
            for group in groups:
                torch.nn.utils.clip_grad_norm_(group, clip_value)

    print(json.dumps(time_epochs(model, step, evaluate, training, optimizer, clip)))


def main() -> None:
    args = side_parser(__doc__, "AIM3-RUC/MMIN (branch master)", SIDES).parse_args()
    if args.side:
        return run_side(args)
    if checkout_missing(args.repo, "AIM3-RUC/MMIN, branch master", "models/mmin_model.py"):
        return
    arguments = child_arguments(args)
    sides = {side: measure(__file__, side, arguments) for side in SIDES}
    write_report(
        "mmin",
        "MMIN: the released network beside imsa's, on equal tensors",
        "`mosi-misa` fold 0, imagination phase (one incomplete condition per utterance, the same masks on both sides), batches of 128,",
        {side: sides[side] for side in ("released", "imsa")},
        {"imsa": "imagination phase, imsa"},
        sys.argv[1:],
        args.epochs,
        why="The released trainer reads its own IEMOCAP / MSP feature files; here both networks get the same batches instead, so no test metrics are compared:",
    )
    add_phase(
        "mmin",
        "pretrain",
        f"equal tensors, mosi-misa fold 0, {args.epochs} epochs, pretraining phase (complete data)",
        "Pretraining phase (encoders and a fusion classifier on complete data, Adam with beta1 0.9, clipping at 0.5), same batches:",
        sides["released-pretrain"],
        sides["imsa-pretrain"],
    )


if __name__ == "__main__":
    main()
