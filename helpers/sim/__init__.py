"""An embedded vLLM 0.32-compatible server that simulates Qwen3-0.6B; see docs/simulator.md.

Example:
    >>> from helpers.sim import serve, predict
    >>> with serve(profile="instant") as server:
    ...     print(server.base_url)          # point an OpenAI client here
    >>> predict(profile="l4", concurrency=32).itl_s   # what the engine will produce
"""

from helpers.extras import require_extra

require_extra(
    "sim", ["starlette", "uvicorn", "orjson", "prometheus_client", "jsonschema"], needed_for="the simulator"
)

from helpers.sim.config import SimConfig
from helpers.sim.predict import Prediction, predict
from helpers.sim.process import SimServer, SimServerError, serve
from helpers.sim.profiles import PROFILES, Profile

__all__ = [
    "PROFILES",
    "Prediction",
    "Profile",
    "SimConfig",
    "SimServer",
    "SimServerError",
    "predict",
    "serve",
]
