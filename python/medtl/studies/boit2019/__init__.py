"""boit2019: its protocol, data, adapter, report and `medtl data` commands."""

from medtl.studies.boit2019 import adapter, cli, protocol  # noqa: F401  (they register themselves)
