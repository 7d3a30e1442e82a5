"""Print the output patterns of every rule of the workflow as JSON (run in a subprocess by
tests/test_contracts.py: loading a workflow changes process-wide state).

usage: python tests/rule_outputs.py <workdir> <config overlay as JSON>
"""

import json
import sys
from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, ResourceSettings

REPO = Path(__file__).resolve().parents[1]

workdir, overlay = Path(sys.argv[1]), json.loads(sys.argv[2])
with SnakemakeApi() as api:
    workflow = api.workflow(
        resource_settings=ResourceSettings(),
        config_settings=ConfigSettings(configfiles=[REPO / "config/config.yaml"], config=overlay),
        snakefile=REPO / "workflow/Snakefile",
        workdir=workdir,
    )._workflow
    print(json.dumps({rule.name: [str(out) for out in rule.output] for rule in workflow.rules}))
