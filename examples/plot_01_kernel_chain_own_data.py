"""
The exact kernel chain on your own regression data
===================================================

:class:`~selfdistill.kernel.KernelSelfDistillation` is a scikit-learn regressor: give it inputs ``X`` and
labels ``y`` and it fits a whole chain of self-distillation rounds (Mobahi, Farajtabar & Bartlett 2020).
Round 0 is kernel ridge regression constrained to a training error ``eps``; every later round refits the
previous round's training predictions under the same constraint. One eigendecomposition of the kernel
matrix serves all rounds, so the whole chain costs about as much as one ridge fit.

Here the data are scikit-learn's diabetes set (442 patients, 10 features, a disease-progression score).
We fit a chain, look at every round's test error with
:meth:`~selfdistill.kernel.KernelSelfDistillation.staged_predict`, and choose the round on held-out
validation data, never on the test set.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from selfdistill.kernel import KernelSelfDistillation

# %%
# Data: a training set, a validation set to choose the round, a test set to report
# ---------------------------------------------------------------------------------
# Kernel ridge has no intercept and every round shrinks the fit further towards zero, so center the
# labels (and standardize the features, since the RBF kernel compares distances).
X, y = load_diabetes(return_X_y=True)
X_pool, X_test, y_pool, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
X_train, X_val, y_train, y_val = train_test_split(X_pool, y_pool, test_size=0.25, random_state=0)
scaler = StandardScaler().fit(X_train)
X_train, X_val, X_test = (scaler.transform(a) for a in (X_train, X_val, X_test))
offset = y_train.mean()
print(f"train {len(y_train)}, validation {len(y_val)}, test {len(y_test)} patients")

# %%
# Fit the chain
# -------------
# ``epsilon`` is the allowed mean squared training residual of every round, here 5 % of the label
# variance (``epsilon_mode="relative"``). With ``n_rounds=None`` the chain runs until it collapses:
# each round's labels have less energy than the last, and once ``||y_t||^2 / K <= eps`` the best
# function under the constraint is ``f = 0``.
est = KernelSelfDistillation("rbf", gamma=0.1, epsilon=0.05, epsilon_mode="relative", n_rounds=None)
est.fit(X_train, y_train - offset)
print(est.result_)

# %%
# The printed table has one row per round: ``c_t``, the regularization multiplier that makes the
# training residual exactly ``eps`` (eq. 20 of the paper; scikit-learn's ``KernelRidge`` would call it
# ``alpha = K c_t``), the energy of the round's labels, the error against the ORIGINAL labels, and
# ``tr B_t``, the number of effective basis functions left, which shrinks every round.
#
# Every round's predictions
# -------------------------
# ``staged_predict`` yields one prediction array per round, round 0 first.


def mse_per_round(X_eval, y_eval):
    return np.array([np.mean((pred + offset - y_eval) ** 2) for pred in est.staged_predict(X_eval)])


val_mse = mse_per_round(X_val, y_val)
test_mse = mse_per_round(X_test, y_test)
best = int(np.argmin(val_mse))  # chosen on validation data
print(f"validation MSE per round: {np.round(val_mse).astype(int)}")
print(f"round chosen on validation: {best}; its test MSE {test_mse[best]:.0f} (round 0: {test_mse[0]:.0f})")

# %%
# For reference: plain kernel ridge regression with the same kernel, its ``alpha`` tuned on the same
# validation set. Self-distillation is another path through the same family of regularized fits; on this
# data its best round lands close to the best ridge.
alphas = np.logspace(-2, 2, 41)
ridge_val = [
    np.mean((KernelRidge(alpha=a, kernel="rbf", gamma=0.1).fit(X_train, y_train - offset).predict(X_val)
             + offset - y_val) ** 2)
    for a in alphas
]
alpha_best = alphas[int(np.argmin(ridge_val))]
ridge = KernelRidge(alpha=alpha_best, kernel="rbf", gamma=0.1).fit(X_train, y_train - offset)
ridge_test = np.mean((ridge.predict(X_test) + offset - y_test) ** 2)
print(f"kernel ridge, alpha = {alpha_best:.3g} chosen on validation: test MSE {ridge_test:.0f}")

# %%
# Plot: error per round
# ---------------------
# Round 0 overfits (it may leave only 5 % of the label variance as training error); the next rounds
# regularize more and more, the test error falls, then rises once the chain underfits.
rounds = np.arange(est.n_rounds_)
fig, (ax_mse, ax_c) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
ax_mse.plot(rounds, val_mse, "o-", label="validation")
ax_mse.plot(rounds, test_mse, "s-", label="test")
ax_mse.axhline(ridge_test, color="gray", ls="--", label="tuned kernel ridge (test)")
ax_mse.axvline(best, color="k", ls=":", label="round chosen on validation")
ax_mse.set(xlabel="round t", ylabel="mean squared error", title="error per round")
ax_mse.legend(fontsize="small")
est.result_.plot_c(ax=ax_c)  # c_t grows every round: each round regularizes more
plt.show()

# %%
# Predict with a chosen round
# ---------------------------
# ``predict`` uses the last round by default; ``round=`` picks any other.
pred_best = est.predict(X_test, round=best) + offset
print(f"test MSE of round {best}: {np.mean((pred_best - y_test) ** 2):.0f}")
