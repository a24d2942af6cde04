"""selfdistill: self-distillation and knowledge distillation you can run, measure and understand.

Subpackages:
  - ``selfdistill.kernel``: exact multi-round self-distillation in Hilbert space (Mobahi, Farajtabar,
    Bartlett 2020). NumPy/SciPy only; importing it never imports torch.
  - ``selfdistill.nn``: multi-generation self-distillation chains for PyTorch models.
  - ``selfdistill.ptloss``: PTLoss (Zhang et al. 2024), its proxy teacher and perturbation search.
  - ``selfdistill.experiments``: config -> run -> results folder; the paper reproductions.
"""

__version__ = "0.1.0"
