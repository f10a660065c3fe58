"""Session-wide test settings (applies to tests/, the doctests and README.md).

Tests build plans for hundreds of distinct geometries; FFTW_MEASURE would
spend ~0.5 s planning each one, and every plan is exactly as accurate with
FFTW_ESTIMATE.  Tests that check the measured planner select it explicitly.
"""
import fftconv

fftconv.configure(planner_effort="FFTW_ESTIMATE")
