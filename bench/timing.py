"""How the bench measures: steps timed by ``fftconv.timing``, peak memory, threads, progress.

Timing model.  Every step is timed by :func:`fftconv.timing.samples`, the
library's own timer, one call per sample: one untimed warm-up call (it builds
FFTW plans, torch's kernels, caches: planning never lands in a sample), then
timed calls measured with :func:`time.perf_counter`.  Before every call,
untimed, the weights move by ``fftconv.timing.WEIGHT_STEP`` in place (so no
cache of weight spectra can be reused) and the step's ``reset`` runs.

Sampling rules (:func:`enough`):

* sampling stops after ``repeat`` samples, or once they add up to ``budget``
  seconds, but never before :data:`MIN_SAMPLES` samples (or ``repeat``, if
  fewer): a sample stalled by other work cannot use up the budget alone, and
  however long a step is it has that many chances to run unstalled;
* for steps that build nothing on their first call (``first_call_counts``:
  direct, torch, the scipy loop) a warm-up that alone reaches the budget is
  kept as the first sample, so a step of many seconds runs
  :data:`MIN_SAMPLES` times, not once more; the others follow as usual, so a
  stalled first call is never the only sample.

The figure is the best (minimum) of the samples, the usual estimate of the
cost on a machine shared with other work: with several samples one stalled
sample is never the figure.  A competitor whose slowest sample took
more than :data:`OUTLIER` times its best is flagged (:func:`spread_out`): its
samples disagree, some other work shared the machine, and its figure is worth
a rerun on a quiet machine (the table marks it ``*`` with a footnote).

The samples of one step are taken back to back, never interleaved with
another's: the libraries keep thread pools that spin for a while after each
call (OpenMP in torch, OpenBLAS under numpy, FFTW's threads), and on a machine
with few cores alternating between them makes each step wait for the other
pool's spinning threads (100 ms per step was seen for a 0.3 ms torch step on 2
cores).  Side-by-side figures alternate whole blocks of samples instead
(:func:`alternating`).

Memory.  :func:`peak_memory` runs a callable under :mod:`tracemalloc`, which
sees every numpy allocation (numpy reports its data buffers to it, and
pyFFTW's aligned buffers are numpy arrays), so the peak covers the arrays a
step allocates, plan buffers included when the plan is built inside.

Threads.  :func:`set_threads` gives one count to fftconv's transforms (FFTW
or pocketfft), PyTorch's intra-op pool and, when threadpoolctl is installed,
the BLAS under numpy (without it BLAS keeps ``OPENBLAS_NUM_THREADS``, else all
cores).  On a machine shared with other work a multi-threaded call can wait
many milliseconds for a descheduled thread (steps 100x slower were seen on 2
loaded cores), which :func:`load_warning` says before a run.
"""
from __future__ import annotations

import os
import sys
import tracemalloc
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

import fftconv
from fftconv.timing import WEIGHT_STEP, samples

from .cases import make_data

#: Fewest timed samples of a step (unless ``repeat`` asks for fewer).
MIN_SAMPLES = 3
#: A competitor whose slowest sample took more than this times its best is flagged.
#: Chosen from the default suite's spreads (slowest / best) in one run on a 2-core VM
#: shared with other work: competitors without a stall spread 1.0x to 2.0x (most
#: within 1.3x), stalled ones (direct's 2-thread BLAS calls, auto when it ran direct)
#: 6x to 24x.
OUTLIER = 3.0


def enough(taken: Sequence[float], repeat: int, budget: Optional[float]) -> bool:
    """Whether the samples ``taken`` (seconds) suffice, by the rules of this module's
    docstring: ``repeat`` of them, or at least ``min(MIN_SAMPLES, repeat)`` adding up
    to ``budget``."""
    if len(taken) >= repeat:
        return True
    return (budget is not None and len(taken) >= min(MIN_SAMPLES, repeat)
            and sum(taken) >= budget)


def spread_out(taken: Sequence[float]) -> bool:
    """True if the slowest of ``taken`` took more than :data:`OUTLIER` times the best."""
    return len(taken) > 1 and max(taken) > OUTLIER * min(taken)


def time_step(run: Callable, w: np.ndarray, repeat: int, budget: Optional[float] = None, *,
              reset: Optional[Callable[[], None]] = None, first_call_counts: bool = False,
              warmups: int = 1) -> Tuple[List[float], object]:
    """``(seconds of each sample, outputs of the first call)`` of ``run(w)``.

    ``w`` is moved by ``WEIGHT_STEP`` in place and ``reset()`` runs before every
    call, both untimed; the first ``warmups`` calls are not samples (but see
    ``first_call_counts`` in the module's docstring); sampling stops by
    :func:`enough`.
    """
    kept: list = []

    def prepare():
        w[...] += WEIGHT_STEP
        if reset is not None:
            reset()

    def step():
        out = run(w)
        if not kept:
            kept.append(out)

    def one() -> float:
        return samples(step, repeats=1, warmups=0, prepare=prepare)[0]

    taken: List[float] = []
    for _ in range(warmups):
        took = one()
        if first_call_counts and budget is not None and took >= budget:
            taken = [took]
    while not enough(taken, repeat, budget):
        taken.append(one())
    return taken, kept[0] if kept else None


