"""The spelling of a device setting (``model.device``), checked without importing torch: config validation
uses it, so that ``llmrl config`` reads a GPU recipe on a CPU machine. Whether the device is there is checked
when the model is built (:func:`llmrl.models.device.resolve_device`)."""

from __future__ import annotations

import re

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def device_spec_issue(spec: object) -> str | None:
    """Why ``spec`` is not a device setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``); None when it is one."""
    if isinstance(spec, str) and _DEVICE.fullmatch(spec):
        return None
    return f"must be one of {DEVICE_CHOICES}, got {spec!r}"


__all__ = ["DEVICE_CHOICES", "device_spec_issue"]
