"""The ``stitching`` processor: eBPF spans join the traces the mesh already propagates."""

from .config import StitchingConfig, create_default_config
from .processor import StitchingProcessor
from .propagation import CarriedContext, extract

__all__ = ["StitchingConfig", "StitchingProcessor", "CarriedContext", "create_default_config", "extract"]
