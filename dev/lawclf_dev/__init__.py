"""The workshop beside the runtime package: harnesses, stand-ins and benchmark helpers.

Nothing in :mod:`lawclf` imports it, and the serving and screening images do not contain it
(``deploy/*Dockerfile`` copies ``lib/`` only; ``tests/unit/test_layout.py`` checks both).

* :mod:`lawclf_dev.server`: start Gunicorn or the dev server in the background on a free
  port (tests, benchmarks, notebook 06 in Colab) and a small load generator;
* :mod:`lawclf_dev.fake_v2ex` and :mod:`lawclf_dev.fake_webhook`: a local fake V2EX API with
  injectable faults and a fake clock, and a fake chat-robot receiver (the collect and screening
  tests, notebooks 00 and 07's offline demos);
* :mod:`lawclf_dev.bench`: random-weight models of a given shape and fp32 / int8 latency;
* :mod:`lawclf_dev.nbrun`: run the notebook series of a checkout with papermill (``make run``).
"""

from pathlib import Path


def _find_checkout() -> Path:
    """The repository this package came from: ``dev/lawclf_dev`` → its root when imported from the
    source tree (``pip install -e .``, the notebooks' install cell); after a plain ``pip install .``
    the current folder or one above it that holds the project."""
    def is_checkout(p: Path) -> bool:
        return (p / "pyproject.toml").is_file() and (p / "lib" / "lawclf").is_dir()

    here = Path(__file__).resolve().parents[2]
    cwd = Path.cwd().resolve()
    return next((p for p in (here, cwd, *cwd.parents) if is_checkout(p)), here)


#: The checkout the workshop works on (its notebooks, ``tests/fixtures``, ``deploy/gunicorn.conf.py``),
#: unlike the runtime package, which needs none.
CHECKOUT = _find_checkout()
