"""Deployment variants, the profile (lookup) table, and how it is measured or modelled.

- :mod:`~oserve.profiles.variants`: ``ModelArch``, ``Variant``, ``catalogue``.
- :mod:`~oserve.profiles.hardware`: datasheet numbers (A100, H100, H200, L4) and this CPU.
- :mod:`~oserve.profiles.iteration`: the shared iteration-time model.
- :mod:`~oserve.profiles.roofline`: iteration-time model from architecture + hardware.
- :mod:`~oserve.profiles.fit`: iteration-time model from measured timings.
- :mod:`~oserve.profiles.capacity`: SLO-constrained capacity and ``build_table``.
- :mod:`~oserve.profiles.table`: ``ProfileTable`` (JSON on disk).
- :mod:`~oserve.profiles.profiler`: the measuring sweep behind ``oserve profile``.
- :mod:`~oserve.profiles.modelled`: modelled tables for hardware not present.
- :mod:`~oserve.profiles.quality`: a variant's quality against the reference precision (pure).
- :mod:`~oserve.backends.quality_probe`: measures it on real engines and stores it in a table.
- :mod:`~oserve.profiles.cpu_info`: the CPU a table was measured on; is a table valid here.
- :mod:`~oserve.profiles.cpu_speed`: one core's speed a CPU table was measured at.
"""

from oserve.profiles.capacity import build_table, class_capacity, load_point
from oserve.profiles.cpu_info import CpuIdentity, current_cpu, select_table, table_validity
from oserve.profiles.cpu_speed import CpuSpeed, measure_cpu_speed, speed_validity
from oserve.profiles.fit import fit_iteration_model
from oserve.profiles.hardware import HARDWARE, Hardware, get_hardware
from oserve.profiles.iteration import IterationTimeModel
from oserve.profiles.quality import VariantQuality
from oserve.profiles.roofline import DEFAULT_EFFICIENCY, Efficiency, roofline_model
from oserve.profiles.table import ClassProfile, ProfileTable, VariantProfile
from oserve.profiles.variants import MODELS, ModelArch, Variant, catalogue, get_model
from oserve.types import SLO

__all__ = [
    "build_table",
    "class_capacity",
    "load_point",
    "fit_iteration_model",
    "HARDWARE",
    "Hardware",
    "get_hardware",
    "IterationTimeModel",
    "DEFAULT_EFFICIENCY",
    "Efficiency",
    "roofline_model",
    "SLO",
    "ClassProfile",
    "ProfileTable",
    "VariantProfile",
    "MODELS",
    "ModelArch",
    "Variant",
    "catalogue",
    "get_model",
    "CpuIdentity",
    "CpuSpeed",
    "measure_cpu_speed",
    "speed_validity",
    "current_cpu",
    "select_table",
    "table_validity",
    "VariantQuality",
]
