"""Text shared by the public docstrings of ``fftconv``, ``fftconv.dask`` and
``fftconv.torch``: one table of output sizes, one description of the layer keywords
(:data:`LAYER`, :data:`PARAMETERS` with ``algorithm``) and one of the keywords that bound or time a call
(:data:`EXECUTION`)."""

#: The output-size table of the public docstrings (a constant, not sliced out of a
#: docstring: ``python -OO`` strips docstrings).
SIZES = """\
=========  ==========================  =======================================
padding    per-axis ``(lo, hi)``       output length (``ke = d*(k-1)+1``)
=========  ==========================  =======================================
"valid"    ``(0, 0)``                  ``(n - ke) // s + 1``
"same"     see CONVENTIONS §2          ``ceil(n / s)``
"full"     ``(ke-1, ke-1)``            ``(n + ke - 2) // s + 1``
"causal"   ``(ke-1, 0)``               ``(n - 1) // s + 1 = ceil(n / s)``
int ``p``  ``(p, p)``                  ``(n + 2p - ke) // s + 1``
pairs      ``(lo, hi)``                ``(n + lo + hi - ke) // s + 1``
=========  ==========================  =======================================
"""

LAYER = """
    padding : {"valid", "same", "full", "causal"}, int, sequence of int or of (lo, hi) pairs
        Padding per spatial axis (default ``"valid"``, no padding; ``0`` means the
        same); in 1-D a bare ``(lo, hi)`` pair is that axis's pair.  ``"same"`` gives ``ceil(n / stride)``
        outputs; for even kernels the extra pad goes after the input for
        correlation (like PyTorch/TF) and before it with ``flip_kernel=True``
        (like ``scipy.signal.convolve(mode="same")``).  ``"causal"`` (Keras's
        meaning) pads ``(d*(k-1), 0)``: ``ceil(n / stride)`` outputs, output ``i``
        reading inputs ``<= i * stride`` only (with ``padding_mode`` "zeros" or
        "replicate"); transposed, it crops ``max(d*(k-1) + 1 - stride, 0)`` at the
        end only: ``n * stride`` outputs, output ``t`` reading inputs ``i`` with
        ``i * stride <= t``.
    stride, dilation : int or sequence of int, optional
        Per spatial axis, each >= 1 (default 1).
    groups : int, optional
        Split channels into ``groups`` independent convolutions; must divide
        ``C_in`` and ``C_out`` (``groups == C_in`` is depthwise).
    flip_kernel : bool, optional
        False (default): cross-correlation, as ``torch.nn.functional.conv*d``.
        True: true convolution, as ``scipy.signal.convolve``.
    transposed : bool, optional
        False (default): a convolution.  True: a transposed convolution, exactly ``torch.nn.functional.conv_transpose*d``:
        ``w`` is ``(C_in, C_out // groups, *kernel)``, the output length is
        ``(n-1)*s - lo - hi + d*(k-1) + 1 + output_padding`` (``"same"``:
        ``n * s``, the adjoint of a "same" convolution over that length;
        ``"causal"``: ``n * s``, cropping ``d*(k-1) + 1 - s`` at the end so that
        output ``t`` reads inputs ``i`` with ``i*s <= t``;
        ``"valid"``: no padding).  It is the input gradient of the matching
        forward convolution, computed by the same engine, except with
        ``"causal"`` (that adjoint would read later inputs).
    output_padding : int or sequence of int, optional
        Transposed only: extra output samples at the end of each axis, each
        smaller than the stride or the dilation (PyTorch's rule); default 0.
    padding_mode : {"zeros", "circular", "reflect", "replicate"}, optional
        What fills the padding (default ``"zeros"``), with PyTorch's names and meaning; the amounts
        are those of ``padding``.  The gradients fold the halo back onto the
        input.  Circular padding with stride 1 and an output as long as the
        input runs as one FFT at the input size, with no padding copy.
    layout : {"channels_first", "channels_last"}, optional
        ``"channels_first"`` (default): the shapes above.  ``"channels_last"``: ``x`` is ``(N, *spatial, C_in)``, ``w`` is
        ``(*kernel, C_in // groups, C_out)`` (TensorFlow's HWIO; transposed:
        ``(*kernel, C_out // groups, C_in)``) and ``y`` is ``(N, *out, C_out)``."""

#: ``algorithm``, as the core's functions take it.
ALGORITHM = """
    algorithm : {"auto", "fft", "direct", "overlap_add", "winograd", "fft_tiles"}, optional
        ``"auto"`` (default) picks the fastest of the others for this layer by
        a calibrated cost model (or by timing, see ``measure``); ``"fft"``
        computes in the frequency domain; ``"direct"`` runs the vectorised
        spatial-domain implementation; ``"overlap_add"`` tiles the output and
        runs a small FFT per tile; ``"winograd"`` runs Winograd's minimal
        filtering (3- and 5-tap kernels at stride 1 only); ``"fft_tiles"``
        cuts the output into small tiles (8- to 32-point FFT windows) and runs
        all of them as one batch.  All give the same results."""

#: The parameter text of every layer keyword and ``algorithm``.
PARAMETERS = LAYER + ALGORITHM


#: The keywords that bound a call's memory or time its algorithms (they never
#: change the result beyond rounding).
EXECUTION = """
    max_workspace_bytes : int, optional
        Bound on the working buffers of every algorithm, with the same results:
        the FFT path and direct process the batch in chunks (grouped layers a
        share of their groups at a time when one sample does not fit),
        overlap-add takes a tile and a number of tiles per pass that fit,
        ``"auto"`` the cheapest algorithm that fits.  What a forward pass keeps
        for its backward pass (a copy of ``x`` when it keeps no spectrum) comes
        on top: ``Plan.workspace_bytes`` counts both.  Defaults to the
        ``max_workspace_bytes`` setting (no bound).
    measure : bool, optional
        With ``algorithm="auto"``: time the candidates once for this geometry
        (and remember the winner across processes) instead of trusting the
        cost model.  Defaults to the ``measure`` setting (False)."""
