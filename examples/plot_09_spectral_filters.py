"""
Spectral filters side by side
=============================

Kernel ridge regression, self-distillation, L2-boosting, gradient descent stopped early and spectral
cut-off all predict on the training points by applying a function ``h`` to the eigenvalues ``d`` of the
kernel matrix ``G = Kxx / K = V diag(d) V^T``:

.. math:: f(X) = V \\operatorname{diag}\\bigl(h(d)\\bigr) V^\\top y .

They differ only in the **filter** ``h`` and in what their "step" is (the ridge's alpha, the round, the
number of boosting fits or gradient steps, the number of eigen-directions kept). One eigendecomposition
(:class:`~selfdistill.kernel.Spectrum`) serves them all, so comparing them costs one ``eigh``. Each path
function returns a :class:`~selfdistill.kernel.FilterPath` with the filter per eigenvalue and step, the
effective degrees of freedom ``tr h`` per step, and predictions.
"""

import matplotlib.pyplot as plt
import numpy as np

from selfdistill.kernel import (
    Spectrum,
    boosting_path,
    cutoff_path,
    gradient_descent_path,
    kernel_matrix,
    ridge_path,
    self_distillation_path,
)

rng = np.random.default_rng(0)
x_train = np.sort(rng.uniform(0, 1, 120))
x_test = np.linspace(0, 1, 500)


def truth(x):
    return np.sin(2 * np.pi * x) + 0.5 * np.sin(6 * np.pi * x)


y_train = truth(x_train) + 0.5 * rng.standard_normal(x_train.size)
# the Laplacian kernel exp(-gamma |x - x'|): its matrix has full rank, so every eps > 0 is feasible
kernel, gamma = "laplacian", 5.0
gram = kernel_matrix(x_train[:, None], kernel=kernel, gamma=gamma)
k_test = kernel_matrix(x_test[:, None], x_train[:, None], kernel=kernel, gamma=gamma)

# %%
# One spectrum, five paths
# ------------------------
spectrum = Spectrum.from_gram(gram)
K = spectrum.n_samples
d_max = float(spectrum.eigenvalues[-1])
steps = np.unique(np.geomspace(1, 1e6, 60).round())
paths = {
    "ridge": ridge_path(spectrum, y_train, alphas=K * d_max * np.geomspace(10, 1e-9, 60)),
    "self-distillation": self_distillation_path(spectrum, y_train, epsilon=0.01),
    "boosting": boosting_path(spectrum, y_train, alpha=K * d_max, steps=steps),
    "gradient descent": gradient_descent_path(spectrum, y_train, steps=steps),
    "cut-off": cutoff_path(spectrum, y_train, n_components=np.arange(1, 41)),
}
for name in ("self-distillation", "boosting"):
    path = paths[name]
    print(f"{name}: {path.n_steps} steps")
    for row in path.table()[:8]:
        print(f"  {path.param_name} {row[path.param_name]:>6g}   tr h {row['dof']:7.2f}   "
              f"train MSE {row['train_mse']:.4f}   GCV {row['gcv']:.4f}")

# %%
# Each path has a table (``table()``, ``to_csv``): the step's parameter, ``tr h``, the training error and
# the GCV score (the criterion ``KernelSelfDistillation(n_rounds="auto")`` and the filter estimators use
# to choose a step). Self-distillation's ``tr h`` falls round after round: each round keeps fewer basis
# functions. Boosting and gradient descent go the other way, adding basis functions step by step.
#
# Test error against effective degrees of freedom
# -----------------------------------------------
# Plotting every path against ``tr h`` puts the methods on a common axis. For each method we also mark its
# best step on the test set (for illustration only; choose with ``selection`` or validation data).
test_mse = {name: np.mean((p.test_predictions(k_test) - truth(x_test)) ** 2, axis=1)
            for name, p in paths.items()}
best = {name: int(np.argmin(mse)) for name, mse in test_mse.items()}
for name, path in paths.items():
    s = best[name]
    print(f"{name:>18}: best {path.param_name} = {path.params[s]:.4g}, tr h = {path.dof[s]:.2f}, "
          f"test MSE {test_mse[name][s]:.4f}")

fig, ax_mse = plt.subplots(figsize=(7, 4.2), layout="constrained")
for name, path in paths.items():
    style = "o-" if name == "self-distillation" else ".-"
    line, = ax_mse.plot(path.dof, test_mse[name], style, ms=4, label=name)
    ax_mse.plot(path.dof[best[name]], test_mse[name][best[name]], "*", ms=14, color=line.get_color())
ax_mse.set(xscale="log", yscale="log", xlabel="tr h (effective degrees of freedom)",
           ylabel="test MSE against the truth", title="every step of every method")
ax_mse.legend(fontsize="small")
plt.show()

# %%
# The filters at each method's best step
# --------------------------------------
# Ridge's filter ``d / (d + c)`` falls off slowly: it keeps a little of every small eigen-direction, where
# the noise lives. The cut-off keeps a sharp block. Boosting and gradient descent are steeper smooth steps
# that reach 1 on the large eigenvalues. Self-distillation multiplies one ridge filter per round,
# ``prod_t d / (d + c_t)`` (eq. 45): steeper than ridge too, but, as a product of factors below 1, it also
# shrinks the large eigen-directions a little. Its ratios between large and small eigenvalues grow with
# every round, which no single ridge fit can do.
d = spectrum.eigenvalues
keep = d > 1e-12 * d_max
fig, ax_h = plt.subplots(figsize=(7, 4.2), layout="constrained")
for name, path in paths.items():
    label = f"{name} (tr h {path.dof[best[name]]:.1f})"
    ax_h.semilogx(d[keep], path.filters[best[name]][keep], ".-", ms=3, label=label)
ax_h.set(xlabel="eigenvalue d of G = Kxx / K", ylabel="filter h(d)", title="filter at each best step")
ax_h.legend(fontsize="small")
plt.show()

# %%
# A FilterPath plots itself, too: the self-distillation filter of every round, and its ``tr h``.
sd = paths["self-distillation"]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained")
sd.plot_filters(ax=ax1)
sd.plot_dof(ax=ax2)
plt.show()

# %%
# The same filters are scikit-learn estimators, each choosing its own step by GCV (or holdout, k-fold):
# :class:`~selfdistill.kernel.SpectralRidge`, :class:`~selfdistill.kernel.KernelBoosting`,
# :class:`~selfdistill.kernel.KernelGradientDescent`, :class:`~selfdistill.kernel.KernelGradientFlow`,
# :class:`~selfdistill.kernel.SpectralCutoff`, and
# ``KernelSelfDistillation(n_rounds="auto")`` for the rounds.
from selfdistill.kernel import KernelGradientDescent, KernelSelfDistillation, SpectralRidge  # noqa: E402

X_train, X_test = x_train[:, None], x_test[:, None]
for est in (
    SpectralRidge("auto", kernel=kernel, gamma=gamma),
    KernelGradientDescent("auto", kernel=kernel, gamma=gamma, max_steps=10**6),
    KernelSelfDistillation(kernel, gamma=gamma, epsilon=0.01, n_rounds="auto"),
):
    est.fit(X_train, y_train)
    mse = np.mean((est.predict(X_test) - truth(x_test)) ** 2)
    print(f"{type(est).__name__:>24}: step chosen by GCV, test MSE {mse:.4f}")
