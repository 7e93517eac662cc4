"""Mask R-CNN inference replayed from one CUDA graph, for a fixed batch of image sizes.

:func:`capture` records the model's static-shape forward (:meth:`MaskRCNN.forward_padded`: the
transformed batch through the backbone, the RPN, the box and mask heads, to padded detections
with their masks pasted into the original image sizes) in a ``torch.cuda.CUDAGraph``. The input
transform (normalise, resize, batch) runs eagerly before each replay, and the compaction to
torchvision's list of dicts (the one host synchronisation) after it.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = ["capture", "CapturedMaskRCNN"]


def _shapes(images) -> List[Tuple[int, ...]]:
    return [tuple(int(s) for s in im.shape) for im in images]


class CapturedMaskRCNN:
    """A callable replaying a captured Mask R-CNN forward (made by :func:`capture`).

    __call__(images: list of Tensor[3, H_i, W_i] on the captured device, with exactly the
    captured sizes) -> torchvision's list of dicts boxes Tensor[K, 4], labels Tensor[K], scores
    Tensor[K], masks Tensor[K, 1, H_i, W_i]; fresh tensors (not the graph's buffers).

    Attributes: ``graph`` (torch.cuda.CUDAGraph), ``image_shapes`` (captured (C, H, W) of each
    image), ``static_batch`` (the graph's input), ``static_outputs`` (its padded outputs, see
    :meth:`MaskRCNN.forward_padded`), ``constants`` (the tensors made before capture that the
    graph reads: kept alive here, else a replay would read memory reused by later allocations),
    ``autocast`` (the CUDA autocast state at capture, (enabled, dtype); a replay must run under
    the same one).
    """

    def __init__(
        self,
        model: nn.Module,
        graph: "torch.cuda.CUDAGraph",
        image_shapes: List[Tuple[int, ...]],
        image_sizes: List[Tuple[int, int]],
        static_batch: Tensor,
        static_outputs: Dict,
        device: torch.device,
        constants=None,
        autocast: Tuple[bool, Optional[torch.dtype]] = (False, None),
    ):
        self.model = model
        self.graph = graph
        self.image_shapes = image_shapes
        self.image_sizes = image_sizes
        self.original_sizes = [(s[-2], s[-1]) for s in image_shapes]
        self.static_batch = static_batch
        self.static_outputs = static_outputs
        self.device = device
        self.constants = constants
        self.autocast = autocast

    def _check(self, images) -> None:
        if not isinstance(images, (list, tuple)):
            raise TypeError(f"images must be a list of Tensor[3, H, W], got {type(images).__name__}")
        if len(images) != len(self.image_shapes):
            raise ValueError(
                f"images must hold {len(self.image_shapes)} images, the captured batch size; got {len(images)}"
            )
        for i, im in enumerate(images):
            if not isinstance(im, Tensor):
                raise TypeError(f"images[{i}] must be a Tensor, got {type(im).__name__}")
            if tuple(im.shape) != self.image_shapes[i]:
                raise ValueError(
                    f"images[{i}] has shape {tuple(im.shape)} but the graph was captured for "
                    f"{self.image_shapes[i]}; capture again for other sizes"
                )
            if im.device != self.device:
                raise ValueError(f"images[{i}] is on {im.device} but the graph was captured on {self.device}")

    @torch.no_grad()
    def __call__(self, images: Sequence[Tensor]) -> List[Dict[str, Tensor]]:
        self._check(images)
        if self.model.training:
            raise RuntimeError("the model was put in training mode after capture; call eval() first")
        if _autocast_state() != self.autocast:
            raise RuntimeError(
                f"the graph was captured with CUDA autocast (enabled, dtype) = {self.autocast}, but "
                f"it is {_autocast_state()} now: replay under the autocast state of the capture"
            )
        image_list, _ = self.model.transform(list(images), None)
        if image_list.image_sizes != self.image_sizes or image_list.tensors.shape != self.static_batch.shape:
            raise RuntimeError(
                f"the transform now gives sizes {image_list.image_sizes}, the graph was captured for "
                f"{self.image_sizes}; capture again"
            )
        self.static_batch.copy_(image_list.tensors)
        self.graph.replay()
        return self.model.compact(self.static_outputs, self.original_sizes, clone=True)


def _autocast_state() -> Tuple[bool, Optional[torch.dtype]]:
    enabled = torch.is_autocast_enabled("cuda")
    return enabled, (torch.get_autocast_dtype("cuda") if enabled else None)


def capture(
    model: nn.Module,
    example_images: Sequence[Tensor],
    *,
    warmup: int = 3,
    pool=None,
) -> CapturedMaskRCNN:
    """Captures ``model``'s inference for images of the sizes of ``example_images`` in a CUDA graph.

    Args:
        model (MaskRCNN): in eval mode, on a CUDA device, on the fused ops (the "torch" ops
            synchronise with the host and cannot be captured).
        example_images (list of Tensor[3, H_i, W_i]): float, on the model's device; their sizes
            (and number) are the ones the returned callable accepts. Their values only warm up.
        warmup (int): eager runs on a side stream before capture (cuDNN autotuning, lazy
            initialisation, the allocator's pools).
        pool: a memory pool handle (``torch.cuda.graph_pool_handle()``) to share with other graphs.

    Returns:
        CapturedMaskRCNN: ``captured(images)`` -> the same list of dicts as ``model(images)``.

    Raises:
        RuntimeError: CUDA unavailable, the model or images not on CUDA, the model in training mode.
        ValueError / TypeError: bad example images (see ``MaskRCNN.forward``).
    """
    from ..models.mask_rcnn import check_inputs

    if not torch.cuda.is_available():
        raise RuntimeError("capture needs CUDA: torch.cuda.is_available() is False")
    param = next(model.parameters(), None)
    if param is None or param.device.type != "cuda":
        where = param.device if param is not None else "nowhere (no parameters)"
        raise RuntimeError(f"capture needs the model on a CUDA device; it is on {where}")
    if model.training:
        raise RuntimeError("capture needs the model in eval mode; call model.eval() first")
    if not isinstance(example_images, (list, tuple)):
        raise TypeError(f"example_images must be a list of Tensor[3, H, W], got {type(example_images).__name__}")
    images = list(example_images)
    check_inputs(images, None, False, len(model.transform.image_mean), model.roi_heads.has_mask(), param.device)
    if warmup < 1:
        raise ValueError(f"warmup must be >= 1 (the first run sets lazily computed state), got {warmup}")

    device = param.device
    autocast = _autocast_state()
    original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    with torch.no_grad(), torch.cuda.device(device):
        image_list, _ = model.transform(images, None)
        image_sizes = image_list.image_sizes
        static_batch = image_list.tensors.clone()
        # host-to-device copies cannot be captured: the constants are made here, once
        constants = model.static_constants(image_sizes, original_sizes, device)

        def run():
            if not autocast[0]:
                return model.forward_padded(static_batch, image_sizes, original_sizes, constants)
            # Autocast's cache of low-precision weight copies is freed when the caller's autocast
            # block exits, and the graph would keep reading them: capture without the cache, so
            # the casts are recorded in the graph and their outputs live in its pool.
            with torch.autocast("cuda", dtype=autocast[1], cache_enabled=False):
                return model.forward_padded(static_batch, image_sizes, original_sizes, constants)

        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                run()
        torch.cuda.current_stream(device).wait_stream(side)

        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            static_outputs = run()
    torch.cuda.synchronize(device)
    return CapturedMaskRCNN(model, graph, _shapes(images), image_sizes, static_batch, static_outputs, device,
                            constants=constants, autocast=autocast)
