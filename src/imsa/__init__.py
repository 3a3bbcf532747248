"""imsa: multimodal sentiment analysis and emotion recognition with missing modalities.

The public API, importable from ``imsa`` itself (each name is imported on first use, so
``import imsa`` stays fast and does not load torch):

Data
    :func:`load_dataset` (a registered name such as ``"synthetic"`` or
    ``"mosi-bclstm"``, or the path of a file in a published format) and
    :func:`list_datasets`.
Methods
    :func:`create_method`, :func:`list_methods`, :func:`register_method` (a class
    decorator for a method of your own) and :func:`load_method` (a model file or run
    directory back as fitted methods). A method has scikit-learn's ``fit`` /
    ``predict_dataset`` / ``evaluate``. :func:`predict_media` predicts each segment of a
    new video with a model trained on an ``imsa extract`` folder.
Protocols
    :class:`Protocol`: ``Protocol("fixed")``, ``Protocol("random", rate=0.3)``,
    ``Protocol("frames", rate=0.3)``.
Experiments
    :func:`run` (``imsa run`` as one call, with the same arguments), :class:`Experiment`
    and :func:`run_experiment` (one experiment into one run directory),
    :func:`read_grid` and :func:`run_grid` (``imsa grid run``), :func:`report_tables`
    and :func:`write_report` (``imsa report``), :func:`run_tune` (``imsa tune``),
    and :class:`RunContext` (device, precision, threads, progress callbacks).

Example
-------
>>> import imsa                                                    # doctest: +SKIP
>>> data = imsa.load_dataset("synthetic")                          # doctest: +SKIP
>>> split = data.split(fold=0)                                     # doctest: +SKIP
>>> method = imsa.create_method("late_fusion", epochs=5).fit(split["train"], split["valid"], seed=1)  # doctest: +SKIP
>>> method.evaluate(split["test"], imsa.Protocol("fixed").settings(split["test"]))["l"]["mae"]  # doctest: +SKIP

The command line (``imsa --help``) calls these same functions.
"""

__version__ = "0.5.0"

# public name -> the module that defines it (imported on first access)
_PUBLIC = {
    "load_dataset": "imsa.data.registry",
    "list_datasets": "imsa.data.registry",
    "create_method": "imsa.methods",
    "list_methods": "imsa.methods",
    "register_method": "imsa.methods",
    "load_method": "imsa.experiments.models",
    "predict_media": "imsa.experiments.models",
    "Protocol": "imsa.protocols",
    "run": "imsa.experiments.run",
    "Experiment": "imsa.experiments.runner",
    "run_experiment": "imsa.experiments.runner",
    "read_grid": "imsa.experiments.grid",
    "run_grid": "imsa.experiments.grid",
    "report_tables": "imsa.experiments.report",
    "write_report": "imsa.experiments.report",
    "run_tune": "imsa.experiments.tune",
    "RunContext": "imsa.training",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'imsa' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
