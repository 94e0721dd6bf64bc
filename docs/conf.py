"""Sphinx configuration: MyST markdown pages whose code cells run at every build (myst-nb), the
API reference from the docstrings (autodoc + autosummary), the PyData theme that numpy and
scikit-learn use. ``make docs`` builds into docs/_build/html with warnings as errors."""

project = "kanlab"
author = "the kanlab authors"
copyright = "2026, the kanlab authors"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
myst_enable_extensions = ["colon_fence", "dollarmath"]
source_suffix = {".md": "myst-nb", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "results/*.md", "collect_results.py", "RESULTS.md", "kernel.md", "deep_results.md", "**.ipynb_checkpoints"]

# every example runs when the docs build; an error in one fails the build
nb_execution_mode = "force"
nb_execution_in_temp = True  # examples write their files into a temporary folder, never the sources
nb_execution_raise_on_error = True
nb_execution_timeout = 300
nb_merge_streams = True

autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_mock_imports = []
napoleon_google_docstring = False
napoleon_numpy_docstring = False

html_theme = "pydata_sphinx_theme"
html_title = "kanlab"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
