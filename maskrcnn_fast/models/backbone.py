"""ResNet trunk + feature pyramid (FPN) with an extra max-pool level.

The trunk is torchvision's ``ResNet``; the FPN is ours. The state_dict keys are torchvision's
``BackboneWithFPN`` keys (``body.*``, ``fpn.inner_blocks.N.0.*``, ``fpn.layer_blocks.N.0.*``),
so torchvision checkpoints load as they are.
"""
from collections import OrderedDict
from collections.abc import Mapping
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet as tv_resnet
from torchvision.ops.misc import FrozenBatchNorm2d

from . import memory_format as _memory_format
from .batch_norm import bn_affine

__all__ = ["ResNetBody", "FeaturePyramid", "BackboneWithFPN", "resnet_fpn_backbone", "freeze_resnet_layers"]

_RESNETS = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101", 152: "resnet152"}


def _inplace_ok(x: Tensor) -> bool:
    # Inference only: autograd needs the BN input, and torch.compile traces the plain op anyway
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling() and x.dim() == 4


def _autocast_on(x: Tensor) -> bool:
    return torch.is_autocast_enabled(x.device.type)


def _norm_(bn: nn.Module, x: Tensor) -> Tensor:
    """bn(x), overwriting x (a fresh convolution output nothing else reads) where that gives the
    same bits: an eval-mode BatchNorm2d (ATen's own kernel, out=x) or a FrozenBatchNorm2d
    (torchvision's x * scale + shift, the same two roundings). A fresh output's first-touch page
    faults cost ~10x the arithmetic (34 ms against 4 ms for 2x256x200x272 floats).

    Only where x has the batch norm's dtype: under autocast the convolution's output is float16 /
    bfloat16 while the statistics are float32, and torchvision's module then gives (BatchNorm2d)
    or promotes to (FrozenBatchNorm2d) another dtype than an in-place write could hold."""
    stats = getattr(bn, "running_var", None)
    if not isinstance(stats, Tensor) or x.dtype != stats.dtype:
        return bn(x)
    if type(bn) is nn.BatchNorm2d and not bn.training and bn.running_mean is not None and x.is_contiguous():
        empty = x.new_empty(0)
        torch.ops.aten.native_batch_norm.out(
            x, bn.weight, bn.bias, bn.running_mean, bn.running_var, False, 0.0, bn.eps,
            out=x, save_mean=empty, save_invstd=empty,
        )
        return x
    if type(bn) is FrozenBatchNorm2d:
        scale, shift = bn_affine(bn)
        return x.mul_(scale.reshape(1, -1, 1, 1)).add_(shift.reshape(1, -1, 1, 1))
    return bn(x)


def _block_inplace(block: nn.Module, x: Tensor) -> Tensor:
    """torchvision's BasicBlock / Bottleneck forward with the batch norms in place."""
    convs = [(block.conv1, block.bn1), (block.conv2, block.bn2)]
    if isinstance(block, tv_resnet.Bottleneck):
        convs.append((block.conv3, block.bn3))
    out = x
    for i, (conv, bn) in enumerate(convs):
        out = _norm_(bn, conv(out))
        if i + 1 < len(convs):
            out = block.relu(out)
    identity = x
    ds = block.downsample
    if ds is not None:
        if isinstance(ds, nn.Sequential) and len(ds) == 2 and isinstance(ds[0], nn.Conv2d):
            identity = _norm_(ds[1], ds[0](x))
        else:
            identity = ds(x)
    out += identity
    return block.relu(out)


def _folded_ok(body: nn.Module, x: Tensor) -> bool:
    # training with frozen batch norms (a backbone initialised from trained weights):
    # autograd records one conv instead of conv, mul and add per layer. Not under autocast:
    # the folded weights would be rounded to float16 / bfloat16 with the scale in them, and the
    # normalised activations too, where torchvision's frozen batch norm computes them in float32
    return (
        torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and not _autocast_on(x)
        and x.dim() == 4
        and getattr(body, "fold_frozen_bn", True)
        and all(type(m) is FrozenBatchNorm2d for m in body.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)))
    )


