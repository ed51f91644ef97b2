"""tpo: Thought Preference Optimization (Wu et al., 2024) on Hugging Face transformers + TRL.

>>> import tpo
>>> config = tpo.load_config(preset="tiny")
>>> rows = tpo.run(config, out="runs/tiny")   # doctest: +SKIP
"""

from tpo.config import RunConfig, load_config
from tpo.pipeline import run

__all__ = ["RunConfig", "load_config", "run"]
__version__ = "0.1.0"
