"""Methods: one module per method, each registered by name."""

from .base import Method
from .registry import create_method, list_methods, method_class, register_method
from .spec import DataSpec, Output, TrainConfig

__all__ = ["DataSpec", "Method", "Output", "TrainConfig", "create_method", "list_methods", "method_class", "register_method"]