def _conv_frozen_bn(conv: nn.Conv2d, bn: FrozenBatchNorm2d, x: Tensor) -> Tensor:
    """bn(conv(x)) as one convolution: the frozen scale folded into the weight (gradients still
    reach conv.weight through the product), the shift into the bias. Equal up to rounding
    (x * (w * s) against (x * w) * s)."""
    scale, shift = bn_affine(bn)
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return F.conv2d(x, conv.weight * scale.reshape(-1, 1, 1, 1), bias, conv.stride, conv.padding, conv.dilation,
                    conv.groups)


def _block_folded(block: nn.Module, x: Tensor) -> Tensor:
    """torchvision's BasicBlock / Bottleneck forward with every conv + frozen BN folded."""
    convs = [(block.conv1, block.bn1), (block.conv2, block.bn2)]
    if isinstance(block, tv_resnet.Bottleneck):
        convs.append((block.conv3, block.bn3))
    out = x
    for i, (conv, bn) in enumerate(convs):
        out = _conv_frozen_bn(conv, bn, out)
        if i + 1 < len(convs):
            out = F.relu_(out)  # the conv's backward does not read its output
    identity = x
    ds = block.downsample
    if ds is not None:
        identity = _conv_frozen_bn(ds[0], ds[1], x)
    return F.relu_(out.add_(identity))


def _foldable(block: nn.Module) -> bool:
    ds = block.downsample
    return isinstance(block, (tv_resnet.BasicBlock, tv_resnet.Bottleneck)) and (
        ds is None or (isinstance(ds, nn.Sequential) and len(ds) == 2 and isinstance(ds[0], nn.Conv2d))
    )


class ResNetBody(nn.Module):
    """The stem and the four stages of a torchvision ResNet (no pooling head, no fc).

    forward(x [N, 3, H, W]) -> OrderedDict '0'..'3': the outputs of layer1..layer4
    (strides 4, 8, 16, 32). Under no_grad the batch norms run in place on the conv outputs
    (bit-identical); with gradients and FrozenBatchNorm2d everywhere (a trunk initialised
    from trained weights) each frozen BN is folded into its convolution, equal up to rounding
    (``fold_frozen_bn = False`` gives torchvision's op order). Under ``torch.autocast`` neither:
    torchvision's op order and dtypes (a float16 / bfloat16 convolution output normalised with
    float32 statistics), so that the features are torchvision's bit for bit.
    """

    def __init__(self, resnet: nn.Module):
        super().__init__()
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(resnet, name))

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        fast = _inplace_ok(x)
        folded = not fast and _folded_ok(self, x)
        if folded:
            x = self.maxpool(F.relu_(_conv_frozen_bn(self.conv1, self.bn1, x)))
        else:
            x = self.conv1(x)
            x = self.maxpool(self.relu(_norm_(self.bn1, x) if fast else self.bn1(x)))
        out = OrderedDict()
        for i, stage in enumerate((self.layer1, self.layer2, self.layer3, self.layer4)):
            if folded and all(_foldable(b) for b in stage):
                for block in stage:
                    x = _block_folded(block, x)
            elif fast and all(isinstance(b, (tv_resnet.BasicBlock, tv_resnet.Bottleneck)) for b in stage):
                for block in stage:
                    x = _block_inplace(block, x)
            else:
                x = stage(x)
            out[str(i)] = x
        return out


def _rename_legacy(state_dict, prefix: str, renames):
    for old, new in renames:
        if prefix + old in state_dict:
            state_dict[prefix + new] = state_dict.pop(prefix + old)


