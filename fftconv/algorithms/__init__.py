"""The algorithm plugins, one module each: ``fft`` (the frequency-domain path),
``direct`` (the spatial-domain sum) and ``overlap_add`` (the output tiled into
small FFTs).  Each owns its engine, its cost terms and its partition search;
``fftconv.registry`` lists them."""
