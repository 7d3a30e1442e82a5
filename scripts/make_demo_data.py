"""Create the demo data set: synthetic clips, versioned in a git + DVC repo with a local remote.

After this, the workflow's first rule runs a real `dvc pull` from that remote.
"""

import argparse
import shutil
from pathlib import Path

from genre_classification.demo_data import make_demo_dataset
from genre_classification.dvc_repo import add_and_push, drop_local_copy, init_data_repo

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--repo", default="results/demo-data", help="DVC data repository to create")
parser.add_argument("--remote", default="results/demo-dvc-remote", help="local DVC remote dir")
parser.add_argument("--target", default="genres")
parser.add_argument("--clips-per-genre", type=int, default=20)
parser.add_argument("--seconds", type=float, default=6.0)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--force", action="store_true", help="recreate even if it exists")
args = parser.parse_args()

repo, remote = Path(args.repo), Path(args.remote)
if (repo / f"{args.target}.dvc").exists() and remote.is_dir() and not args.force:
    print(f"demo data already versioned in {repo} (remote {remote}); --force recreates it")
    raise SystemExit(0)
shutil.rmtree(repo, ignore_errors=True)
shutil.rmtree(remote, ignore_errors=True)
init_data_repo(repo, remote)
paths = make_demo_dataset(repo / args.target, args.clips_per_genre, args.seconds, seed=args.seed)
commit = add_and_push(repo, args.target, f"Demo audio: {len(paths)} synthetic clips")
drop_local_copy(repo, args.target)
print(f"{len(paths)} clips in {repo}/{args.target}.dvc (git {commit[:8]}), pushed to {remote}")
