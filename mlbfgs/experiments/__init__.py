"""Experiments behind the ``mlbfgs`` command line: models, training loops, the noisy quadratic.

Only ``training`` and ``models`` import torch; ``quadratic``, ``numpy_mlp`` and
``ablation`` run on NumPy.
"""
