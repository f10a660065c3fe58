"""Benchmarks of fftconv: one training step, side by side with its rivals.

One command line, ``python -m bench [SUBCOMMAND]`` (``bench/README.md``):
``run`` (the default: ``python -m bench``, ``--quick``, ``--suite NAME``,
``--case SPEC``), ``profile SPEC``, ``calibrate``, ``compare
{precision,torch}`` and ``experiment {threads,budget,pools,dask}``.

Modules, one per kind of work: ``cases`` (layer shapes, ``--case``, data),
``suites`` (the suites and their targets), ``competitors`` (the
implementations timed), ``timing`` (the step timer on ``fftconv.timing``,
peak memory, threads, progress), ``runner`` (one case end to end; the cost
model's decisions), ``report`` (tables and the plot), ``profile``,
``calibrate``, ``compare`` and ``experiment`` (one subcommand each) and
``__main__`` (the command line).
"""
import os

# Before pyFFTW or torch load their OpenMP runtimes (each has its own libgomp):
# idle OpenMP threads that spin starve the other runtime's threads, and FFTW
# steps after a torch call took ~80 ms instead of 0.3 ms on 2 busy cores.
# Export OMP_WAIT_POLICY=ACTIVE to measure the spinning behaviour instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
