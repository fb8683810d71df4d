"""Test-run settings shared by the unit tests and nbval over the notebooks.

The notebooks resolve their endpoint from the environment; under test they must always talk to the
embedded simulator, on a faster clock, so a user's `QWEN_BASE_URL` never leaks into the suite.
"""

import os
import tempfile

for _name in ("QWEN_BASE_URL", "OPENAI_BASE_URL", "QWEN_API_KEY", "OPENAI_API_KEY", "QWEN_MODEL"):
    os.environ.pop(_name, None)
os.environ.setdefault("QWEN_SIM_TIME_SCALE", "10")
# Results written while testing go to a scratch folder, not into the working directory.
os.environ.setdefault("QWEN_RESULTS_DIR", tempfile.mkdtemp(prefix="qwen-results-"))

# nbval runs the English notebooks only: each Chinese twin (notebooks/*.zh-CN.ipynb) has the same code
# cells and outputs byte for byte, which tests/test_zh_edition.py proves without executing them again.
# (`pytest notebooks/NN_name.zh-CN.ipynb` still runs one when named explicitly.)
collect_ignore_glob = ["notebooks/*.zh-CN.ipynb"]
