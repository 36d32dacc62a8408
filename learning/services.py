"""The learning cycles change how answers are scored (tunables, validator weights) through the
scoring app's services, which audit each change and reload every process (docs/adr/0017-layers.md).

They are named here as well because the learning benchmark (bench/learning_bench.py) sets its
operator tunables through ``learning.services.tunable_set``; new code imports ``scoring.services``.
"""

from scoring.services import tunable_set, validator_config_delete, validator_config_save

__all__ = ["tunable_set", "validator_config_delete", "validator_config_save"]
