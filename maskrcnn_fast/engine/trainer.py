"""The training loop: torchvision's detection recipe, exact resume, single process or torchrun.

Its parts live beside it: the data of each epoch (:mod:`.epochs`), the optimiser and schedule
(:mod:`.optim`), the checkpoint (:mod:`.checkpointing`), what is shown (:mod:`.reporting`) and
the process group (:mod:`.distributed`).
"""
import math
import os
import time
from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..structures import PackedMasks
from ..weights import save_checkpoint
from . import checkpointing
from .distributed import DistInfo, dump_rank_state, reduce_mean, wrap_model
from .epochs import Epochs
from .optim import check_choices, default_lr, make_lr_scheduler, make_optimizer
from .reporting import Reporter
from .reproducible import seed_everything

__all__ = ["NonFiniteLossError", "Trainer", "train"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stops rather than corrupting the weights."""


class Trainer:
    """Trains a Mask R-CNN (train mode returns a dict of losses) on a detection data set.

    dataset: items ``(image Tensor[3, H, W], target dict)``; the trainer owns the data order
    (see :mod:`maskrcnn_fast.engine`). batch_size: images per process. epochs or iterations:
    length of training (iterations wins; epochs then = ceil(iterations / batches per epoch)).
    lr: default :func:`default_lr` of the total batch. warmup_iters: default 1000, at most
    one epoch (as torchvision). optimizer: "sgd" (momentum, weight decay) or "adamw" (weight
    decay; momentum unused). lr_schedule: "multistep" (x lr_gamma at each of lr_steps:
    milestones in epochs when training by epochs, in iterations when training by iterations)
    or "cosine" (to 0 at the last iteration; lr_steps unused). clip_grad_norm: max global
    grad norm (None: no clipping). amp: autocast + GradScaler, CUDA only.
    checkpoint_dir: writes ``checkpoint.pt`` (latest: every epoch end, every
    ``checkpoint_every`` iterations, and at the end); with ``keep_checkpoints`` also
    ``checkpoint_<iteration>.pt``. resume: a checkpoint path (or directory) to continue from.
    model_args: how to rebuild the model (depth, num_classes, kwargs, classes), stored in
    checkpoints. on_iteration(record): called on every rank after each step with the record
    dict (iteration, epoch, loss, each loss term, lr).
    group_ids: per-item aspect-ratio group ids (batches from one group,
    maskrcnn_fast.data.GroupedBatchSampler) or None (one group). No image is left out of an
    epoch: a group's last batch is topped up with repeats of its images. Records count epochs
    from 1.
    """

    def __init__(
        self,
        model: nn.Module,
        dataset: Dataset,
        *,
        batch_size: int = 2,
        epochs: Optional[int] = None,
        iterations: Optional[int] = None,
        lr: Optional[float] = None,
        optimizer: str = "sgd",
        lr_schedule: str = "multistep",
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        warmup_iters: Optional[int] = None,
        warmup_factor: float = 0.001,
        lr_steps: Sequence[int] = (),
        lr_gamma: float = 0.1,
        clip_grad_norm: Optional[float] = None,
        amp: bool = False,
        device="cpu",
        workers: int = 0,
        seed: int = 0,
        checkpoint_dir: Optional[str] = None,
        checkpoint_every: int = 0,
        keep_checkpoints: bool = False,
        resume: Optional[str] = None,
        progress: bool = True,
        print_every: int = 20,
        model_args: Optional[dict] = None,
        extra_state: Optional[dict] = None,
        on_iteration: Optional[Callable[[dict], None]] = None,
        group_ids: Optional[List[int]] = None,
        collate_fn: Optional[Callable] = None,
        dist_info: Optional[DistInfo] = None,
    ):
        if epochs is None and iterations is None:
            raise ValueError("give epochs or iterations")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        check_choices(optimizer, lr_schedule)
        self.device = torch.device(device)
        if amp and self.device.type != "cuda":
            raise ValueError("amp needs a CUDA device")
        self.info = dist_info if dist_info is not None else DistInfo()
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.clip_grad_norm, self.amp = clip_grad_norm, bool(amp)
        self.checkpoint_dir, self.checkpoint_every = checkpoint_dir, int(checkpoint_every or 0)
        self.keep_checkpoints = keep_checkpoints
        self.model_args, self.extra_state = model_args, extra_state or {}
        self.on_iteration = on_iteration
        self.reporter = Reporter(self.info, progress, print_every)
        self.history: List[dict] = []

        seed_everything(self.seed + self.info.rank)
        self.module = model.to(self.device)
        self.model = wrap_model(self.module, self.device, self.info)
        self.epochs_data = Epochs(dataset, self.batch_size, self.seed, workers=workers, group_ids=group_ids,
                                  collate_fn=collate_fn, info=self.info, device=self.device)
        self.dataset = self.epochs_data.dataset
        self.iters_per_epoch = self.epoch_len(0)
        self._set_schedule(epochs, iterations, lr, optimizer, lr_schedule, momentum, weight_decay,
                           warmup_iters, warmup_factor, lr_steps, lr_gamma)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.iteration = 0  # optimizer steps done
        self.next_epoch, self.next_batch = 0, 0  # where the data resumes
        if resume:
            self.load(resume)

    def _set_schedule(self, epochs, iterations, lr, optimizer, lr_schedule, momentum, weight_decay,
                      warmup_iters, warmup_factor, lr_steps, lr_gamma) -> None:
        # by iterations: epochs run until the count is reached; by epochs: the count is an
        # estimate when grouped batching makes epochs differ in length
        self.by_iterations = iterations is not None
        self.epochs = None if self.by_iterations else int(epochs)
        self.total_iters = int(iterations) if self.by_iterations else self.epochs * self.iters_per_epoch
        per_step = 1 if self.by_iterations else self.iters_per_epoch
        milestones = [int(s) * per_step for s in lr_steps]
        if warmup_iters is None:  # torchvision: 1000 steps, at most the first epoch
            warmup_iters = min(1000, self.iters_per_epoch)
        if lr is None:
            lr = default_lr(self.batch_size * self.info.world_size, optimizer)
        self.optimizer_name, self.lr_schedule = optimizer, lr_schedule
        params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(params, optimizer, lr, momentum, weight_decay)
        self.lr_scheduler = make_lr_scheduler(self.optimizer, lr_schedule, self.total_iters, milestones, lr_gamma,
                                              warmup_iters, warmup_factor)

    # -- data --
    def epoch_len(self, epoch: int) -> int:
        """Steps in ``epoch``, the same on every rank (see :meth:`Epochs.length`)."""
        return self.epochs_data.length(epoch)

    def _loader(self, epoch: int, skip: int):
        return self.epochs_data.loader(epoch, skip)

    def _done(self) -> bool:
        if self.by_iterations:
            return self.iteration >= self.total_iters
        return self.next_epoch >= self.epochs

    # -- checkpoints --
    def state_dict(self) -> dict:
        """The checkpoint (see :mod:`maskrcnn_fast.engine.checkpointing`); every rank calls it."""
        return checkpointing.training_state(self)

    def save(self, name: str = "checkpoint.pt") -> Optional[str]:
        """Every rank must call it (the RNG states are gathered); rank 0 writes. -> the path."""
        if not self.checkpoint_dir:
            return None
        state = self.state_dict()
        if not self.info.is_main:
            return None
        return save_checkpoint(state, os.path.join(self.checkpoint_dir, name))

    _saved_at = None

    def _save_latest(self) -> None:
        if self._saved_at != self.iteration:
            self.save()
            self._saved_at = self.iteration

    def load(self, path: str) -> None:
        """Continue from the checkpoint at ``path`` (a file or its folder)."""
        checkpointing.restore(self, path)

    # -- training --
    def fit(self) -> List[dict]:
        """Train to ``total_iters``; -> the per-iteration records of this call."""
        self.model.train()
        self._ips = None
        self.reporter.open(self.total_iters, initial=self.iteration)
        try:
            while not self._done():
                self._run_epoch(self.next_epoch, self.next_batch)
            self._save_latest()
        finally:
            self.reporter.close()
        dump_rank_state(self.module, self.info)
        return self.history

    _ips = None  # images per second, smoothed

    def _run_epoch(self, epoch: int, skip: int) -> None:
        n = self.epoch_len(epoch)
        images_per_step = self.batch_size * self.info.world_size
        t_last = time.perf_counter()
        for images, targets in self._loader(epoch, skip):
            record = self._step(images, targets, epoch)
            self.next_batch += 1
            if self.next_batch >= n:
                self.next_epoch, self.next_batch = epoch + 1, 0
            now = time.perf_counter()
            rate = images_per_step / max(now - t_last, 1e-9)
            self._ips = rate if self._ips is None else 0.9 * self._ips + 0.1 * rate
            t_last = now
            record["images_per_s"] = self._ips
            self.history.append(record)
            if self.on_iteration is not None:
                self.on_iteration(record)
            self.reporter.step(record)
            if self.checkpoint_every and self.iteration % self.checkpoint_every == 0:
                self._save_latest()
                if self.keep_checkpoints:
                    self.save(f"checkpoint_{self.iteration:07d}.pt")
            if self.next_batch == 0 or (self.by_iterations and self.iteration >= self.total_iters):
                break
        if self.next_epoch == epoch + 1 and self.next_batch == 0:
            self._save_latest()  # each epoch end
        if self.next_epoch == epoch and not self._done():
            # the loader yielded fewer batches than len() promised: move on
            self.next_epoch, self.next_batch = epoch + 1, 0

    def _step(self, images, targets, epoch: int) -> dict:
        dev = self.device
        nb = dev.type == "cuda"
        images = [im.to(dev, non_blocking=nb) for im in images]
        # tensors and PackedMasks (compact instance masks) move; other values (image_id) stay
        targets = [{k: (v.to(dev, non_blocking=nb) if isinstance(v, (Tensor, PackedMasks)) else v)
                    for k, v in t.items()} for t in targets]
        with torch.autocast("cuda", enabled=self.amp):
            loss_dict = self.model(images, targets)
        loss = sum(loss_dict.values())
        values = reduce_mean(loss_dict, self.info)
        total = sum(values.values())
        if not math.isfinite(total):
            raise NonFiniteLossError(
                f"loss is {total} at iteration {self.iteration + 1} (epoch {epoch + 1}): "
                + ", ".join(f"{k}={v:.4g}" for k, v in values.items())
                + "; try a lower --lr, a longer --warmup-iters or --clip-grad-norm")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.module.parameters(), self.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.optimizer.param_groups[0]["lr"]
        self.lr_scheduler.step()
        self.iteration += 1
        # epochs are counted from 1 where people read them (the checkpoint keeps the 0-based
        # position it resumes from)
        return {"iteration": self.iteration, "epoch": epoch + 1, "loss": total, "lr": lr, **values}


def train(model: nn.Module, dataset: Dataset, **kwargs) -> List[dict]:
    """``Trainer(model, dataset, **kwargs).fit()``: the per-iteration loss records."""
    return Trainer(model, dataset, **kwargs).fit()
