"""Training loop: torchvision's detection recipe, exact resume, single process or torchrun.

Defaults follow torchvision's reference scripts: SGD (momentum 0.9, weight decay 1e-4),
lr 0.02 for 16 images scaled linearly with the total batch size, linear warm-up over 1000
iterations from a factor 0.001, then x0.1 at the given milestones. Also: AdamW (default lr
1e-3; it trains a small model from scratch about twice as fast as SGD) and a cosine decay to 0
after the warm-up.

Exact resume: everything random is a function of the seed and of the position in training,
or is saved in the checkpoint. The data order of an epoch depends only on (seed, epoch)
(a DistributedSampler, also in a single process); the random transforms of an item depend
only on (seed, epoch, index) (each item is loaded under its own RNG seed); the model's own
draws (the proposal samplers) use the global RNGs, whose states every rank saves. A resumed
run skips the batches the checkpoint already saw (as index lists, without loading them), so
its next losses equal those of an uninterrupted run.

Distributed: launched by torchrun (RANK, WORLD_SIZE, LOCAL_RANK set), :func:`init_distributed`
joins the process group (nccl on CUDA, gloo on the CPU) and the model is wrapped in
DistributedDataParallel; only rank 0 prints and writes checkpoints.
"""
import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ._reproducible import SeededItems, SkipBatches, item_seed, rng_state, seed_everything, set_rng_state
from .lr_schedules import LR_SCHEDULES, OPTIMIZERS, WarmupCosine, WarmupMultiStep, default_lr

__all__ = [
    "DistInfo",
    "NonFiniteLossError",
    "Trainer",
    "WarmupCosine",
    "WarmupMultiStep",
    "default_lr",
    "init_distributed",
    "load_checkpoint",
    "seed_everything",
    "train",
]

