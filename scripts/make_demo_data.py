"""Create the demo data set: synthetic clips, versioned in a git + DVC repo with a local remote
(``genre-classification demo-data``, which works without a checkout, e.g. in a deployment).

After this, the workflow's first rule runs a real `dvc pull` from that remote.
"""

import sys

from genre_classification.cli import main

sys.exit(main(["demo-data", *sys.argv[1:]]))
