"""Experiments behind the ``mlbfgs`` command line: models, training loops, the noisy quadratic.

Only ``training`` and ``models`` import torch; ``quadratic`` and ``numpy_mlp`` run on NumPy.
"""
