"""The project's tests, one package.

A regular package (not a namespace folder), so `import tests...` finds this folder: a
namespace folder loses to any regular `tests` package on sys.path, and smdebug_rulesconfig
installs one into site-packages. pytest (rootdir on sys.path) and `python -m bench` (the
repository as the current folder) both put the repository ahead of site-packages.
"""
