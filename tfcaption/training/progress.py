"""Training progress for a person: a live bar in a terminal, one line every few seconds in a log.

With stdout a terminal, Keras's `Progbar` redraws one line in place. Anywhere else (CI, `nohup`, a
Colab or Kubernetes log) redrawn bars arrive as thousands of lines or one at the very end, so the
reporter writes a plain line after the first step, every `interval` seconds and at the end of the
epoch instead:

    epoch 2/4  step 340/781 (44%)  loss 1.2345  lr 3.1e-04  212 pairs/s  eta 2m05s
"""

import sys
import time

import keras


def _duration(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class EpochProgress:
    """Progress of one epoch of `steps` steps of `batch_size` pairs, starting at `start` (a resumed epoch).

    Args:
        epoch, epochs: 1-based epoch number and the total, for the log lines.
        steps: steps in the epoch.
        batch_size: pairs per step (for pairs/s).
        start: the step the epoch resumes at.
        log: print-like function for the plain lines.
        interactive: draw Keras's bar (default: whether stdout is a terminal).
        interval: seconds between plain lines.
        name: what the lines call the epoch (a run of several phases says whose: "scst epoch").
    """

    def __init__(self, epoch, epochs, steps, batch_size, start=0, log=print, interactive=None, interval=10.0,
                 clock=time.monotonic, name="epoch"):
        self.epoch, self.epochs, self.steps, self.batch_size, self.start = epoch, epochs, steps, batch_size, start
        self.name = name
        self.log, self.interval, self.clock = log, interval, clock
        if interactive is None:
            interactive = hasattr(sys.stdout, "isatty") and sys.stdout.isatty()
        self.bar = keras.utils.Progbar(steps, stateful_metrics=["loss", "lr"]) if interactive else None
        self.started = self.last = clock()

    def resize(self, steps):
        """The epoch now has `steps` steps (a time budget shortened it)."""
        self.steps = steps
        if self.bar is not None:
            self.bar.target = steps

    def update(self, step, loss, lr):
        """`step` steps of the epoch done (1-based), with the epoch's mean loss so far and the rate."""
        if self.bar is not None:
            if step % 10 == 0 or step == self.steps or step == self.start + 1:
                self.bar.update(step, [("loss", loss), ("lr", lr)])
            return
        now = self.clock()
        first = step == self.start + 1  # says the epoch is under way (and how long compiling took)
        if not first and now - self.last < self.interval and step != self.steps:
            return
        self.last = now
        done = step - self.start
        rate = done * self.batch_size / max(now - self.started, 1e-9)
        eta = (self.steps - step) * (now - self.started) / max(done, 1)
        self.log(f"{self.name} {self.epoch}/{self.epochs}  step {step}/{self.steps} ({100 * step // self.steps}%)  "
                 f"loss {loss:.4f}  lr {lr:.2g}  {rate:.0f} pairs/s  eta {_duration(eta)}")
