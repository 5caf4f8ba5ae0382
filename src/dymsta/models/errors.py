"""The error classes of ``dymsta.models``, in a module that imports nothing (so any model module can raise them).

Every message is one line. :class:`ModelConfigError` messages start with the dotted setting (``model.dim: ...``);
the others name the file, module or weights at fault and, where there is one, the fix.
"""

from __future__ import annotations

__all__ = ["BackboneWeightsError", "ModelConfigError", "ModelInputError", "RuntimeUnavailableError"]


class ModelConfigError(ValueError):
    """A model setting is invalid; the message is one line that starts with the dotted key (``model.dim: ...``)."""


class ModelInputError(ValueError):
    """A tensor given to a model has the wrong shape (one line: which module, what it expected, what it got)."""


class BackboneWeightsError(RuntimeError):
    """Pretrained backbone weights could not be fetched or loaded (one line: which weights, and the fix)."""


class RuntimeUnavailableError(ModelConfigError):
    """``model.runtime`` names an inference runtime that is not installed (one line with the ``pip install``)."""
