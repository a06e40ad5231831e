"""tajbakhsh2016: its protocol, data, adapter, report and `medtl data` commands."""

from medtl.studies.tajbakhsh2016 import cli, protocol  # noqa: F401  (they register themselves)
