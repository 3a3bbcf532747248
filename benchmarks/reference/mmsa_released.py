"""imsa's MMIM, MISA, Self-MM, TETFN, ALMT, TFR-Net and CENET beside the released networks they
follow (MMSA's), on equal tensors: CPU per training epoch and per evaluation pass (the harness:
``equal_tensors.py``).

Both sides take MMSA's MOSI settings (imsa's defaults) at this data's widths (``mosi-misa``:
384-wide precomputed text vectors, word-aligned audio and video; 141 training utterances),
complete data unless said:

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
* ``self_mm``: batches of 16, gradients summed over four batches per step (an epoch's last
  incomplete group dropped, as released), Adam in the released groups (audio, video, the
  rest, each with its rate and L2), loss ``|M - y| + sum_s tanh(|y_s - y|) |S - y_s|`` on the
  stored labels, then the label generation's work per batch: new unimodal labels (from the
  second epoch on), the stored features, every class centre. The released side runs the
  loop body of ``trains/multiTask/SELF_MM.py`` with the trainer's own ``weighted_loss``,
  ``update_labels``, ``update_features`` and ``update_centers``; imsa's side ``ulgm_loss``
  on a ``UnimodalLabels`` store. Audio and video are packed with their real lengths
  (released ``need_data_aligned`` false); the released ``text_out`` is the data's 384.
* ``tetfn``: the same loop (``trains/multiTask/TETFN.py`` is Self-MM's trainer line for line)
  with TETFN's rates, at batches of 64: an epoch here is three batches, fewer than the four
  whose gradients make a step, so neither side steps; an epoch is forward, backward and the
  label generation.
* ``almt``: batches of 64, MSE, AdamW at 1e-4 with decay 1e-4 (imsa's groups skip
  one-dimensional weights), no clipping; the released positional tables
  (``feature_length``) have the data's 44 steps. imsa's side masks padding in its encoders
  (its default; the release attends padded steps), computes only the tokens read from the
  last layer of a prefix transformer and runs groups of similar length.
* ``tfr_net``: batches of 24, 0.2 of the real frames of each modality dropped in training;
  L1 plus, from the second epoch, the weighted reconstruction loss of the lost frames
  (SmoothL1 + 5 × CMD); every gradient entry clipped at ±0.8; Adam at 1e-3, L2 1e-3. The
  released side runs ``TFR_NET``'s forward, which returns the reconstruction loss (in
  evaluation too, as released), and the loop body of ``trains/missingTask/TFR_NET.py`` with
  its stepping: a step after every batch on the gradients summed since the last zeroing
  (every fourth batch), and a second after every fourth. Its lost frames are drawn once per
  batch before timing (the released loader corrupts the data once, when loading; the
  text's first and last steps kept); imsa's side draws them in its loss (``TrainingMasks``,
  as ``TFRNet.fit``; then ``TFRNetNet.losses``), one step per batch. The temporal
  transformers have 22 heads on both sides: the released 25 does not divide the 44 steps,
  and 22 is the divisor imsa takes.
* ``cenet``: batches of 64, L1, Adam at 1e-5 (epsilon 3e-8) in the released groups, the
  gradient norm clipped at 2. CENET's text model is BERT itself, the enhancement rewriting
  the input of its second layer; with BERT the identity (its embeddings give the
  precomputed vectors, its two layers pass their input on, its pooler is the identity; the
  config sizes of those replaced parts are minimal, so building them costs no memory) the
  released network is the enhancement of the text vectors and the head on their first step,
  which is imsa's ``text_encoder=''`` network.

imsa's TFR-Net and CENET default to MiniLM and take ``text_encoder=''`` here; the others
default to it. Evaluation: one forward over the validation split. imsa's side uses fused
Adam (AdamW), as its training loop does; the released side PyTorch's default, as MMSA's
trainers do.

The released modules come from a checkout of github.com/thuiar/MMSA (``--repo``; its ``src``
folder is imported, never copied into imsa), patched only at run time, in the released
side's process: the ``MMSA`` packages are bare (their ``__init__`` files import every model,
MMSA's config tooling and ``pytorch_transformers``); ``transformers``, ``tqdm`` and
``MMSA.utils`` (metrics only) are stubbed, and ``pytorch_transformers`` down to CENET's base
class (its config and ``init_weights``); ``BertTextEncoder`` is the identity on the
precomputed text vectors (the released models assert ``use_bert``): it returns the vectors
registered for the ``(B, 3, L)`` text tensor it is given (its mask row the padding, built
once per batch before timing, as loading is), so no BERT is downloaded or run on either side
(imsa ``text_encoder=''``). MMIM runs unaligned (``need_data_aligned`` false) with each row's
real lengths; MISA's text projection, hard-wired to BERT's 768 inputs, is rebuilt for the
data's 384. ALMT's module imports ``einops``: ``--pydeps PATH`` puts a folder on the
released side's ``sys.path`` (``pip install --target PATH einops``). Each side runs in
processes of its own (``--repeats`` times, alternating, the fastest kept). Written to
``benchmarks/results/<method>_released.{json,md}``.

    python benchmarks/reference/mmsa_released.py --repo PATH/TO/MMSA --pydeps PATH [--methods mmim misa ...]
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
    method_parser,
    mosi_misa,
    shuffled_batches,
    time_epochs,
    write_report,
)

METHODS = ("mmim", "misa", "self_mm", "tetfn", "almt", "tfr_net", "cenet")
BATCH = {"mmim": 32, "misa": 16, "self_mm": 16, "tetfn": 64, "almt": 64, "tfr_net": 24, "cenet": 64}
STEPS = {
    "mmim": "one likelihood and one main pass per epoch",
    "misa": "gradients summed over two batches per step",
    "self_mm": "gradients summed over four batches per step, the unimodal labels updated per batch",
    "tetfn": "gradients summed over four batches per step, so none in an epoch of three, the unimodal labels updated per batch",
    "almt": "one step per batch",
    "tfr_net": "0.2 of the frames dropped in training, the reconstruction loss from the second epoch",
    "cenet": "one step per batch, BERT the identity",
}
OVERRIDES = {"tfr_net": {"text_encoder": ""}, "cenet": {"text_encoder": ""}}  # MiniLM by default
TEXT_STATES: dict[int, tuple] = {}  # a text tensor's data_ptr -> (the tensor, the vectors it stands for)


def stub_released(repo: Path) -> None:
    """Bare ``MMSA`` packages and stand-ins for what the released files import but these
    networks never use on precomputed text (run-time patches, this process only)."""
    import torch

    packages = ("MMSA", "MMSA.models", "MMSA.trains", "MMSA.models.subNets")
    for name in packages + tuple(f"MMSA.{part}.{task}" for part in ("models", "trains") for task in ("singleTask", "multiTask", "missingTask")):
        package = types.ModuleType(name)
        package.__path__ = [str(repo / "src" / name.replace(".", "/"))]
        sys.modules[name] = package

    class BertTextEncoder(torch.nn.Module):
        """The identity on precomputed text: the vectors registered for the text tensor
        given (CENET's ids are a view of it, so share its address), else its input (MMIM
        passes the vectors)."""

        def __init__(self, **_):
            super().__init__()

        def forward(self, text, *_, **__):
            return TEXT_STATES.get(text.data_ptr(), (None, text))[1]

    sub_nets = sys.modules["MMSA.models.subNets"]
    sub_nets.BertTextEncoder = BertTextEncoder
    sys.modules["MMSA.models.subNets.BertTextEncoder"] = sub_nets
    transformers = types.ModuleType("transformers")
    transformers.BertModel = transformers.BertConfig = None
    sys.modules.setdefault("transformers", transformers)

    class PreTrainedModel(torch.nn.Module):
        """pytorch_transformers' base class as CENET uses it: the config and ``init_weights``."""

        def __init__(self, config):
            super().__init__()
            self.config = config

        def init_weights(self):
            self.apply(self._init_weights)

    old_transformers = types.ModuleType("pytorch_transformers")
    old_transformers.BertConfig, old_transformers.BERT_PRETRAINED_MODEL_ARCHIVE_MAP = None, {}
    old_transformers.modeling_utils = types.SimpleNamespace(PreTrainedModel=PreTrainedModel, prune_linear_layer=None)
    sys.modules["pytorch_transformers"], sys.modules["pytorch_transformers.modeling_utils"] = old_transformers, old_transformers.modeling_utils
    tqdm = types.ModuleType("tqdm")
    tqdm.tqdm = lambda iterable, *a, **k: iterable
    sys.modules.setdefault("tqdm", tqdm)
    utils = types.ModuleType("MMSA.utils")
    utils.MetricsTop = lambda mode: types.SimpleNamespace(getMetics=lambda name: None)
    utils.dict_to_str = str
    sys.modules["MMSA.utils"] = utils


