"""imsa's CMAD beside the authors' released networks, on equal tensors: CPU per training epoch
and per evaluation pass (the harness: ``equal_tensors.py``), for both phases.

Student phase (the costlier; its rows are the main comparison): a frozen teacher reads the
complete batch, the student the batch with one modality combination per sample drawn from
CMAD's 2/3/3/1/1/3/1 distribution (each side draws its own, from the same distribution),
and the step is the released ``train_model`` loop's body (CAFD, the L1 task loss and the
logit distillation, MAR weights all 1 as before ``begin_epoch``, AdamW, no clipping) or
imsa's student loss (as in ``CMAD.fit``). Teacher phase: complete data, L1 loss, AdamW,
gradient norm clipped at 1.0. Both sides take imsa's ``CMADConfig`` defaults, which are
the README's MOSEI command (width 96, Perceiver depth 5 with 5 latents, 16 heads of 16,
a 2-layer fusion encoder with 16 heads and FFN 2048, dropouts 0.1 / 0.3, batches of 128,
lr 2e-5, weight decay 1e-4 off biases and norms, tau 0.2, delta 0.1, gamma 1), at this
data's widths: ``mosi-misa`` fold 0, word-aligned sequences of 44 steps (no cut to 50).
imsa masks padded steps in the Perceivers; the released code attends to them.

The released networks come from a checkout of github.com/YetZzzzzz/CMAD (commit efc812b;
``--repo``; never copied into imsa): ``CMAD_sentiment/Student_Model`` (``StudentModel``,
its ``TeacherModel``) and ``CMAD_sentiment/Teacher_Model`` (``TeacherModel``). Patched in
memory only: ``BERT_TM`` (BERT and the text convolution) becomes that convolution alone over
the precomputed 384-wide word vectors (no BERT weights can be downloaded here); the names
the released code imports from ``transformers.modeling_utils`` that transformers 5 lacks are
stubbed (unused by these networks); ``init_weights`` (which needs ``post_init`` in
transformers 5) applies BERT's scheme, N(0, 0.02) Linear weights and zero biases, as 4.30
does. ``transformers.optimization.AdamW`` (removed in transformers 5) is replaced by
``torch.optim.AdamW`` with the released parameter groups and eps; imsa uses its own fused
AdamW. The released student trains in eval mode (``from_pretrained`` returns it so and
``evulate`` leaves it so), which the released side keeps; imsa's trains with dropout. Needs
``einops`` and ``transformers`` (the released code imports them). Written to
``benchmarks/results/cmad_released.{json,md}``.

    python benchmarks/reference/cmad_released.py --repo PATH/TO/CMAD
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from equal_tensors import add_phase, checkout_missing, child_arguments, measure, mosi_misa, shuffled_batches, side_parser, time_epochs, write_report  # noqa: E402

SIDES = ("released", "imsa", "released-teacher", "imsa-teacher")


def released_networks(repo: Path, phase: str, dataset, c):
    """The released ``(student, teacher)`` (student phase) or ``(teacher, None)``, patched for this data."""
    import torch
    import transformers.modeling_utils

    from imsa.methods.cmad import released_init

    for name in ("apply_chunking_to_forward", "find_pruneable_heads_and_indices", "prune_linear_layer"):
        if not hasattr(transformers.modeling_utils, name):  # imported, never used by these networks
            setattr(transformers.modeling_utils, name, None)
    sys.path.insert(0, str(repo / "CMAD_sentiment" / ("Student_Model" if phase == "student" else "Teacher_Model")))
    import teacher_model
    from transformers import BertConfig

    class TextConvolution(torch.nn.Module):  # BERT_TM without BERT: its convolution over the precomputed word vectors
        def __init__(self, config, args):
            super().__init__()
            self.proj_l = torch.nn.Conv1d(args.TEXT_DIM, args.d_l, kernel_size=3, stride=1, padding=1, bias=False)

        def forward(self, text, **unused):
            return self.proj_l(text.transpose(1, 2))

    def bert_init(self):
        self.apply(released_init)

    args = types.SimpleNamespace(
        d_l=c.dim,
        TEXT_DIM=dataset.dims["l"],
        ACOUSTIC_DIM=dataset.dims["a"],
        VISUAL_DIM=dataset.dims["v"],
        dropout_prob=c.head_dropout,
        num_heads=c.heads,
        te_layers=c.fusion_depth,
        num_latents=c.num_latents,
        depth=c.depth,
        relu_dropout=0.3,
        res_dropout=0.3,
        embed_dropout=0.2,
        attn_dropout=0.5,
        p_attn_dropout=c.perceiver_attention_dropout,
        p_ff_dropout=c.perceiver_ff_dropout,
    )
    modules = [teacher_model]
    if phase == "student":
        import student_model

        modules.append(student_model)
    for module in modules:
        module.BERT_TM = TextConvolution
    teacher_model.TeacherModel.init_weights = bert_init
    teacher = teacher_model.TeacherModel(BertConfig(), args)
    if phase == "teacher":
        return teacher, None
    student_model.StudentModel.init_weights = bert_init
    student = student_model.StudentModel(BertConfig(), args)
    return student, teacher


def released_optimizer(model, c):
    import torch

    no_decay = ["bias", "LayerNorm.weight"]
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(nd in n for nd in no_decay)], "weight_decay": c.weight_decay},
        {"params": [p for n, p in model.named_parameters() if any(nd in n for nd in no_decay)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=c.lr, eps=1e-8)


def run_side(args) -> None:
    import torch
    import torch.nn.functional as F

    from imsa.methods.cmad import CMAD, cafd_loss, logit_distillation, per_sample_task_loss
    from imsa.methods.phase import TrainingMasks, parameter_groups
    from imsa.methods.spec import DataSpec
    from imsa.missing import condition_index, make_sampler
    from imsa.protocols import Protocol

    torch.set_num_threads(1)
    method = CMAD()
    c = method.config
    phase = "teacher" if args.side.endswith("teacher") else "student"
    dataset, split = mosi_misa(args.data_dir)
    training = [[(batch, epoch) for batch in batches] for epoch, batches in enumerate(shuffled_batches(split["train"], c.batch_size, args.epochs + 1))]
    validation = shuffled_batches(split["valid"], 1024, 1)[0][0]
    torch.manual_seed(1)
    clip = None
    if args.side.startswith("released"):
        sys.path.insert(0, str(args.repo))
        model, teacher = released_networks(args.repo, phase, dataset, c)

        def inputs(batch):  # (text, visual, acoustic, label_ids)
            return batch.inputs["l"], batch.inputs["v"], batch.inputs["a"], batch.labels

        if phase == "teacher":

            def step(pair):
                batch, _ = pair
                return F.l1_loss(model(*inputs(batch))[0].view(-1), batch.labels.view(-1))

            def clip():
                torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)

            def evaluate():
                return model(*inputs(validation))[0]
        else:
            from loss import compute_weighted_mse_loss, regression_loss

            teacher.eval().requires_grad_(False)
            combinations = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 0], [0, 1, 1], [1, 1, 1]])
            mar_weights = torch.ones(7)  # epochs before begin_epoch

            def step(pair):  # the released train_model's loop body
                batch, _ = pair
                model.eval()  # as released: the student trains in eval mode
                model.p = [0, 0, 0]  # draw a combination per sample
                tea_logits, tea_hidden = teacher(*inputs(batch))
                stu_logits, stu_hidden, ps = model(*inputs(batch))
                wei_mse_loss, _, _ = compute_weighted_mse_loss(stu_hidden, tea_hidden, c.tau)
                stu_logits, tea_logits = stu_logits.view(-1), tea_logits.view(-1)
                loss_auxi = regression_loss(stu_logits, tea_logits, c.temperature)
                loss_task = F.l1_loss(stu_logits, batch.labels.view(-1), reduction="none")
                F.l1_loss(tea_logits, batch.labels.view(-1), reduction="none")  # the teacher's per-sample loss, kept for MAR
                mask_new = (ps.unsqueeze(1) == combinations).all(dim=2).float()
                mar_auxi_loss = torch.einsum("i,ij,j->i", loss_auxi, mask_new, mar_weights).mean()
                mar_spe_loss = torch.einsum("i,ij,j->i", loss_task, mask_new, mar_weights).mean()
                return c.delta * wei_mse_loss + mar_spe_loss + c.gamma * mar_auxi_loss

            def evaluate():
                model.p = [1, 1, 1]
                return model(*inputs(validation))[0]

        optimizer = released_optimizer(model, c)
    else:
        spec = DataSpec.of(dataset)
        model = method.build(spec)
        optimizer = torch.optim.AdamW(parameter_groups(model, c.weight_decay), lr=c.lr, fused=True)
        if phase == "teacher":

            def step(pair):
                batch, _ = pair
                return F.l1_loss(model(batch).prediction, batch.labels)

            def clip():
                torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
        else:
            teacher = method.build(spec).requires_grad_(False).eval()
            masks = TrainingMasks(Protocol().training_sampler(make_sampler(c.train_missing)), spec.modalities, 1, stream=7, dataset=dataset)
            mar_weights = torch.ones(2 ** len(spec.modalities) - 1)  # epochs before begin_epoch

            def step(pair):  # CMAD.fit's student_loss
                batch, epoch = pair
                drawn = masks.draw(batch, epoch)
                combination = torch.from_numpy(condition_index(drawn.present.numpy()))
                with torch.no_grad():
                    taught = teacher(drawn.complete)
                out = model(drawn.batch)
                task_term = per_sample_task_loss(out.prediction, batch.labels, spec.task)
                with torch.no_grad():
                    (task_term - per_sample_task_loss(taught.prediction, batch.labels, spec.task)).clamp(min=0)  # MAR's statistics
                weights = mar_weights[combination]
                loss = (weights * task_term).mean()
                distilled = logit_distillation(out.prediction, taught.prediction, spec.task, c.temperature)
                loss = loss + c.gamma * (weights * distilled).mean()
                return loss + c.delta * cafd_loss(out.feature, taught.feature, tau=c.tau)

        def evaluate():
            return model(validation).prediction

    print(json.dumps(time_epochs(model, step, evaluate, training, optimizer, clip)))


def main() -> None:
    args = side_parser(__doc__, "YetZzzzzz/CMAD", SIDES).parse_args()
    if args.side:
        return run_side(args)
    if checkout_missing(args.repo, "YetZzzzzz/CMAD", "CMAD_sentiment/Student_Model/student_model.py"):
        return
    arguments = child_arguments(args)
    sides = {side: measure(__file__, side, arguments) for side in SIDES}
    write_report(
        "cmad",
        "CMAD: the released networks beside imsa's, on equal tensors",
        "`mosi-misa` fold 0, student phase (a frozen teacher on the complete batch, the student on one drawn modality combination per sample), "
        "batches of 128, the MOSEI README's widths,",
        {side: sides[side] for side in ("released", "imsa")},
        {"imsa": "student phase, imsa"},
        sys.argv[1:],
        args.epochs,
    )
    add_phase(
        "cmad",
        "teacher",
        f"equal tensors, mosi-misa fold 0, {args.epochs} epochs, teacher phase (complete data)",
        "Teacher phase (complete data, L1 loss, AdamW, gradient norm clipped at 1.0), same batches:",
        sides["released-teacher"],
        sides["imsa-teacher"],
    )


if __name__ == "__main__":
    main()
