"""lawclf: a Chinese BERT classifier for legal-consultation questions (法律咨询), from data to HTTP.

Stage modules (import the one you need; heavy dependencies load lazily):
``data`` → ``keywords`` → ``modeling``/``train`` → ``evaluate`` → ``export`` → ``predict`` → ``serve``,
plus ``collect`` (optional data collection) and ``cli`` (one subcommand per stage).
"""

__version__ = "0.1.0"