class FeaturePyramid(nn.Module):
    """FPN: a 1x1 lateral conv per input level, a top-down path (nearest upsampling to the
    lateral's size, added), a 3x3 output conv per level, and one more level, ``pool``, that
    keeps every other pixel of the coarsest output (max-pool of kernel 1, stride 2).

    in_channels_list: channels of each input level, finest first; out_channels: of every output.
    forward(OrderedDict of Tensor[N, C_i, H_i, W_i]) -> OrderedDict (same names + 'pool') of
    Tensor[N, out_channels, H_i, W_i].
    """

    _version = 2

    def __init__(self, in_channels_list: List[int], out_channels: int):
        super().__init__()
        if any(c <= 0 for c in in_channels_list):
            raise ValueError(f"in_channels_list must be positive, got {in_channels_list}")
        # Sequential wrappers: the convs sit at index 0, as in torchvision's keys (N.0.weight)
        self.inner_blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(c, out_channels, 1)) for c in in_channels_list)
        self.layer_blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, padding=1)) for _ in in_channels_list
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        if local_metadata.get("version", None) is None or local_metadata["version"] < 2:
            # checkpoints from before the blocks were wrapped: inner_blocks.N.weight
            n = len(self.inner_blocks)
            _rename_legacy(
                state_dict,
                prefix,
                [(f"{b}.{i}.{t}", f"{b}.{i}.0.{t}") for b in ("inner_blocks", "layer_blocks") for i in range(n)
                 for t in ("weight", "bias")],
            )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)

    def forward(self, x: Dict[str, Tensor]) -> Dict[str, Tensor]:
        names = list(x.keys())
        feats = list(x.values())
        inner = self.inner_blocks[-1](feats[-1])
        results = [self.layer_blocks[-1](inner)]
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.inner_blocks[i](feats[i])
            # in place on the fresh lateral (same sum, no second big output to fault in);
            # autograd-safe: neither the conv's nor the add's backward reads it. Not when the
            # dtypes differ: CUDA autocast upsamples in float32, and torchvision's sum then
            # promotes to float32 where an in-place add would round it to float16
            top_down = F.interpolate(inner, size=lateral.shape[-2:], mode="nearest")
            if top_down.dtype == lateral.dtype:
                inner = lateral.add_(top_down)
            else:
                inner = lateral + top_down
            results.insert(0, self.layer_blocks[i](inner))
        results.append(F.max_pool2d(results[-1], kernel_size=1, stride=2))
        return OrderedDict(zip(names + ["pool"], results))


class BackboneWithFPN(nn.Module):
    """body (ResNetBody) then fpn (FeaturePyramid); ``out_channels`` is the FPN's width.

    ``channels_last``: the memory format of the convolutions' activations (the format carries
    through every conv after the first, the heads' too). Set it to True (channels_last) or False
    (NCHW) to fix it; None (default) chooses where the results already differ from torchvision's
    by rounding, i.e. when training with frozen batch norms folded into the convolutions, and is
    NCHW (torchvision's bits) otherwise; "auto" chooses in every mode (optimize_for_inference
    sets it). Choosing means timing the backbone in both formats on this machine, once per
    device, size and mode (see :mod:`maskrcnn_fast.models.memory_format`; ``MASKRCNN_FAST_CHANNELS_LAST``
    = 0 / 1 skips the timing). Read back, it reports the fixed setting, else the last choice
    (None before the first).

    forward(Tensor[N, 3, H, W]) -> OrderedDict '0', '1', '2', '3', 'pool' (strides 4 ... 64).
    """

    def __init__(self, body: nn.Module, fpn: nn.Module, out_channels: int):
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.out_channels = out_channels
        self.channels_last = None

    # ---- the layout setting -------------------------------------------------------------------
    @property
    def channels_last(self):
        setting = self._channels_last_setting
        return setting if isinstance(setting, bool) else self._layout_last

    @channels_last.setter
    def channels_last(self, value) -> None:
        if not (value is None or isinstance(value, bool) or (isinstance(value, str) and value == "auto")):
            raise ValueError(f"channels_last must be True, False, None or 'auto', got {value!r}")
        self._channels_last_setting = value
        # a new setting is decided afresh (this instance's choices; the process-wide ones stay)
        self._layout_choices: Dict[tuple, bool] = {}
        self._layout_by_mode: Dict[str, bool] = {}
        self._layout_last: Optional[bool] = None
        self.layout_timings: Dict[tuple, tuple] = {}

    @property
    def channels_last_setting(self):
        """What was set: True, False, None or "auto" (``channels_last`` reports the choice)."""
        return self._channels_last_setting

    def __setstate__(self, state):
        # pickles from before the choice was measured hold a plain ``channels_last`` attribute
        # (None: the automatic rule, True / False: fixed); older ones none (always NCHW)
        setting = state.pop("channels_last", False) if "_channels_last_setting" not in state else None
        super().__setstate__(state)
        if "_channels_last_setting" not in state:
            self.channels_last = setting

    def _layout(self, x: Tensor) -> bool:
        """True: run this input's convolutions on channels_last activations."""
        setting = self._channels_last_setting
        if isinstance(setting, bool):
            return setting
        if x.dim() != 4:
            return False
        folded = _folded_ok(self.body, x)
        if setting is None and not folded:
            return False  # torchvision's op order and rounding
        mode = "train" if torch.is_grad_enabled() else "infer"
        by_mode = self._layout_by_mode
        if not _memory_format.measuring_allowed(x):
            # traced or compiled: what this mode chose eagerly, else NCHW; nothing is written
            return by_mode.get(mode, False)
        variant = mode + ("-folded" if folded else "") + ("-autocast" if _autocast_on(x) else "")
        key = _memory_format.layout_key(x, variant)
        choices = self._layout_choices
        choice = choices.get(key)
        if choice is None:
            choice = _memory_format.env_choice()
        if choice is None:
            sig = _memory_format.signature(self)
            choice = _memory_format.cached(sig, key)
            if choice is None:
                t_nchw, t_cl = self.time_layouts(x)
                choice = _memory_format.prefer_channels_last(t_nchw, t_cl)
                self.layout_timings[key] = (t_nchw, t_cl)
                _memory_format.remember(sig, key, choice)
        choices[key] = choice
        by_mode[mode] = choice
        self._layout_last = choice
        return choice

    def time_layouts(self, x: Tensor):
        """-> (NCHW s, channels_last s): this backbone's forward, and when gradients are on its
        backward to the trainable parameters, on the first image of ``x`` (layout.proxy_input:
        cropped only above 2M pixels). Leaves no trace: gradients are returned by autograd.grad
        (nothing accumulates in ``.grad``, no DDP hook fires) and dropped; batch-norm running
        statistics are restored."""
        probe = _memory_format.proxy_input(x.detach())
        params = [p for p in self.parameters() if p.requires_grad] if torch.is_grad_enabled() else []
        stats = [(b, b.detach().clone()) for m in self.modules() if m.training for b in m.buffers(recurse=False)]

        def run(cl: bool) -> None:
            out = [o for o in self._forward(probe, cl).values() if o.requires_grad]
            if params and out:
                torch.autograd.grad(out, params, [torch.ones_like(o) for o in out], allow_unused=True)

        try:
            return _memory_format.time_layouts(run, x.device)
        finally:
            with torch.no_grad():
                for b, saved in stats:
                    b.copy_(saved)

    def _forward(self, x: Tensor, cl: bool) -> Dict[str, Tensor]:
        if cl:
            # the format then carries through every conv after this one (the heads' too), and
            # our ROI align reads channels_last features directly
            x = x.contiguous(memory_format=torch.channels_last)
        return self.fpn(self.body(x))

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        return self._forward(x, self._layout(x))


