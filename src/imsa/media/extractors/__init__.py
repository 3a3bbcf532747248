"""The media extractors, one module each; every module here registers itself (see :mod:`imsa.media.registry`)."""
