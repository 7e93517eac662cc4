"""What the training loop shows: a progress bar with the losses, or a line every few steps
without one; only rank 0 shows anything."""
from typing import Optional

from .distributed import DistInfo

__all__ = ["Reporter"]

# the loss terms' short names
_SHORT = {"loss_classifier": "cls", "loss_box_reg": "box", "loss_mask": "mask", "loss_objectness": "obj",
          "loss_rpn_box_reg": "rpn"}


class Reporter:
    """progress: a tqdm bar between :meth:`open` and :meth:`close`; else a line each
    ``print_every`` steps (and at the last)."""

    def __init__(self, info: Optional[DistInfo] = None, progress: bool = True, print_every: int = 20):
        self.info = info if info is not None else DistInfo()
        self.progress, self.print_every = progress, max(1, int(print_every))
        self.total = 0
        self._bar = None

    def open(self, total: int, initial: int = 0) -> None:
        from tqdm import tqdm

        self.total = total
        self._bar = tqdm(total=total, initial=initial, unit="it", dynamic_ncols=True,
                         disable=not (self.progress and self.info.is_main), desc="train")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def print(self, msg: str) -> None:
        if self.info.is_main:
            if self._bar is not None:
                self._bar.write(msg)
            else:
                print(msg, flush=True)

    def step(self, r: dict) -> None:
        """A step's record: iteration, epoch, loss, the loss terms, lr, images_per_s."""
        if not self.info.is_main:
            return
        if self._bar is not None and not self._bar.disable:
            post = {"loss": f"{r['loss']:.3f}"}
            post.update({s: f"{r[k]:.3f}" for k, s in _SHORT.items() if k in r})
            post.update(lr=f"{r['lr']:.2e}", img_s=f"{r['images_per_s']:.1f}")
            self._bar.set_postfix(post, refresh=False)
            self._bar.update(1)
        elif r["iteration"] % self.print_every == 0 or r["iteration"] == self.total:
            terms = " ".join(f"{s}={r[k]:.4f}" for k, s in _SHORT.items() if k in r)
            print(f"[{r['iteration']}/{self.total}] epoch {r['epoch']} loss={r['loss']:.4f} {terms} "
                  f"lr={r['lr']:.2e} {r['images_per_s']:.1f} img/s", flush=True)
