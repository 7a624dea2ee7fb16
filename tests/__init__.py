"""The test suite. Python imports this file before `tests/conftest.py` and any test module.

XLA:CPU compiles the suite's programs with its FAST_COMPILE preset, in this process and in every
subprocess (they inherit XLA_FLAGS), unless XLA_FLAGS already picks a preset:
`XLA_FLAGS=--xla_cpu_opt_preset=CPU_OPT_PRESET_DEFAULT pytest` runs it as users' programs
compile. The suite's programs are tiny and run a few steps, so compiling is most of its time;
the preset compiles them about 2x faster (tests/test_optimizers.py's float64 steps: 34 -> 15 s).
It optimises the same HLO less, which moves results by rounding only: every bound in tests/
holds with either preset. Set here because XLA reads XLA_FLAGS once, when JAX starts a backend.
"""

import os

FAST_COMPILE = "--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_COMPILE"
if "xla_cpu_opt_preset" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()
