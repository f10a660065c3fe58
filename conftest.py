"""Session-wide test settings (applies to tests/, the doctests and README.md).

* Tests build plans for hundreds of distinct geometries; FFTW_MEASURE would
  spend ~0.5 s planning each one, and every plan is exactly as accurate with
  FFTW_ESTIMATE.  Tests that check the measured planner select it explicitly.
* FFTW wisdom goes to a throw-away cache directory, never the user's.
* Without the ``dask`` extra, ``fftconv/dask`` is not collected for doctests
  (``tests/test_dask.py`` skips itself).
"""
import importlib.util
import os
import tempfile

os.environ.setdefault("FFTCONV_CACHE_DIR", tempfile.mkdtemp(prefix="fftconv-test-cache-"))

import fftconv  # noqa: E402

fftconv.configure(planner_effort="FFTW_ESTIMATE")

collect_ignore = [] if importlib.util.find_spec("dask") else ["fftconv/dask"]
