import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # dist_run (the worker script) is importable by the tests
