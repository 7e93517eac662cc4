"""pycocotools, imported only where COCO files are read, written or scored (data.coco,
evaluation, the command line).

The model, the ops and the data package import without it: a machine that only runs or trains
the model (the GPU check's machine has no pycocotools and no network) must not need it.
"""
import types


class MissingPycocotools(ImportError):
    """pycocotools is needed for what was asked and is not installed (a one-line message)."""


def pycocotools(purpose: str) -> types.ModuleType:
    """The ``pycocotools`` package with ``mask``, ``coco`` and ``cocoeval`` imported.

    Raises :class:`MissingPycocotools` naming ``purpose`` when it is not installed.
    """
    try:
        import pycocotools.coco
        import pycocotools.cocoeval
        import pycocotools.mask
    except ImportError as e:
        raise MissingPycocotools(
            f"{purpose} needs pycocotools, which is not installed (pip install pycocotools)"
        ) from e
    return pycocotools
