"""Sphinx configuration of the selfdistill documentation site (built by ``bash scripts/docs.sh``).

The build must pass with warnings as errors (``sphinx-build -W --keep-going``), offline (no intersphinx
inventories are fetched) and on the CPU: the gallery in ``examples/`` is executed at build time.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# Document (and run the examples against) the code of THIS checkout, installed or not.
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("MPLBACKEND", "Agg")
# The gallery runs in this process. Its matrices are small (K <= 3,000), where one BLAS / OpenMP thread is
# about as fast as two; and when the cores are shared (CI runners, a busy laptop), multithreaded OpenBLAS
# can be many times slower (measured on the development machine with another process busy: one 2000 x 2000
# scipy.linalg.eigh took 18.6 s with 2 threads, 1.5 s with 1). One thread keeps the build time predictable;
# set these variables before the build to override. They must be set before NumPy is first imported.
for _threads_variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_threads_variable, "1")

import selfdistill  # noqa: E402  (needs the path above)

project = "selfdistill"
author = "the selfdistill authors"
copyright = "the selfdistill authors"
release = selfdistill.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
# No typographic quotes or dashes: docstrings are also --help texts and code-like prose ("--target" must not
# become an en dash, default="rbf" must keep its straight quotes).
smartquotes = False
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "auto_examples/*.ipynb", "auto_examples/*.py"]
templates_path = ["_templates"]

# ---- Markdown (MyST): $...$ and $$...$$ math, \begin{equation} blocks, heading anchors --------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

# ---- API reference: autosummary pages from numpydoc docstrings --------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {
    "members": True,
    # scikit-learn adds metadata-routing setters to every estimator; they are sklearn's API, not ours
    "exclude-members": "set_fit_request,set_predict_request,set_score_request",
}
autodoc_inherit_docstrings = False  # nn.Module.forward's generic docstring is not ours either
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = False  # True garbles dataclass signatures with field(default_factory=...)
numpydoc_show_class_members = False  # the class template lists the members itself
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# ---- the example gallery: examples/*.py run at build time on the CPU --------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",  # every plot_*.py runs; a failing example fails the build
    "ignore_pattern": r"__init__\.py",
    "download_all_examples": False,
    "remove_config_comments": True,
    "min_reported_time": 0,
    "show_memory": False,
    "within_subsection_order": "FileNameSortKey",
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "plot_gallery": "True",
    "reset_modules": ("matplotlib",),
    "capture_repr": ("__repr__",),
    "write_computation_times": True,
    # "Examples using X" on each API page
    "backreferences_dir": "generated/backreferences",
    "doc_module": ("selfdistill",),
}

# ---- HTML ------------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"selfdistill {release}"
html_static_path: list[str] = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 6,
    "secondary_sidebar_items": ["page-toc", "sourcelink"],
}
# pages without sub-pages: no (empty) section navigation on the left
html_sidebars = {page: [] for page in ("index", "getting-started", "concepts", "results")}
html_show_sourcelink = True
html_last_updated_fmt = None

# Unresolved cross-references are warnings (and so errors under -W).
nitpicky = True
# Every ignore below, with its reason (the build is offline, so no intersphinx inventories):
nitpick_ignore_regex: list[tuple[str, str]] = [
    # third-party and standard-library types in signatures and docstrings: their documentation lives on
    # their own sites, which an offline build cannot link to (no intersphinx)
    (
        r"py:.*",
        r"(numpy|np|torch|sklearn|scipy|matplotlib|pathlib|os|argparse|collections\.abc|typing)(\..*)?",
    ),
    # pathlib.Path and selfdistill.io.RunFolder in annotations that autodoc shows by their bare names
    (r"py:class", r"Path"),
    (r"py:class", r"RunFolder"),
    # internal helpers that appear in signatures but are not part of the public API
    (r"py:class", r"selfdistill\.nn\.distributed\.DistContext"),
    # proxy_teacher's docstring names this helper relative to its own module (selfdistill.ptloss.proxy);
    # the API lists proxy_teacher under selfdistill.ptloss, where the helper is not exported
    (r"py:func", r"default_tolerance"),
]
nitpick_ignore: list[tuple[str, str]] = []


def _readable_dataclass_signature(app, what, name, obj, options, signature, return_annotation):
    """Dataclass signatures as Sphinx can parse them. A field with ``default_factory`` shows as
    ``<factory>``, which is not Python (Sphinx then splits the annotations at every comma): show ``...``.
    Annotations left as strings (``'dict[str, Any]'``, when autodoc could not evaluate them) lose their
    quotes so that they render like every other annotation."""
    if not signature or what != "class" or ("<factory>" not in signature and ": '" not in signature):
        return None  # nothing to fix: let autodoc (and numpydoc) proceed as usual
    signature = signature.replace("<factory>", "...")
    return re.sub(r":\s*'([^']*)'", r": \1", signature), return_annotation


def setup(app):
    # before numpydoc's handler (priority 500), which would take a docstring-less dataclass's generated
    # __doc__ line, with the same <factory>, as its signature
    app.connect("autodoc-process-signature", _readable_dataclass_signature, priority=400)
