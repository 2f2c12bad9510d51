"""These tests run the Triton kernels on CPU tensors under the interpreter.

Triton reads TRITON_INTERPRET when it is first imported, so they need their own process:

    TRITON_INTERPRET=1 python -m pytest -q tests/triton       # `make test` runs it after `pytest tests`

Without the variable (the main `pytest tests` run), the directory is not collected.
"""
import os

if os.environ.get("TRITON_INTERPRET") != "1":
    collect_ignore_glob = ["test_*.py"]
