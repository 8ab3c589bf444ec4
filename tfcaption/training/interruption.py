"""Stopping a training run cleanly: SIGTERM / SIGINT ask the loop to checkpoint and stop at the next step.

Preemptible machines (cloud spot VMs, Colab, TPU pods) send SIGTERM shortly before they kill a job, and a
user stops a run with Ctrl-C. Inside `stop_requests()` the first such signal only sets a flag that the
training loop reads after each step: it saves a checkpoint of the exact position (epoch and step) and
raises `TrainingInterrupted`; rerunning the same command resumes at the next batch. A second Ctrl-C
stops at once (`KeyboardInterrupt`), losing at most the steps since the last checkpoint.
"""

import contextlib
import signal
import threading


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving a checkpoint at `epoch` (0-based, in progress) and `step`."""

    def __init__(self, signum, epoch, step, checkpoint):
        self.signum, self.epoch, self.step, self.checkpoint = signum, epoch, step, checkpoint
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} at epoch {epoch + 1} step {step}: checkpoint {checkpoint} saved; rerun "
                         f"the same command to resume at the next batch.")

    @property
    def exit_code(self):
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signum


class StopRequest:
    """Set by a signal handler; read by the training loop after each step."""

    def __init__(self):
        self.signum = None

    @property
    def requested(self):
        return self.signum is not None


@contextlib.contextmanager
def stop_requests(signals=(signal.SIGTERM, signal.SIGINT)):
    """Yields a `StopRequest` that the given signals set (handlers restored on exit).

    Signal handlers can only be installed from the main thread; elsewhere (a notebook's worker thread)
    the request is never set and the signals keep their usual effect.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum, frame):
        if request.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait for the step
        request.signum = signum

    previous = {s: signal.signal(s, handle) for s in signals}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