def alternating(keys: Sequence[str], rounds: int) -> Iterator[Tuple[int, str]]:
    """``(round, key)``: every key once per round, in alternating order from round to
    round (forward, backward, ...), so a slow spell of a shared machine does not fall
    on one key only."""
    keys = list(keys)
    for r in range(rounds):
        for key in keys if r % 2 == 0 else keys[::-1]:
            yield r, key


def side_by_side(steps: Dict[str, Tuple[Callable, np.ndarray]], rounds: int,
                 repeat: int) -> Dict[str, List[float]]:
    """``{key: seconds}``: ``repeat`` samples of each ``run(w)`` of ``steps[key] = (run, w)``
    per round, keys in :func:`alternating` order; each warms up in the first round."""
    taken: Dict[str, List[float]] = {key: [] for key in steps}
    for r, key in alternating(steps, rounds):
        run, w = steps[key]
        taken[key] += time_step(run, w, repeat, warmups=1 if r == 0 else 0)[0]
    return taken


def plan_step(case, dtype: str, algorithm: str):
    """``(run, w, plan)``: ``run(w)`` is one training step of ``case`` (forward +
    backward) on a new plan of ``algorithm``, to time with :func:`time_step`."""
    data = make_data(case, dtype)
    p = fftconv.plan(case.x_shape, case.w_shape, dtype=data.x.dtype, algorithm=algorithm,
                     **case.layer)

    def run(w):
        p.forward(data.x, w, data.b)
        return p.backward(data.dy)

    return run, data.w.copy(), p


def peak_memory(fn: Callable[[], object]) -> int:
    """Peak bytes allocated (and traced) while ``fn()`` runs."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        if not was_tracing:
            tracemalloc.stop()


# -- threads ----------------------------------------------------------------------------------
def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def set_threads(n: int) -> str:
    """Use ``n`` threads everywhere we can; returns a one-line description."""
    fftconv.configure(threads=n)
    done = [f"fftconv {n}"]
    if torch_available():
        import torch
        torch.set_num_threads(n)
        done.append(f"torch {n}")
    try:
        import threadpoolctl
    except ImportError:
        done.append("BLAS its default (no threadpoolctl)")
    else:
        threadpoolctl.threadpool_limits(limits=n, user_api="blas")
        done.append(f"BLAS {n}")
    done.append(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    return ", ".join(done)


def load_warning(threads: int) -> str:
    """A warning line if other work already keeps the cores busy, else ``""``."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - Windows
        return ""
    cores = fftconv.config.available_cores()
    if threads > 1 and load > 0.5 * cores:
        return (f"warning: load average {load:.1f} on {cores} cores before this run; "
                f"multi-threaded steps can stall waiting for descheduled threads, so "
                f"--threads 1 gives steadier figures")
    return ""


# -- progress ---------------------------------------------------------------------------------
class Progress:
    """A progress bar on stderr, ``[#####.....] 5/10 2d ... k15 fft``; a context manager.

    On a terminal it redraws one line and erases it when done; otherwise (a log
    file, CI) it writes one line per finished item and nothing for the rest.
    """

    def __init__(self, total: int, title: str = "", width: int = 20, stream=None):
        self.total, self.title, self.width = max(total, 1), title, width
        self.stream = stream or sys.stderr
        self.done = 0
        self._live = self.stream.isatty()
        self._shown = 0

    def _line(self, label: str) -> str:
        filled = self.width * self.done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        return f"{self.title} [{bar}] {self.done}/{self.total} {label}"

    def _write(self, line: str):
        pad = " " * max(self._shown - len(line), 0)
        self.stream.write("\r" + line + pad)
        self.stream.flush()
        self._shown = len(line)

    def show(self, label: str):
        """Redraw with ``label`` describing the work in progress (terminal only)."""
        if self._live:
            self._write(self._line(label))

    def advance(self, label: str, items: int = 1):
        """``items`` more items done."""
        self.done = min(self.done + items, self.total)
        if self._live:
            self._write(self._line(label))
        else:
            self.stream.write(self._line(label) + "\n")
            self.stream.flush()

    def close(self):
        if self._live and self._shown:
            self._write("")
            self.stream.write("\r")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc):
        self.close()