def freeze_resnet_layers(resnet: nn.Module, trainable_layers: int) -> None:
    """Turns off gradients of all but the last ``trainable_layers`` of layer4, layer3, layer2,
    layer1, conv1 (5 also trains bn1), as torchvision's detection builders do."""
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be in [0, 5], got {trainable_layers}")
    trained = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        trained.append("bn1")
    for name, p in resnet.named_parameters():
        if not any(name.startswith(t) for t in trained):
            p.requires_grad_(False)


def resnet_fpn_backbone(
    depth: int = 50,
    weights=None,
    norm_layer: Optional[Callable[..., nn.Module]] = None,
    trainable_layers: int = 3,
    out_channels: int = 256,
    state_dict: Optional[Mapping] = None,
) -> BackboneWithFPN:
    """A torchvision ResNet-``depth`` trunk (``weights``: a torchvision ``ResNet*_Weights`` or
    None; or ``state_dict``: a ResNet state_dict) with ``norm_layer`` (default BatchNorm2d),
    frozen below ``trainable_layers``, under an FPN of ``out_channels`` channels on
    layer1..layer4."""
    if depth not in _RESNETS:
        raise ValueError(f"depth must be one of {sorted(_RESNETS)}, got {depth}")
    resnet = getattr(tv_resnet, _RESNETS[depth])(weights=weights, norm_layer=norm_layer or nn.BatchNorm2d)
    if state_dict is not None:
        resnet.load_state_dict(state_dict)
    freeze_resnet_layers(resnet, trainable_layers)
    stage2 = resnet.inplanes // 8  # 64 for basic blocks, 256 for bottlenecks
    in_channels = [stage2 * 2**i for i in range(4)]
    return BackboneWithFPN(ResNetBody(resnet), FeaturePyramid(in_channels, out_channels), out_channels)