CHECKPOINT_FORMAT = "maskrcnn_fast.checkpoint/1"
# test hook: when set, every rank saves its final parameters to <dir>/rank<r>.pt
_RANK_DUMP_ENV = "MASKRCNN_FAST_RANK_DUMP"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stops rather than corrupting the weights."""


# ---- distributed ---------------------------------------------------------------------------------
@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the process group when torchrun set RANK/WORLD_SIZE; else a one-process DistInfo.

    device: "cpu" or "cuda" (the local rank picks the GPU)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    if world <= 1:
        return DistInfo(rank, world, local, False)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return DistInfo(rank, world, local, True)


def _reduce_mean(values: Dict[str, torch.Tensor], info: DistInfo) -> Dict[str, float]:
    """Mean over ranks of detached scalars, as floats (one all_reduce, one host sync)."""
    names = sorted(values)
    stacked = torch.stack([values[n].detach().float() for n in names])
    if info.enabled:
        dist.all_reduce(stacked)
        stacked /= info.world_size
    return dict(zip(names, stacked.tolist()))


def _default_collate(batch):
    return tuple(zip(*batch))


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """A checkpoint written by :class:`Trainer` (or any ``{"model": state_dict, ...}``);
    ``path`` may be a directory holding ``checkpoint.pt``."""
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.pt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    import argparse

    # torchvision's reference scripts store their argparse.Namespace next to the weights
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location=map_location, weights_only=True)


# ---- the loop ------------------------------------------------------------------------------------
class Trainer:
    """Trains a Mask R-CNN (train mode returns a dict of losses) on a detection data set.

    dataset: items ``(image Tensor[3, H, W], target dict)``; the trainer owns the data order
    (see the module docstring). batch_size: images per process. epochs or iterations: length
    of training (iterations wins; epochs then = ceil(iterations / batches per epoch)).
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
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {lr_schedule!r}")
        self.device = torch.device(device)
        if amp and self.device.type != "cuda":
            raise ValueError("amp needs a CUDA device")
        self.info = dist_info if dist_info is not None else DistInfo()
        self.batch_size, self.seed, self.workers = int(batch_size), int(seed), int(workers)
        self.clip_grad_norm, self.amp = clip_grad_norm, bool(amp)
        self.checkpoint_dir, self.checkpoint_every = checkpoint_dir, int(checkpoint_every or 0)
        self.keep_checkpoints = keep_checkpoints
        self.progress, self.print_every = progress, max(1, int(print_every))
        self.model_args, self.extra_state = model_args, extra_state or {}
        self.on_iteration = on_iteration
        self.group_ids = group_ids
        if collate_fn is None:
            try:
                from .data import collate_fn  # noqa: F811
            except ImportError:
                collate_fn = _default_collate
        self.collate_fn = collate_fn
        self.history: List[dict] = []

        seed_everything(self.seed + self.info.rank)
        self.model = model.to(self.device)
        self.module = self.model
        if self.info.enabled:
            ids = [self.device.index if self.device.index is not None else self.info.local_rank] \
                if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

        self.dataset = SeededItems(dataset, self.seed)
        self._epoch_lens: Dict[int, int] = {}
        if len(dataset) == 0:
            raise ValueError("the data set is empty")
        self.iters_per_epoch = self.epoch_len(0)
        # by iterations: epochs run until the count is reached; by epochs: the count is an
        # estimate when grouped batching makes epochs differ in length
        self.by_iterations = iterations is not None
        if self.by_iterations:
            self.total_iters = int(iterations)
            self.epochs = None
            milestones = list(lr_steps)
        else:
            self.epochs = int(epochs)
            self.total_iters = self.epochs * self.iters_per_epoch
            milestones = [int(e) * self.iters_per_epoch for e in lr_steps]

        if warmup_iters is None:  # torchvision: 1000 steps, at most the first epoch
            warmup_iters = min(1000, self.iters_per_epoch)
        if lr is None:
            lr = default_lr(self.batch_size * self.info.world_size, optimizer)
        params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer_name, self.lr_schedule = optimizer, lr_schedule
        if optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        else:
            self.optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        if lr_schedule == "cosine":
            factor = WarmupCosine(self.total_iters, warmup_iters, warmup_factor)
        else:
            factor = WarmupMultiStep(milestones, lr_gamma, warmup_iters, warmup_factor)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.iteration = 0  # optimizer steps done
        self.next_epoch, self.next_batch = 0, 0  # where the data resumes
        if resume:
            self.load(resume)

    # -- data --
    def _batches(self, epoch: int, num_batches: Optional[int] = None):
        # Every image of the epoch is in a batch: a group's leftovers are topped up with repeats
        # of that group's images (torchvision's GroupedBatchSampler), so no image is skipped
        # for being alone in its aspect-ratio group, and batches stay full. Without groups, one
        # group: the last short batch is topped up alike instead of dropped.
        from .data.samplers import GroupedBatchSampler

        sampler = DistributedSampler(self.dataset, num_replicas=self.info.world_size, rank=self.info.rank,
                                     shuffle=True, seed=self.seed)
        sampler.set_epoch(epoch)
        groups = self.group_ids if self.group_ids is not None else [0] * len(self.dataset)
        return GroupedBatchSampler(sampler, groups, self.batch_size, fill_last=True, num_batches=num_batches)

    def epoch_len(self, epoch: int) -> int:
        """Steps in ``epoch``: the same on every rank (the most batches any rank has; the
        others repeat their first batches), or DistributedDataParallel would wait forever for
        the rank that ran out."""
        if epoch not in self._epoch_lens:
            n = self._batches(epoch).natural_len()
            if self.info.enabled:
                t = torch.tensor([n], dtype=torch.int64,
                                 device=self.device if self.device.type == "cuda" else "cpu")
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
                n = int(t.item())
            self._epoch_lens[epoch] = n
        return self._epoch_lens[epoch]

    def _done(self) -> bool:
        if self.by_iterations:
            return self.iteration >= self.total_iters
        return self.next_epoch >= self.epochs

    def _loader(self, epoch: int, skip: int) -> DataLoader:
        self.dataset.epoch = epoch
        # an explicit generator: creating the iterator must not draw from the global RNG
        g = torch.Generator().manual_seed(item_seed(self.seed, epoch, 0))
        batches = self._batches(epoch, num_batches=self.epoch_len(epoch))
        return DataLoader(self.dataset, batch_sampler=SkipBatches(batches, skip),
                          num_workers=self.workers, collate_fn=self.collate_fn, generator=g,
                          pin_memory=self.device.type == "cuda")

    # -- checkpoints --
    def state_dict(self) -> dict:
        rng = rng_state()
        if self.info.enabled:
            states = [None] * self.info.world_size
            dist.all_gather_object(states, rng)
        else:
            states = [rng]
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "optimizer_name": self.optimizer_name,
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "lr_schedule": self.lr_schedule,
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "epoch": self.next_epoch,
            "epoch_batch": self.next_batch,
            "total_iterations": self.total_iters,
            "seed": self.seed,
            "world_size": self.info.world_size,
            "batch_size": self.batch_size,
            "rng": states,
            "model_args": self.model_args,
            **self.extra_state,
        }

    def save(self, name: str = "checkpoint.pt") -> Optional[str]:
        """Every rank must call it (the RNG states are gathered); rank 0 writes. -> the path."""
        if not self.checkpoint_dir:
            return None
        state = self.state_dict()
        if not self.info.is_main:
            return None
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        path = os.path.join(self.checkpoint_dir, name)
        tmp = path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)  # a crash mid-write never leaves a truncated checkpoint
        return path

    _saved_at = None

    def _save_latest(self) -> None:
        if self._saved_at != self.iteration:
            self.save()
            self._saved_at = self.iteration

    def load(self, path: str) -> None:
        ck = load_checkpoint(path, map_location="cpu")
        missing = [k for k in ("model", "optimizer", "lr_scheduler", "iteration", "epoch", "epoch_batch")
                   if k not in ck]
        if missing:
            raise ValueError(f"{path} is not a training checkpoint (it lacks {', '.join(missing)})")
        # checkpoints from before these options: SGD, multistep
        for key, what, mine, default in (("optimizer_name", "optimizer", self.optimizer_name, "sgd"),
                                         ("lr_schedule", "lr schedule", self.lr_schedule, "multistep")):
            theirs = ck.get(key, default)
            if theirs != mine:
                raise ValueError(f"{path} was trained with the {what} {theirs}, not {mine}: resume with the same one")
        self.module.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.lr_scheduler.load_state_dict(ck["lr_scheduler"])
        if ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.iteration, self.next_epoch, self.next_batch = ck["iteration"], ck["epoch"], ck["epoch_batch"]
        states = ck.get("rng") or []
        if len(states) == self.info.world_size and ck.get("batch_size", self.batch_size) == self.batch_size:
            set_rng_state(states[self.info.rank])
        else:
            # another world size or batch: the data order differs anyway; reseed from the position
            self._print(f"resuming with {self.info.world_size} processes x {self.batch_size} images from a run "
                        f"with {len(states)} x {ck.get('batch_size')}: the run will not repeat exactly")
            seed_everything(self.seed + self.info.rank + 7919 * self.iteration)

    # -- output --
    def _print(self, msg: str) -> None:
        if self.info.is_main:
            if self._bar is not None:
                self._bar.write(msg)
            else:
                print(msg, flush=True)

    _bar = None

    # -- training --
    def fit(self) -> List[dict]:
        """Train to ``total_iters``; -> the per-iteration records of this call."""
        from tqdm import tqdm

        self.model.train()
        show = self.progress and self.info.is_main
        self._bar = tqdm(total=self.total_iters, initial=self.iteration, unit="it", dynamic_ncols=True,
                         disable=not show, desc="train")
        images_per_step = self.batch_size * self.info.world_size
        ips = None
        try:
            while not self._done():
                epoch, skip = self.next_epoch, self.next_batch
                n = self.epoch_len(epoch)
                t_last = time.perf_counter()
                for images, targets in self._loader(epoch, skip):
                    record = self._step(images, targets, epoch)
                    self.next_batch += 1
                    if self.next_batch >= n:
                        self.next_epoch, self.next_batch = epoch + 1, 0
                    now = time.perf_counter()
                    rate = images_per_step / max(now - t_last, 1e-9)
                    ips = rate if ips is None else 0.9 * ips + 0.1 * rate
                    t_last = now
                    record["images_per_s"] = ips
                    self.history.append(record)
                    if self.on_iteration is not None:
                        self.on_iteration(record)
                    self._report(record)
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
            self._save_latest()
        finally:
            self._bar.close()
            self._bar = None
        dump = os.environ.get(_RANK_DUMP_ENV)
        if dump:
            os.makedirs(dump, exist_ok=True)
            torch.save({k: v.detach().cpu() for k, v in self.module.state_dict().items()},
                       os.path.join(dump, f"rank{self.info.rank}.pt"))
        return self.history

    def _step(self, images, targets, epoch: int) -> dict:
        dev = self.device
        nb = dev.type == "cuda"
        images = [im.to(dev, non_blocking=nb) for im in images]
        targets = [{k: (v.to(dev, non_blocking=nb) if torch.is_tensor(v) else v) for k, v in t.items()}
                   for t in targets]
        with torch.autocast("cuda", enabled=self.amp):
            loss_dict = self.model(images, targets)
        loss = sum(loss_dict.values())
        values = _reduce_mean(loss_dict, self.info)
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

    def _report(self, r: dict) -> None:
        if not self.info.is_main:
            return
        short = {"loss_classifier": "cls", "loss_box_reg": "box", "loss_mask": "mask",
                 "loss_objectness": "obj", "loss_rpn_box_reg": "rpn"}
        if self._bar is not None and not self._bar.disable:
            post = {"loss": f"{r['loss']:.3f}"}
            post.update({s: f"{r[k]:.3f}" for k, s in short.items() if k in r})
            post.update(lr=f"{r['lr']:.2e}", img_s=f"{r['images_per_s']:.1f}")
            self._bar.set_postfix(post, refresh=False)
            self._bar.update(1)
        elif r["iteration"] % self.print_every == 0 or r["iteration"] == self.total_iters:
            terms = " ".join(f"{s}={r[k]:.4f}" for k, s in short.items() if k in r)
            print(f"[{r['iteration']}/{self.total_iters}] epoch {r['epoch']} loss={r['loss']:.4f} {terms} "
                  f"lr={r['lr']:.2e} {r['images_per_s']:.1f} img/s", flush=True)


def train(model: nn.Module, dataset: Dataset, **kwargs) -> List[dict]:
    """``Trainer(model, dataset, **kwargs).fit()``: the per-iteration loss records."""
    return Trainer(model, dataset, **kwargs).fit()
