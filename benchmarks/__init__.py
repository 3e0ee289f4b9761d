# benchmarks/ is a package only so that pytest imports its conftest.py as benchmarks.conftest,
# not as a second top-level `conftest` next to tests/conftest.py (which tests import by name).
