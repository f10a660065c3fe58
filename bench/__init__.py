"""Benchmarks of fftconv: one training step, side by side with its rivals.

Run ``python -m bench`` (default suite, about a minute on 2 cores),
``python -m bench --quick`` (CI, seconds), ``python -m bench --suite perf``
(the performance targets), ``--suite algorithms`` (fftconv's algorithms and
``auto`` against their targets) or ``--suite decisions`` (the cost model's
picks against measurements).  ``bench/README.md`` explains what is measured.

Modules, one per kind of work: ``cases`` (layer shapes, suites, data),
``competitors`` (the implementations timed), ``timing`` (warmed-up
best-of-k and tracemalloc), ``runner`` (one case end to end), ``targets``
(the performance targets), ``decisions`` (the cost model's picks and their
CSV), ``threads`` (one thread count for every library), ``progress`` (the
stderr bar), ``report`` (tables and the PNG), ``__main__`` (the command
line) and ``calibrate`` (refits ``fftconv.costs.RATES``).
"""
import os

# Before pyFFTW or torch load their OpenMP runtimes (each has its own libgomp):
# idle OpenMP threads that spin starve the other runtime's threads, and FFTW
# steps after a torch call took ~80 ms instead of 0.3 ms on 2 busy cores.
# Export OMP_WAIT_POLICY=ACTIVE to measure the spinning behaviour instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
