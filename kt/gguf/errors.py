"""The one error type for unusable model files: its str() is the one line a user sees."""
from pathlib import Path


class GGUFError(Exception):
    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem
