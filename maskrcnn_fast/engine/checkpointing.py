"""A training run's checkpoint: everything an exact resume needs.

The model, the optimiser, the schedule and the gradient scaler's states, the position in the
data (epoch and batch within it), every rank's RNG states, and how to rebuild the model
(``model_args``, read by eval, predict and export). Files go through
:func:`maskrcnn_fast.weights.save_checkpoint` (whole or not at all) and are read by
:func:`maskrcnn_fast.weights.load_checkpoint`.
"""
from ..weights import load_checkpoint
from .distributed import all_gather_objects
from .reproducible import rng_state, seed_everything, set_rng_state

__all__ = ["CHECKPOINT_FORMAT", "restore", "training_state"]

CHECKPOINT_FORMAT = "maskrcnn_fast.checkpoint/1"
_NEEDED = ("model", "optimizer", "lr_scheduler", "iteration", "epoch", "epoch_batch")


def training_state(trainer) -> dict:
    """The checkpoint of a :class:`~maskrcnn_fast.engine.Trainer` (every rank must call it: the
    RNG states are gathered)."""
    t = trainer
    return {
        "format": CHECKPOINT_FORMAT,
        "model": t.module.state_dict(),
        "optimizer": t.optimizer.state_dict(),
        "optimizer_name": t.optimizer_name,
        "lr_scheduler": t.lr_scheduler.state_dict(),
        "lr_schedule": t.lr_schedule,
        "scaler": t.scaler.state_dict(),
        "iteration": t.iteration,
        "epoch": t.next_epoch,
        "epoch_batch": t.next_batch,
        "total_iterations": t.total_iters,
        "seed": t.seed,
        "world_size": t.info.world_size,
        "batch_size": t.batch_size,
        "rng": all_gather_objects(rng_state(), t.info),
        "model_args": t.model_args,
        **t.extra_state,
    }


def restore(trainer, path: str) -> None:
    """Puts ``trainer`` where the checkpoint at ``path`` (a file or its folder) left off.
    Raises ValueError when it is not a training checkpoint or was trained with another
    optimiser or schedule."""
    t = trainer
    ck = load_checkpoint(path, map_location="cpu")
    missing = [k for k in _NEEDED if k not in ck]
    if missing:
        raise ValueError(f"{path} is not a training checkpoint (it lacks {', '.join(missing)})")
    # checkpoints from before these options: SGD, multistep
    for key, what, mine, default in (("optimizer_name", "optimizer", t.optimizer_name, "sgd"),
                                     ("lr_schedule", "lr schedule", t.lr_schedule, "multistep")):
        theirs = ck.get(key, default)
        if theirs != mine:
            raise ValueError(f"{path} was trained with the {what} {theirs}, not {mine}: resume with the same one")
    t.module.load_state_dict(ck["model"])
    t.optimizer.load_state_dict(ck["optimizer"])
    t.lr_scheduler.load_state_dict(ck["lr_scheduler"])
    if ck.get("scaler"):
        t.scaler.load_state_dict(ck["scaler"])
    t.iteration, t.next_epoch, t.next_batch = ck["iteration"], ck["epoch"], ck["epoch_batch"]
    states = ck.get("rng") or []
    if len(states) == t.info.world_size and ck.get("batch_size", t.batch_size) == t.batch_size:
        set_rng_state(states[t.info.rank])
    else:
        # another world size or batch: the data order differs anyway; reseed from the position
        t.reporter.print(f"resuming with {t.info.world_size} processes x {t.batch_size} images from a run "
                         f"with {len(states)} x {ck.get('batch_size')}: the run will not repeat exactly")
        seed_everything(t.seed + t.info.rank + 7919 * t.iteration)
