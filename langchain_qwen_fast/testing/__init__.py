"""A simulated Qwen3-0.6B OpenAI-compatible server for demos, CPU benchmarks and fault tests.

``SimServer`` runs it as its own process on loopback (so its CPU never mixes with the client's);
``SimConfig`` is its command line as a frozen dataclass. Importing this package does not import
aiohttp: the server modules load only in the child process. See docs/simulator.md.
"""

from .process import SimServer
from .sim_engine import SimConfig

__all__ = ["SimConfig", "SimServer"]
