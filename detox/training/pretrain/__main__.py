"""`python -m detox.training.pretrain ARGS.json`: one rank of a multi-device run on one node, started by
rank 0 (detox.training.pretrain.local_ranks)."""

import sys

from detox.training.pretrain.local_ranks import run_rank

run_rank(sys.argv[1])
