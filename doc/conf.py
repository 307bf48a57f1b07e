"""Sphinx configuration of the skvq documentation.

Build (from the repository root)::

    sphinx-build -W -b html doc doc/_build/html

or ``make -C doc html``. No network access is needed: intersphinx is not used.
"""

import os
import re
from pathlib import Path

import skvq

DOC_DIR = Path(__file__).resolve().parent

# -- Project ----------------------------------------------------------------------------
project = "skvq"
author = "skvq developers"
copyright = "skvq developers"
release = skvq.__version__
version = ".".join(release.split(".")[:2])

# -- Extensions -------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

try:  # Markdown benchmark reports are rendered by MyST when it is installed.
    import myst_parser  # noqa: F401
except ImportError:
    HAVE_MYST = False
else:
    HAVE_MYST = True
    extensions.append("myst_parser")
    source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
    myst_enable_extensions = ["dollarmath"]
    myst_heading_anchors = 3
    # The reports are written by the benchmark scripts; a skipped heading level in one of
    # them is cosmetic and must not fail the build (broken links still do).
    suppress_warnings = ["myst.header"]

templates_path = ["_templates"]
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store"]
root_doc = "index"
default_role = "literal"

# -- autodoc / autosummary / numpydoc ---------------------------------------------------
autosummary_generate = True
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True


def _skip_member(app, what, name, obj, skip, options):
    # scikit-learn generates ``set_<method>_request`` for metadata routing; their docstrings
    # point at labels of scikit-learn's own user guide. The contract page documents them.
    if re.fullmatch(r"set_\w+_request", name):
        return True
    return None


# -- sphinx-gallery ---------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "doc_module": ("skvq",),
    "backreferences_dir": "gen_modules/backreferences",
    "reference_url": {"skvq": None},
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
}

# Examples run headless.
os.environ.setdefault("MPLBACKEND", "Agg")

# -- HTML -------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"skvq {release}"
html_static_path = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_prev_next": False,
    "header_links_before_dropdown": 7,
}
html_sidebars = {"install": [], "contract": [], "benchmarks": []}


# -- Benchmark reports ------------------------------------------------------------------
def _markdown_title(path):
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"#\s+(.+?)\s*#*\s*$", line)
        if match:
            return match.group(1).replace("`", "")
    return path.stem.replace("_", " ").replace("-", " ").capitalize()


def write_benchmark_index(doc_dir=DOC_DIR, have_myst=HAVE_MYST):
    """Write ``_generated/benchmark_reports.rst``, included by ``benchmarks.rst``.

    It lists whatever ``benchmarks/*.md`` reports exist when the build starts: as pages of
    their own when MyST is installed, as literal Markdown otherwise, and a note when there
    are none yet.
    """
    reports = sorted((doc_dir / "benchmarks").glob("*.md"))
    lines = []
    if not reports:
        lines += [
            ".. note::",
            "",
            "   No benchmark report has been written yet: run the scripts in "
            "``benchmarks/`` (see above) to produce ``doc/benchmarks/*.md``.",
            "",
        ]
    elif have_myst:
        lines += [".. toctree::", "   :maxdepth: 1", ""]
        for path in reports:
            title = _markdown_title(path).replace("<", r"\<")
            lines.append(f"   {title} <benchmarks/{path.stem}>")
        lines.append("")
    else:
        for path in reports:
            title = _markdown_title(path)
            lines += [title, "-" * max(len(title), 3), "",
                      f".. literalinclude:: /benchmarks/{path.name}",
                      "   :language: markdown", ""]
    out = doc_dir / "_generated" / "benchmark_reports.rst"
    out.parent.mkdir(exist_ok=True)
    text = "\n".join(lines)
    if not out.exists() or out.read_text(encoding="utf-8") != text:
        out.write_text(text, encoding="utf-8")


write_benchmark_index()


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)
