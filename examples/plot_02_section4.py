"""
The paper's Section 4: Figures 2 and 3
======================================

Section 4 of Mobahi, Farajtabar & Bartlett (2020) runs self-distillation on eleven noisy samples of
``sin(2 pi x)`` with the regularizer ``R(f) = int_0^1 f''(x)^2 dx``, whose Green's function (eq. 59) is a
cubic spline kernel. :mod:`selfdistill.experiments.kernel_figures` reproduces it exactly: the same points,
the same published labels, the exact chain until collapse. This is also what
``selfdistill reproduce --what kernel`` runs.
"""

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from selfdistill.experiments import kernel_figures
from selfdistill.kernel import kernel_matrix

# %%
# One call writes everything
# --------------------------
# :func:`~selfdistill.experiments.kernel_figures.reproduce_section4` runs two variants: the paper's 11
# points, and the 9 interior points (the spline kernel vanishes at x = 0 and x = 1, so with those two
# points the kernel matrix is singular; without them it is positive definite). Each gets its figures
# (PNG), numbers (CSV) and the theory report (JSON).
out = Path(tempfile.mkdtemp(prefix="section4_"))
summary = kernel_figures.reproduce_section4(out, epsilon=0.05, interior_epsilon=0.01)
print(sorted(p.name for p in (out / "paper").iterdir()))

# %%
# Figure 2 as written to ``paper/figure2.png``: the Green's function, and the fit of every round against
# the true function. Round 1 is better than round 0; after that the chain underfits until it collapses.
image = plt.imread(out / "paper" / "figure2.png")
fig, ax = plt.subplots(figsize=(12, 12 * image.shape[0] / image.shape[1]), layout="constrained")
ax.imshow(image)
ax.set_axis_off()
plt.show()

# %%
# The same numbers in Python
# --------------------------
# :func:`~selfdistill.experiments.kernel_figures.run_variant` returns the chain, the fit on a 1001-point
# grid, the test error per round and the theory report, without writing anything.
x, y = kernel_figures.PAPER_X, kernel_figures.PAPER_LABELS
low, high = kernel_figures.feasible_epsilon_range(x, y)
print(f"eps must lie in ({low:.4f}, {high:.4f}): below, the labels at x = 0 and x = 1 cannot be fitted")
run = kernel_figures.run_variant("paper", "paper's 11 points", x, y, epsilon=0.05)
print(run.chain)
for t, mse in enumerate(run.test_mse):
    print(f"round {t}: test MSE against sin(2 pi x) = {mse:.3f}")

# %%
# Figure 3: the diagonal of ``B_t``
# ---------------------------------
# In the eigenbasis of the kernel matrix each round multiplies the labels by
# ``A_t = diag(d_k / (c_t + d_k))``; ``B_t`` is the product of those factors up to round t (eq. 45). Small
# eigenvalues are shrunk faster every round: self-distillation keeps fewer and fewer basis functions.
# :class:`~selfdistill.kernel.ChainResult` draws it, and the fits, on axes you provide.
fig, (ax_fit, ax_b) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
x_plot = np.linspace(0.0, 1.0, 401)
k_plot = kernel_matrix(x_plot[:, None], x[:, None], kernel="spline")  # raw [g(x_plot, x_train)]
run.chain.plot_fits(x, x_plot, k_plot, truth=kernel_figures.target(x_plot), ax=ax_fit)
run.chain.plot_b_diag(ax=ax_b)
plt.show()

# %%
# The interior variant
# --------------------
# With the nine interior points the kernel matrix is positive definite (condition number about 4,500)
# and a smaller ``eps`` is feasible: the chain runs longer and is best at round 3.
interior = summary["interior"]
print(f"interior, eps = {interior['epsilon']}: {interior['rounds_until_collapse']} rounds, "
      f"best round {interior['best_round']}")
print("test MSE per round:", np.round(interior["test_mse"], 3))
