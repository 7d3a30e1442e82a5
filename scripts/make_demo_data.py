"""Create the demo data set: synthetic clips, versioned in a git + DVC repo with a local remote.

After this, the workflow's first rule runs a real `dvc pull` from that remote.
"""

import argparse

from genre_classification.demo_data import TINY_DATA, make_demo_repo

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--repo", default="results/demo-data", help="DVC data repository to create")
parser.add_argument("--remote", default="results/demo-dvc-remote", help="local DVC remote dir")
parser.add_argument("--target", default="genres")
parser.add_argument("--clips-per-genre", type=int, default=20)
parser.add_argument("--seconds", type=float, default=6.0)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--genres", nargs="+", help="genres to synthesize (default: all)")
parser.add_argument("--bad-files", action="store_true", help="add 3 files to be quarantined")
parser.add_argument("--force", action="store_true", help="recreate even if it exists")
parser.add_argument(
    "--tiny", action="store_true", help="the tiny test data set (.test/config/config.yaml)"
)
args = parser.parse_args()
data = {
    "clips_per_genre": args.clips_per_genre,
    "seconds": args.seconds,
    "genres": args.genres,
    "bad_files": args.bad_files,
}
if args.tiny:
    data = TINY_DATA
print(
    make_demo_repo(
        args.repo, args.remote, target=args.target, seed=args.seed, force=args.force, **data
    )
)
