"""Test harnesses and local stand-ins: none of the runtime (server, predictor, trainer) imports them.

* :mod:`lawclf.testing.server`: start Gunicorn or the dev server in the background on a free
  port (tests, benchmarks, notebook 06 in Colab) and a small load generator;
* :mod:`lawclf.testing.fake_v2ex`: a local fake V2EX API with injectable faults and a fake
  clock (the collect tests and notebook 00's offline demo).
"""
