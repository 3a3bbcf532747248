"""From raw media to imsa datasets: decoding, missingness decided at the source, features.

``imsa extract SOURCE --out DIR`` (:func:`extract`) turns videos or audio files, with
their transcripts, into a dataset folder that every method, protocol, grid and ``imsa
predict`` reads; ``imsa predict RUN --media FILE`` (:func:`media_features`) extracts one
new file the way a model's training data was extracted. Extractors live one per file in
:mod:`imsa.media.extractors` (``imsa extractors`` lists them). Everything here needs the
``media`` extra: ``pip install 'imsa[media]'``.
"""

from .corpus import Extraction, extract
from .pipeline import ExtractionConfig
from .predict import media_features
from .registry import DEFAULTS, ROLES, list_extractors, register_extractor

__all__ = ["DEFAULTS", "ROLES", "Extraction", "ExtractionConfig", "extract", "list_extractors", "media_features", "register_extractor"]
