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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from equal_tensors import (  # noqa: E402
    bare_mmsa,
    checkout_missing,
    child_arguments,
    measure,
    mosi_misa,
    mult_settings,
    shuffled_batches,
    side_parser,
    time_epochs,
    write_report,
)


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
        bare_mmsa(args.repo)
        from MMSA.models.singleTask.MULT import MULT

        config = mult_settings(c, dataset.dims)
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
    parser = side_parser(__doc__, "thuiar/MMSA", ("released", "imsa", "imsa-masked"))
    args = parser.parse_args()
    if args.side:
        return run_side(args)
    if checkout_missing(args.repo, "thuiar/MMSA", "src/MMSA/models/singleTask/MULT.py"):
        return
    arguments = child_arguments(args)
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
