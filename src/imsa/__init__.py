"""imsa: multimodal sentiment analysis and emotion recognition with missing modalities."""

__version__ = "0.4.0"


def __getattr__(name: str):
    # imsa.load_method without importing torch for `import imsa`
    if name == "load_method":
        from .model_files import load_method

        return load_method
    raise AttributeError(f"module 'imsa' has no attribute {name!r}")
