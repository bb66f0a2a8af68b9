"""lawclf: a Chinese BERT classifier for legal-consultation questions (法律咨询), from data to HTTP.

Stage modules (import the one you need; heavy dependencies load lazily):
``data`` → ``keywords`` → ``modeling``/``train`` → ``evaluate`` → ``export`` → ``predict`` → ``serve``,
plus ``collect`` (optional data collection) and ``cli`` (one subcommand per stage).
"""

__version__ = "0.1.0"

import warnings as _warnings

# In a notebook kernel without ipywidgets, tqdm.auto (which transformers and huggingface_hub use for their
# loading bars) warns "IProgress not found" and then draws text bars, which work in Colab, papermill and
# terminals alike. The warning says nothing a reader can act on, so it is not shown.
_warnings.filterwarnings("ignore", message="IProgress not found")
