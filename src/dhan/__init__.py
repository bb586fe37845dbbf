"""dhan: click-through-rate prediction with hierarchical user-interest attention (DHAN, SIGIR 2020).

The package is layered one way: ``schema``/``errors`` → ``batch`` → ``layers`` → ``models`` →
``train``/``checkpoint``/``export``/``serve`` → ``cli``. ``dhan.data`` (raw logs to prepared datasets and batches)
depends only on ``schema`` and ``batch``. Importing :mod:`dhan` has no side effects and does not import torch.
"""

__version__ = "0.1.0"