def text_tensor(vectors, mask, dtype=None):
    """The ``(B, 3, L)`` text tensor (zero ids, ``mask`` as the mask row, zero segments) that
    stands for ``vectors``, registered for the ``BertTextEncoder`` stand-in."""
    import torch

    mask = mask.to(dtype or vectors.dtype)
    tokens = torch.stack([torch.zeros_like(mask), mask, torch.zeros_like(mask)], dim=1)
    TEXT_STATES[tokens.data_ptr()] = (tokens, vectors)
    return tokens


def released_settings(dataset, **settings) -> types.SimpleNamespace:
    """What every released model and trainer reads, plus ``settings``; item access too, as
    MMSA's config dictionaries give (TFR-Net reads both)."""
    namespace = type("Settings", (types.SimpleNamespace,), {"__getitem__": lambda self, key: getattr(self, key)})
    return namespace(
        use_bert=True,
        use_finetune=False,
        transformers="bert",
        pretrained=None,
        num_classes=1,
        train_mode="regression",
        dataset_name="mosi",
        device="cpu",
        feature_dims=[dataset.dims["l"], dataset.dims["a"], dataset.dims["v"]],
        **settings,
    )


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


class Restepping(Accumulating):
    """TFR-Net's released stepping: a step after every batch, on the gradients summed since
    the last zeroing (every ``k``-th batch), and a second step after every ``k``-th."""

    def step(self):
        self.calls += 1
        self.optimizer.step()
        if self.calls % self.k == 0:
            self.optimizer.step()


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

        settings = released_settings(
            dataset,
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
        model = MISA(settings)
        model.project_t.project_t = torch.nn.Linear(dataset.dims["l"], c.hidden)  # hard-wired to BERT's 768
        trainer = Trainer(settings)
        trainer.model = types.SimpleNamespace(Model=model)  # the trainer reads the codes through AMIO's .Model
        tokens = {id(b): text_tensor(b.inputs["l"], b.padding["l"]) for b in [validation, *(b for batches in epochs for b in batches)]}

        def predict(batch):
            return model(tokens[id(batch)], batch.inputs["a"], batch.inputs["v"])["M"]

        def loss(batch):
            outputs = predict(batch)
            similarity = trainer.get_cmd_loss() if settings.use_cmd_sim else trainer.get_domain_loss()
            return (
                trainer.criterion(outputs, batch.labels.view(-1, 1))
                + c.diff_weight * trainer.get_diff_loss()
                + c.sim_weight * similarity
                + c.recon_weight * trainer.get_recon_loss()
            )

        optimizer = Accumulating(torch.optim.Adam(filter(lambda p: p.requires_grad, model.parameters()), lr=c.lr), c.accumulate)
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


def ulgm_builder(args, dataset, method, epochs, validation, network: str, settings: dict):
    """Self-MM's and TETFN's shared side: the released ``network`` (from ``models/multiTask``)
    and its trainer's loop body, or imsa's network and ``ulgm_loss``, on labels initialised
    from the first epoch's batches (every training utterance once)."""
    import importlib

    import torch

    from imsa.methods.spec import DataSpec
    from imsa.methods.unimodal_labels import NAMES, UnimodalLabels, ulgm_loss

    c = method.config
    torch.manual_seed(1)
    training = [[(e, i, b) for i, b in enumerate(batches)] for e, batches in enumerate(epochs)]
    indices, labels = (torch.cat([getattr(b, key) for b in epochs[0]]) for key in ("index", "labels"))
    if args.side == "released":
        model_class = getattr(importlib.import_module(f"MMSA.models.multiTask.{network}"), network)
        trainer_class = getattr(importlib.import_module(f"MMSA.trains.multiTask.{network}"), network)
        common = {k: getattr(c, k) for k in ("post_fusion_dim", "post_text_dim", "post_audio_dim", "post_video_dim")}
        common |= {k: getattr(c, k) for k in ("post_fusion_dropout", "post_text_dropout", "post_audio_dropout", "post_video_dropout")}
        config = released_settings(
            dataset, **common, **settings, train_samples=len(indices), H=c.label_bound, excludeZero=c.exclude_zero, update_epochs=c.accumulate, KeyEval="Loss"
        )
        model, trainer = model_class(config), trainer_class(config)
        groups = [  # do_train's groups; the text encoder's two are empty (the stand-in has no parameters)
            {"params": list(model.audio_model.parameters()), "weight_decay": c.audio_weight_decay, "lr": c.audio_lr},
            {"params": list(model.video_model.parameters()), "weight_decay": c.video_weight_decay, "lr": c.video_lr},
            {
                "params": [p for n, p in model.named_parameters() if not n.startswith(("text_model", "audio_model", "video_model"))],
                "weight_decay": c.weight_decay,
                "lr": c.lr,
            },
        ]
        optimizer = Accumulating(torch.optim.Adam(groups), c.accumulate)
        row = torch.full((len(dataset),), -1, dtype=torch.long)
        row[indices] = torch.arange(len(indices))
        trainer.init_labels(row[indices], labels)

        def inputs(batch):  # as the released loader gives them: the text tensor, audio and video with their lengths
            lengths = {m: batch.padding[m].sum(1).clamp(min=1).to(torch.int64) for m in ("a", "v")}
            return text_tensor(batch.inputs["l"], batch.padding["l"]), (batch.inputs["a"], lengths["a"]), (batch.inputs["v"], lengths["v"])

        loaded = {id(b): (inputs(b), row[b.index]) for batches in epochs for b in batches}  # with the store rows
        loaded_validation = inputs(validation)

        def step(item):  # the loop body of trains/multiTask/<network>.py
            e, i, batch = item
            if i == 0:
                optimizer.restart()
            batch_inputs, rows = loaded[id(batch)]
            outputs = model(*batch_inputs)
            loss = sum(trainer.weighted_loss(outputs[m], trainer.label_map[trainer.name_map[m]][rows], indexes=rows, mode=trainer.name_map[m]) for m in "MTAV")
            features = [outputs[f"Feature_{k}"].detach() for k in "ftav"]
            if e + 1 > 1:  # the released epoch counter starts at 1
                trainer.update_labels(*features, e + 1, rows, outputs)
            trainer.update_features(*features, rows)
            trainer.update_centers()
            return loss

        def evaluate():
            return model(*loaded_validation)["M"]
    else:
        method.spec_ = DataSpec.of(dataset)
        model = method.build(method.spec_)
        widths = {"fusion": c.post_fusion_dim, **{m: getattr(c, f"post_{NAMES[m]}_dim") for m in model.unimodal}}
        store = UnimodalLabels(indices, labels, widths, size=len(dataset), bound=c.label_bound, exclude_zero=c.exclude_zero)
        optimizer = Accumulating(torch.optim.Adam(method.param_groups(model), lr=c.lr, weight_decay=c.weight_decay, fused=True), c.accumulate)

        def step(item):
            e, i, batch = item
            if i == 0:
                optimizer.restart()
            return ulgm_loss(model, batch, e, store)

        def evaluate():
            return model(validation).prediction

    return model, step, evaluate, training, optimizer, None


def build_self_mm(args, dataset, method, epochs, validation):
    c = method.config
    settings = dict(
        need_data_aligned=False,
        text_out=dataset.dims["l"],  # BERT's 768 in MMSA's config
        a_lstm_hidden_size=c.audio_hidden,
        v_lstm_hidden_size=c.video_hidden,
        a_lstm_layers=1,
        v_lstm_layers=1,
        audio_out=c.audio_out,
        video_out=c.video_out,
        a_lstm_dropout=c.audio_lstm_dropout,
        v_lstm_dropout=c.video_lstm_dropout,
    )
    return ulgm_builder(args, dataset, method, epochs, validation, "SELF_MM", settings)


def build_tetfn(args, dataset, method, epochs, validation):
    c = method.config
    settings = dict(
        need_data_aligned=True,
        a_lstm_hidden_size=c.audio_hidden,
        v_lstm_hidden_size=c.video_hidden,
        a_lstm_layers=1,
        v_lstm_layers=1,
        a_lstm_dropout=0.0,
        v_lstm_dropout=0.0,
        conv1d_kernel_size_l=c.text_kernel,
        conv1d_kernel_size_a=c.audio_kernel,  # the released video convolution's kernel too
        conv1d_kernel_size_v=c.video_kernel,
        dst_feature_dims=c.dim,
        nheads=c.heads,
        **{k: getattr(c, k) for k in ("attn_dropout", "attn_dropout_a", "attn_dropout_v", "relu_dropout", "embed_dropout", "res_dropout")},
    )
    return ulgm_builder(args, dataset, method, epochs, validation, "TETFN", settings)


def build_almt(args, dataset, method, epochs, validation):
    import torch
    import torch.nn.functional as F

    from imsa.methods.phase import parameter_groups, task_loss
    from imsa.methods.spec import DataSpec

    c = method.config
    torch.manual_seed(1)
    training = [list(batches) for batches in epochs]
    if args.side == "released":
        from MMSA.models.singleTask.ALMT import ALMT

        steps = DataSpec.of(dataset).steps
        settings = released_settings(
            dataset,
            feature_length=[steps["l"], steps["a"], steps["v"]],
            dst_feature_dims=c.dim,
            dst_feature_hidden_dims=c.mlp_dim,
            dst_embedding_length=c.tokens,
            embedding_depth=[c.depth] * 3,
            embedding_heads=[c.heads] * 3,
            l_encoder_heads=c.heads,
            AHL_depth=c.hyper_depth,
            h_hyper_layer_heads=c.heads,
            fusion_hidden_d=c.mlp_dim,
            fusion_heads=c.heads,
            fusion_layer_depth=c.fusion_depth,
        )
        model = ALMT(settings)
        optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        tokens = {id(b): text_tensor(b.inputs["l"], b.padding["l"]) for b in [validation, *(b for batches in epochs for b in batches)]}

        def predict(batch):
            return model(tokens[id(batch)], batch.inputs["a"], batch.inputs["v"])

        def step(batch):  # the loop body of trains/singleTask/ALMT.py
            return F.mse_loss(predict(batch), batch.labels.view(-1, 1))
    else:
        method.spec_ = DataSpec.of(dataset)
        model = method.build(method.spec_)
        optimizer = torch.optim.AdamW(parameter_groups(model, c.weight_decay), lr=c.lr, fused=True)

        def predict(batch):
            return model(batch).prediction

        def step(batch):  # ALMT.fit's loss
            return task_loss(predict(batch), batch, "regression", regression_loss="mse")

    return model, step, lambda: predict(validation), training, optimizer, None


def build_tfr_net(args, dataset, method, epochs, validation):
    import torch
    import torch.nn.functional as F

    from imsa.methods.phase import TrainingMasks, task_loss
    from imsa.methods.spec import DataSpec
    from imsa.methods.tfr_net import GENERATION_FROM_EPOCH, temporal_head_count
    from imsa.protocols import Protocol

    c = method.config
    torch.manual_seed(1)
    training = [[(e, i, b) for i, b in enumerate(batches)] for e, batches in enumerate(epochs)]
    spec = DataSpec.of(dataset)
    if args.side == "released":
        from MMSA.models.missingTask.TFR_NET.model import TFR_NET

        settings = released_settings(
            dataset,
            seq_lens=[spec.steps[m] for m in ("l", "a", "v")],
            num_temporal_head=temporal_head_count(spec.steps["l"], c.temporal_heads),  # 25 does not divide 44
            alignmentModule="crossmodal_attn",
            generatorModule="linear",
            fusionModule="c_gate",
            recloss_type="combine",
            without_generator=False,
            use_bert_finetune=False,
            attn_mask=True,
            dst_feature_dim_nheads=(c.dim, c.heads),
            nlevels=c.layers,
            conv1d_kernel_size_l=c.text_kernel,
            conv1d_kernel_size_a=c.audio_kernel,
            conv1d_kernel_size_v=c.video_kernel,
            **{k: getattr(c, k) for k in ("text_dropout", "attn_dropout", "attn_dropout_a", "attn_dropout_v", "relu_dropout", "embed_dropout", "res_dropout")},
            fusion_t_hid=c.fusion_text_hidden,
            fusion_a_hid=c.fusion_audio_hidden,
            fusion_v_hid=c.fusion_video_hidden,
            fusion_gru_layers=c.fusion_layers,
            fusion_drop=c.fusion_dropout,
            cls_hidden_dim=c.cls_hidden,
            cls_dropout=c.cls_dropout,
            weight_gen_loss=(c.gen_weight_text, c.gen_weight_audio, c.gen_weight_video),
            weight_sim_loss=c.sim_weight,
        )
        model = TFR_NET(settings)
        optimizer = Restepping(torch.optim.Adam(model.parameters(), lr=c.lr, weight_decay=c.weight_decay), 4)  # update_epochs
        generator = torch.Generator().manual_seed(1111)

        def corrupted(batch, rate):
            """The released loader's inputs: each modality, its frames lost at ``rate`` (the
            text's first and last real steps kept), its real-step mask and kept-step mask."""
            out = []
            for m in ("l", "a", "v"):
                x, real = batch.inputs[m], batch.padding[m]
                kept = real & (torch.rand(real.shape, generator=generator) > rate)
                if m == "l":
                    last = real.sum(1).clamp(min=1) - 1
                    kept[:, 0], kept[torch.arange(len(kept)), last] = True, True
                x_m, real, kept = x * kept.unsqueeze(-1).to(x.dtype), real.to(x.dtype), kept.to(x.dtype)
                out.append((text_tensor(x, real), text_tensor(x_m, real), kept) if m == "l" else (x, x_m, real, kept))
            return out

        loaded = {id(validation): corrupted(validation, 0.0)}  # evaluation on complete data
        loaded |= {id(b): corrupted(b, c.train_frames) for batches in epochs for b in batches}

        def step(item):  # the loop body of trains/missingTask/TFR_NET.py
            e, i, batch = item
            if i == 0:
                optimizer.restart()
            prediction, gen_loss = model(*loaded[id(batch)])
            pred_loss = F.l1_loss(prediction, batch.labels.view(-1, 1))
            return pred_loss + gen_loss if e + 1 > 1 else pred_loss  # the released epoch counter starts at 1

        def evaluate():
            return model(*loaded[id(validation)])[0]
    else:
        method.spec_ = spec
        model = method.build(spec)
        optimizer = torch.optim.Adam(method.param_groups(model), lr=c.lr, weight_decay=c.weight_decay, fused=True)
        masks = TrainingMasks(method.training_sampler(Protocol()), spec.modalities, 1, stream=7, dataset=dataset)

        def step(item):  # TFRNet.fit's loss
            e, _, batch = item
            drawn = masks.draw(batch, e)
            generation = e >= GENERATION_FROM_EPOCH
            out = model.losses(drawn.batch, drawn.complete, generation=generation)
            value = task_loss(out["prediction"], drawn.batch, "regression")
            return value + out["generation"] if generation else value

        def evaluate():
            return model(validation).prediction

    parameters = [p for p in model.parameters() if p.requires_grad]
    return model, step, evaluate, training, optimizer, lambda: torch.nn.utils.clip_grad_value_(parameters, c.grad_clip)


def build_cenet(args, dataset, method, epochs, validation):
    import torch
    import torch.nn.functional as F

    from imsa.methods.phase import task_loss
    from imsa.methods.spec import DataSpec

    c = method.config
    torch.manual_seed(1)
    training = [list(batches) for batches in epochs]
    if args.side == "released":
        from MMSA.models.singleTask.CENET import CENET
        from MMSA.models.subNets import BertTextEncoder

        class PassThrough(torch.nn.Module):
            """A BERT layer as the identity: its input, as the one-element tuple a layer gives."""

            def forward(self, hidden, *_):
                return (hidden,)

        width, layers = dataset.dims["l"], 2  # the enhancement rewrites the second layer's input
        bert = dict(vocab_size=1, max_position_embeddings=1, type_vocab_size=1, intermediate_size=1, num_attention_heads=1)  # replaced below
        config = types.SimpleNamespace(
            hidden_size=width,
            num_hidden_layers=layers,
            hidden_act="gelu",
            hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1,
            layer_norm_eps=1e-12,
            initializer_range=0.02,
            num_labels=1,
            output_attentions=False,
            output_hidden_states=False,
            **bert,
        )
        model = CENET(config, args=released_settings(dataset))
        model.bert.embeddings, model.bert.pooler = BertTextEncoder(), torch.nn.Identity()
        model.bert.encoder.layer = torch.nn.ModuleList(PassThrough() for _ in range(layers))
        named = list(model.named_parameters())
        no_decay = ("bias", "LayerNorm.weight")
        groups = [  # do_train's groups
            {"params": [p for n, p in named if not any(nd in n for nd in no_decay) and "CE" not in n], "weight_decay": c.weight_decay},
            {"params": model.bert.encoder.CE.parameters(), "lr": c.lr, "weight_decay": c.weight_decay},
            {"params": [p for n, p in named if any(nd in n for nd in no_decay) and "CE" not in n], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.Adam(groups, lr=c.lr, eps=c.adam_epsilon)
        # integer text tensors: the ids CENET reads (``text[:, 0].long()``) are then a view at the same address
        tokens = {id(b): text_tensor(b.inputs["l"], b.padding["l"], torch.long) for b in [validation, *(b for batches in epochs for b in batches)]}

        def predict(batch):
            return model(tokens[id(batch)], batch.inputs["a"], batch.inputs["v"])[0]

        def step(batch):  # the loop body of trains/singleTask/CENET.py
            return F.l1_loss(predict(batch), batch.labels.view(-1, 1))
    else:
        method.spec_ = DataSpec.of(dataset)
        model = method.build(method.spec_)
        optimizer = torch.optim.Adam(method.param_groups(model), fused=True)

        def predict(batch):
            return model(batch).prediction

        def step(batch):  # SinglePhaseMethod.fit's loss
            return task_loss(predict(batch), batch, "regression")

    parameters = list(model.parameters())
    return model, step, lambda: predict(validation), training, optimizer, lambda: torch.nn.utils.clip_grad_norm_(parameters, c.grad_clip)


def run_side(args) -> None:
    import json

    import torch

    from imsa.methods.registry import create_method

    torch.set_num_threads(1)
    method = create_method(args.method, **OVERRIDES.get(args.method, {}))
    dataset, split = mosi_misa(args.data_dir)
    epochs = shuffled_batches(split["train"], method.config.batch_size, args.epochs + 1)
    validation = shuffled_batches(split["valid"], 1024, 1)[0][0]
    if args.side == "released":
        add_pydeps(args)
        stub_released(args.repo)
    build = globals()[f"build_{args.method}"]
    model, step, evaluate, training, optimizer, clip = build(args, dataset, method, epochs, validation)
    print(json.dumps(time_epochs(model, step, evaluate, training, optimizer, clip)))


def main() -> None:
    parser = method_parser(__doc__, METHODS, ("released", "imsa"), pydeps="ALMT: einops")
    args = parser.parse_args()
    if args.side:
        return run_side(args)
    if checkout_missing(args.repo, "thuiar/MMSA", "src/MMSA/models/singleTask/MMIM.py"):
        return
    for method in args.methods:
        arguments = child_arguments(args) + ["--method", method]
        sides = measure_alternating(__file__, ("released", "imsa"), arguments, args.repeats)
        write_report(
            method,
            f"{method.upper()}: MMSA's released network beside imsa's, on equal tensors",
            f"`mosi-misa` fold 0, complete data, batches of {BATCH[method]} ({STEPS[method]}), precomputed text on both sides,",
            sides,
            {"imsa": "imsa"},
            sys.argv[1:],
            args.epochs,
            script="mmsa_released.py",
        )


if __name__ == "__main__":
    main()
