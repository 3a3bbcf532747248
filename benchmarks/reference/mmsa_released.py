"""imsa's MMIM and MISA beside the released networks they follow (MMSA's ``MMIM`` and ``MISA``),
on equal tensors: CPU per training epoch and per evaluation pass (the harness:
``equal_tensors.py``).

Both sides take MMSA's MOSI settings (imsa's defaults) at this data's widths (``mosi-misa``:
384-wide precomputed text vectors, word-aligned audio and video), complete data:

* ``mmim``: batches of 32; each epoch a likelihood pass (``-lld`` on the MMILB modules, their
  own Adam at 1e-3, L2 1e-4) over the epoch's batches, then the main pass (L1 + 0.1 × nce −
  0.1 × lld − 0.1 × H, the entropy memory of one batch; Adam at 1e-3, L2 1e-4); the gradient
  norm of every parameter clipped at 1.0 after each backward pass; the released
  ``xavier_normal_`` initialisation. The released side runs the loop bodies of
  ``trains/singleTask/MMIM.py`` (``train_mmilb`` and ``train_others``, re-typed here per
  batch), imsa's side ``MMIMNet.pair_terms`` and ``MMIMTraining.loss``.
* ``misa``: batches of 16, gradients summed over two batches per step (``update_epochs``; an
  odd last batch dropped), every entry clipped at ±0.8, Adam at 1e-4, MSE + 0.1 × difference
  + 0.3 × CMD + 1.0 × reconstruction (the released trainer's own ``get_*_loss`` methods;
  imsa's ``MISA.loss``).

Evaluation: one forward over the validation split. imsa's side uses fused Adam, as its
training loop does; the released side PyTorch's default Adam, as MMSA's trainers do.

The released modules come from a checkout of github.com/thuiar/MMSA (``--repo``; its ``src``
folder is imported, never copied into imsa), patched only at run time, in the released
side's process: the ``MMSA`` packages are bare (their ``__init__`` files import every model,
MMSA's config tooling and ``pytorch_transformers``); ``transformers``, ``tqdm`` and
``MMSA.utils`` (metrics only) are stubbed; ``BertTextEncoder`` is replaced by the identity on
the precomputed text vectors (the released models assert ``use_bert``), so no BERT is
downloaded or run on either side (imsa ``text_encoder=''``). MMIM runs unaligned
(``need_data_aligned`` false) with each row's real lengths; MISA reads its lengths from the
mask row of a ``(B, 3, L)`` text tensor built once per batch before timing (as loading is),
and its text projection, hard-wired to BERT's 768 inputs, is rebuilt for the data's 384.

Not measured here (their released modules need ``BertTextEncoder`` or whole-package imports
beyond this script's scope, and the time given to it ran out): ``self_mm``, ``tetfn``,
``almt``, ``tfr_net``, ``cenet``. Each side runs in processes of its own (``--repeats``
times, alternating, the fastest kept). Written to
``benchmarks/results/{mmim,misa}_released.{json,md}``.

    python benchmarks/reference/mmsa_released.py --repo PATH/TO/MMSA [--methods mmim misa]
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from equal_tensors import measure_alternating, mosi_misa, shuffled_batches, time_epochs, write_report  # noqa: E402

from common import default_data_dir  # noqa: E402

METHODS = ("mmim", "misa")
BATCH = {"mmim": 32, "misa": 16}


def stub_released(repo: Path) -> None:
    """Bare ``MMSA`` packages and stand-ins for what the released files import but these
    networks never use on precomputed text (run-time patches, this process only)."""
    import torch

    for name in ("MMSA", "MMSA.models", "MMSA.models.singleTask", "MMSA.trains", "MMSA.trains.singleTask"):
        package = types.ModuleType(name)
        package.__path__ = [str(repo / "src" / name.replace(".", "/"))]
        sys.modules[name] = package

    class BertTextEncoder(torch.nn.Module):
        """The identity on precomputed text vectors: ``states`` when set (MISA's token-id
        tensor carries only the mask), else its input."""

        def __init__(self, **_):
            super().__init__()
            self.states = None

        def forward(self, text):
            return text if self.states is None else self.states

    sub_nets = types.ModuleType("MMSA.models.subNets")
    sub_nets.BertTextEncoder = BertTextEncoder
    sys.modules["MMSA.models.subNets"] = sub_nets
    transformers = types.ModuleType("transformers")
    transformers.BertModel = transformers.BertConfig = None
    sys.modules.setdefault("transformers", transformers)
    tqdm = types.ModuleType("tqdm")
    tqdm.tqdm = lambda iterable, *a, **k: iterable
    sys.modules.setdefault("tqdm", tqdm)
    utils = types.ModuleType("MMSA.utils")
    utils.MetricsTop = lambda mode: types.SimpleNamespace(getMetics=lambda name: None)
    utils.dict_to_str = str
    sys.modules["MMSA.utils"] = utils


class Passes:
    """MMIM's two optimisers behind one ``step``/``zero_grad``: the one of the batch last
    stepped (the likelihood pass's or the main pass's)."""

    def __init__(self, mmilb, main, model):
        self.optimizers, self.model, self.active = {"lld": mmilb, "main": main}, model, "lld"

    def step(self):
        self.optimizers[self.active].step()

    def zero_grad(self):
        self.model.zero_grad()


class Accumulating:
    """An optimiser that steps every ``k``-th backward pass, its gradients zeroed after each
    step and at each epoch's first batch (``restart``), as MMSA's ``update_epochs`` loop does."""

    def __init__(self, optimizer, k: int):
        self.optimizer, self.k, self.calls = optimizer, k, 0

    def restart(self):
        self.calls = 0
        self.optimizer.zero_grad()

    def step(self):
        self.calls += 1
        if self.calls % self.k == 0:
            self.optimizer.step()

    def zero_grad(self):
        if self.calls % self.k == 0:
            self.optimizer.zero_grad()


def build_mmim(args, dataset, method, epochs, validation):
    import torch
    import torch.nn.functional as F

    from imsa.methods.mmim import MMIMTraining
    from imsa.methods.spec import DataSpec

    c = method.config
    torch.manual_seed(1)
    # each epoch: the likelihood pass over its batches, then the main pass over the same batches
    training = [[("lld", i, b) for i, b in enumerate(batches)] + [("main", i, b) for i, b in enumerate(batches)] for batches in epochs]
    if args.side == "released":
        from MMSA.models.singleTask.MMIM import MMIM

        config = types.SimpleNamespace(
            use_bert=True,
            use_finetune=False,
            transformers="bert",
            pretrained=None,
            num_classes=1,
            train_mode="regression",
            need_data_aligned=False,
            add_va=c.add_va,
            feature_dims=[dataset.dims["l"], dataset.dims["a"], dataset.dims["v"]],
            d_vh=c.video_hidden,
            d_ah=c.audio_hidden,
            d_vout=c.video_out,
            d_aout=c.audio_out,
            n_layer=c.lstm_layers,
            dropout_v=c.video_dropout,
            dropout_a=c.audio_dropout,
            bidirectional=c.bidirectional,
            mmilb_mid_activation=c.mmilb_activation,
            mmilb_last_activation="Tanh",
            d_prjh=c.fusion_hidden,
            cpc_layers=c.cpc_layers,
            cpc_activation=c.cpc_activation,
            dropout_prj=c.fusion_dropout,
        )
        model = MMIM(config)
        mmilb_param, main_param, bert_param = [], [], []
        for name, p in model.named_parameters():  # the released do_train's groups and initialisation
            if p.requires_grad:
                (bert_param if "bert" in name else mmilb_param if "mi" in name else main_param).append(p)
            for q in mmilb_param + main_param:
                if q.dim() > 1:
                    torch.nn.init.xavier_normal_(q)
        mmilb = torch.optim.Adam(mmilb_param, lr=c.mmilb_lr, weight_decay=c.mmilb_weight_decay)
        main = torch.optim.Adam(
            [
                {"params": bert_param, "weight_decay": c.text_weight_decay, "lr": c.text_lr},
                {"params": main_param, "weight_decay": c.weight_decay, "lr": c.lr},
            ]
        )
        lengths = {}  # each batch's real lengths, on the CPU as the released loader gives them

        def inputs(batch):
            if id(batch) not in lengths:
                lengths[id(batch)] = {m: batch.padding[m].sum(1).clamp(min=1).to(torch.int64) for m in ("a", "v")}
            n = lengths[id(batch)]
            return batch.inputs["l"], (batch.inputs["a"], n["a"]), (batch.inputs["v"], n["v"])

        memory = {}

        def step(item):
            phase, i, batch = item
            optimizer.active = phase
            if phase == "lld":  # train_mmilb's loop body
                return -model(*inputs(batch))["lld"]
            labels = batch.labels.view(-1, 1)  # train_others's loop body
            if i == 0:
                memory.update({key: [] for key in ("pos_tv", "neg_tv", "pos_ta", "neg_ta")})
            if i >= c.mem_size:
                mem = {pair: {"pos": memory[f"pos_{pair}"], "neg": memory[f"neg_{pair}"]} for pair in ("tv", "ta")} | {"va": None}
            else:
                mem = {"tv": None, "ta": None, "va": None}
            results = model(*inputs(batch), y=labels, mem=mem)
            y_loss = F.l1_loss(results["M"], labels)
            for pair in ("tv", "ta"):
                for side in ("pos", "neg"):
                    stored = memory[f"{side}_{pair}"]
                    if len(stored) < c.mem_size:
                        stored.append(results["pn_dic"][pair][side].detach())
                    else:
                        stored[i % c.mem_size] = results["pn_dic"][pair][side].detach()
            loss = y_loss + c.alpha * results["nce"] - c.beta * results["lld"]
            if i > c.mem_size:
                loss -= c.beta * results["H"]
            return loss

        def evaluate():
            return model(*inputs(validation))["M"]

        for batches in epochs:  # the lengths precomputed before timing, as loading is
            for batch in batches:
                inputs(batch)
        inputs(validation)
    else:
        method.spec_ = DataSpec.of(dataset)
        model = method.build(method.spec_)
        state = MMIMTraining(method, model, None, None, 1, torch.device("cpu"))
        mmilb = state.optimizer  # imsa's: fused Adam on the MMILB modules
        main = torch.optim.Adam(method.param_groups(model), lr=c.lr, fused=True)
        counter = iter(range(10**9))

        def step(item):
            phase, i, batch = item
            optimizer.active = phase
            if phase == "lld":  # MMIMTraining.likelihood_pass's loop body
                lld, _ = model.pair_terms(model.vectors(batch), model.present_rows(batch))
                return -lld
            if i == 0:  # a new epoch: the memory and the batch counter start afresh
                state.epoch, state.step = next(counter), 0
                state.memory.clear()
            return state.loss(model, batch, state.epoch)

        def evaluate():
            return model(validation).prediction

    optimizer = Passes(mmilb, main, model)
    parameters = list(model.parameters())
    return model, step, evaluate, training, optimizer, lambda: torch.nn.utils.clip_grad_norm_(parameters, c.grad_clip)


def build_misa(args, dataset, method, epochs, validation):
    import torch

    from imsa.methods.spec import DataSpec

    c = method.config
    torch.manual_seed(1)
    training = [list(enumerate(batches)) for batches in epochs]
    if args.side == "released":
        from MMSA.models.singleTask.MISA import MISA
        from MMSA.trains.singleTask.MISA import MISA as Trainer

        settings = dict(
            use_bert=True,
            use_finetune=False,
            transformers="bert",
            pretrained=None,
            num_classes=1,
            train_mode="regression",
            dataset_name="mosi",
            feature_dims=[dataset.dims["l"], dataset.dims["a"], dataset.dims["v"]],
            rnncell="lstm",
            use_cmd_sim=c.similarity == "cmd",
            hidden_size=c.hidden,
            dropout=c.dropout,
            reverse_grad_weight=c.reverse_grad_weight,
            diff_weight=c.diff_weight,
            sim_weight=c.sim_weight,
            recon_weight=c.recon_weight,
            grad_clip=c.grad_clip,
        )
        model = MISA(types.SimpleNamespace(**settings))
        model.project_t.project_t = torch.nn.Linear(dataset.dims["l"], c.hidden)  # hard-wired to BERT's 768
        trainer = Trainer(types.SimpleNamespace(**settings))
        trainer.model = types.SimpleNamespace(Model=model)  # the trainer reads the codes through AMIO's .Model
        tokens = {}  # each batch's (B, 3, L) text tensor: only its mask row is read

        def token_tensor(batch):
            if id(batch) not in tokens:
                mask = batch.padding["l"].to(batch.inputs["l"].dtype)
                tokens[id(batch)] = torch.stack([torch.zeros_like(mask), mask, torch.zeros_like(mask)], dim=1)
            return tokens[id(batch)]

        def predict(batch):
            model.bertmodel.states = batch.inputs["l"]
            return model(token_tensor(batch), batch.inputs["a"], batch.inputs["v"])["M"]

        def loss(batch):
            outputs = predict(batch)
            similarity = trainer.get_cmd_loss() if settings["use_cmd_sim"] else trainer.get_domain_loss()
            return (
                trainer.criterion(outputs, batch.labels.view(-1, 1))
                + c.diff_weight * trainer.get_diff_loss()
                + c.sim_weight * similarity
                + c.recon_weight * trainer.get_recon_loss()
            )

        optimizer = Accumulating(torch.optim.Adam(filter(lambda p: p.requires_grad, model.parameters()), lr=c.lr), c.accumulate)
        for batches in epochs:  # the text tensors built before timing, as loading is
            for batch in batches:
                token_tensor(batch)
        token_tensor(validation)
    else:
        method.spec_ = DataSpec.of(dataset)
        model = method.build(method.spec_)

        def predict(batch):
            return model(batch).prediction

        def loss(batch):
            return method.loss(model, batch)

        optimizer = Accumulating(torch.optim.Adam(model.parameters(), lr=c.lr, weight_decay=c.weight_decay, fused=True), c.accumulate)

    def step(item):
        i, batch = item
        if i == 0:
            optimizer.restart()
        return loss(batch)

    parameters = [p for p in model.parameters() if p.requires_grad]
    return model, step, lambda: predict(validation), training, optimizer, lambda: torch.nn.utils.clip_grad_value_(parameters, c.grad_clip)


def run_side(args) -> None:
    import json

    import torch

    from imsa.methods.registry import create_method

    torch.set_num_threads(1)
    method = create_method(args.method)
    dataset, split = mosi_misa(args.data_dir)
    epochs = shuffled_batches(split["train"], method.config.batch_size, args.epochs + 1)
    validation = shuffled_batches(split["valid"], 1024, 1)[0][0]
    if args.side == "released":
        stub_released(args.repo)
    build = {"mmim": build_mmim, "misa": build_misa}[args.method]
    model, step, evaluate, training, optimizer, clip = build(args, dataset, method, epochs, validation)
    print(json.dumps(time_epochs(model, step, evaluate, training, optimizer, clip)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, help="a checkout of github.com/thuiar/MMSA")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per side, after one warm-up epoch")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, alternating; the fastest is kept (default 3)")
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=("released", "imsa"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return run_side(args)
    if args.repo is None or not (args.repo / "src" / "MMSA" / "models" / "singleTask" / "MMIM.py").is_file():
        print("pass --repo PATH: a checkout of github.com/thuiar/MMSA (src/MMSA/models/singleTask/MMIM.py); nothing measured")
        return
    for method in args.methods:
        arguments = ["--repo", str(args.repo), "--data-dir", str(args.data_dir), "--epochs", str(args.epochs), "--method", method]
        sides = measure_alternating(__file__, ("released", "imsa"), arguments, args.repeats)
        steps = "one likelihood and one main pass per epoch" if method == "mmim" else "gradients summed over two batches per step"
        write_report(
            method,
            f"{method.upper()}: MMSA's released network beside imsa's, on equal tensors",
            f"`mosi-misa` fold 0, complete data, batches of {BATCH[method]} ({steps}), precomputed text on both sides,",
            sides,
            {"imsa": "imsa"},
            sys.argv[1:],
            args.epochs,
            script="mmsa_released.py",
        )


if __name__ == "__main__":
    main()
