"""Methods: one module per method, each registered by name."""

from .base import DataSpec, Method, Output, TrainConfig
from .registry import create_method, list_methods, method_class, register_method

__all__ = ["DataSpec", "Method", "Output", "TrainConfig", "create_method", "list_methods", "method_class", "register_method"]
