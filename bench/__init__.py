"""Benchmarks of fftconv: one training step, side by side with its rivals.

Run ``python -m bench`` (default suite, about a minute on 2 cores),
``python -m bench --quick`` (CI, seconds) or ``python -m bench --suite perf``
(the performance targets).  ``bench/README.md`` explains what is measured.

Modules, one per kind of work: ``cases`` (layer shapes, suites, data),
``competitors`` (the implementations timed), ``timing`` (warmed-up
best-of-k and tracemalloc), ``runner`` (one case end to end), ``targets``
(the performance targets), ``threads`` (one thread count for every library),
``progress`` (the stderr bar), ``report`` (tables and the PNG) and
``__main__`` (the command line).
"""
import os

# Before pyFFTW or torch load their OpenMP runtimes (each has its own libgomp):
# idle OpenMP threads that spin starve the other runtime's threads, and FFTW
# steps after a torch call took ~80 ms instead of 0.3 ms on 2 busy cores.
# Export OMP_WAIT_POLICY=ACTIVE to measure the spinning behaviour instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
