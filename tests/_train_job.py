"""Run one training job in a fresh process: ``python _train_job.py <job.json>`` (tests only)."""

import json
import logging
import sys

from genre_classification.train import train

logging.basicConfig(level=logging.INFO)
job = json.loads(open(sys.argv[1]).read())
info = train(**job)
print("RUN_INFO", json.dumps(info), flush=True)
