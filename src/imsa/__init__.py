"""imsa: multimodal sentiment analysis and emotion recognition with missing modalities."""

__version__ = "0.1.0"
