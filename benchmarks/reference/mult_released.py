"""imsa's MulT beside the released network it follows (MMSA's ``MULT``, the backbone IMDer and
DiCMoR build on), on equal tensors: CPU per training epoch and per evaluation pass (the
harness: ``equal_tensors.py``).

Both networks take imsa's MulT defaults (IMDer's MOSI backbone: width 32, 8 heads, 4
crossmodal and 4 memory layers, kernel 3, dropouts 0.2 on the embedding and the audio
attention, causal attention) at this data's widths, complete data, batches of 32, Adam at
1e-3 and the L1 loss; the released step also clips gradient values at 0.8, as MMSA's MULT
trainer does. The released module comes from a checkout of github.com/thuiar/MMSA
(``--repo``; its ``src`` folder is imported, never copied into imsa) with ``use_bert``
off, so it reads the precomputed text vectors as imsa does. imsa is measured as released
(``padding_mask=false``: padded steps attended, the last step read) and with
``padding_mask=true``. Written to ``benchmarks/results/mult_released.{json,md}``.

    python benchmarks/reference/mult_released.py --repo PATH/TO/MMSA
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from equal_tensors import measure, mosi_misa, shuffled_batches, time_epochs, write_report  # noqa: E402

from common import default_data_dir  # noqa: E402


def run_side(args) -> None:
    import json

    import torch
    import torch.nn.functional as F

    from imsa.methods.mult import MulTMethod
    from imsa.methods.spec import DataSpec

    torch.set_num_threads(1)
    dataset, split = mosi_misa(args.data_dir)
    training = shuffled_batches(split["train"], 32, args.epochs + 1)
    validation = shuffled_batches(split["valid"], 1024, 1)[0][0]
    method = MulTMethod(padding_mask=args.side == "imsa-masked")
    c = method.config
    torch.manual_seed(1)
    if args.side == "released":
        sys.path.insert(0, str(args.repo / "src"))
        from MMSA.models.singleTask.MULT import MULT

        config = types.SimpleNamespace(
            use_bert=False,
            dst_feature_dim_nheads=(c.dim, c.heads),
            feature_dims=(dataset.dims["l"], dataset.dims["a"], dataset.dims["v"]),
            nlevels=c.depth,
            attn_dropout=c.attn_dropout,
            attn_dropout_a=c.attn_dropout_a,
            attn_dropout_v=c.attn_dropout_v,
            relu_dropout=c.relu_dropout,
            embed_dropout=c.embed_dropout,
            res_dropout=c.res_dropout,
            output_dropout=c.output_dropout,
            text_dropout=c.text_dropout,
            attn_mask=c.causal,
            conv1d_kernel_size_l=c.conv_kernel,
            conv1d_kernel_size_a=c.conv_kernel,
            conv1d_kernel_size_v=c.conv_kernel,
            train_mode="regression",
            num_classes=1,
        )
        model = MULT(config)

        def predict(batch):
            return model(batch.inputs["l"], batch.inputs["a"], batch.inputs["v"])["M"].squeeze(-1)

        def clip():
            torch.nn.utils.clip_grad_value_(model.parameters(), 0.8)
    else:
        clip = None
        model = method.build(DataSpec.of(dataset))

        def predict(batch):
            return model(batch).prediction

    def step(batch):
        return F.l1_loss(predict(batch), batch.labels)

    optimizer = torch.optim.Adam(model.parameters(), lr=c.lr)
    print(json.dumps(time_epochs(model, step, lambda: predict(validation), training, optimizer, clip)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, help="a checkout of github.com/thuiar/MMSA")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per side, after one warm-up epoch")
    parser.add_argument("--side", choices=("released", "imsa", "imsa-masked"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return run_side(args)
    if args.repo is None or not (args.repo / "src" / "MMSA" / "models" / "singleTask" / "MULT.py").is_file():
        print("pass --repo PATH: a checkout of github.com/thuiar/MMSA (src/MMSA/models/singleTask/MULT.py); nothing measured")
        return
    arguments = ["--repo", str(args.repo), "--data-dir", str(args.data_dir), "--epochs", str(args.epochs)]
    sides = {side: measure(__file__, side, arguments) for side in ("released", "imsa", "imsa-masked")}
    write_report(
        "mult",
        "MulT: MMSA's released network beside imsa's, on equal tensors",
        "`mosi-misa` fold 0, complete data, batches of 32,",
        sides,
        {"imsa": "imsa padding_mask=false (as released)", "imsa-masked": "imsa padding_mask=true"},
        sys.argv[1:],
        args.epochs,
    )


if __name__ == "__main__":
    main()
