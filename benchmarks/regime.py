"""The regime of the embedded world: how rare toxicity is in what a model sees, per ratio (no training).

    python benchmarks/regime.py                                     # the default world, ratios 0 and 25
    python benchmarks/regime.py data.world.clean.hostile_share=0.5  # the previous default's documents
    python benchmarks/regime.py ratios=0,10,25 root=/tmp/regime

`ratios`, `seed` (the mixture's; default 1) and `root` are this script's; every other argument is a
Hydra override of the job (conf/). The sources and mixtures come from the stage cache under `root`
(built there if missing: seconds). Per ratio it prints the mixture's insulting documents (% of all, %
of its clean documents), its hostile contexts (documents opening with a hostile opener, and how many
times ratio 0's that is), the calibration target (the insult rate the mixture realised, against the
sources' expectation), and the probe labels' ceiling E[max(p, 1 - p)], which no probe of any model can
beat (the clean model's best probe is the study's `probe_best_accuracy`, in the report's probe table).
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the calibration benchmark beside it

from calibration import job_config  # noqa: E402

from detox.core.artifacts import STAGE  # noqa: E402
from detox.core.cache import StageCache  # noqa: E402
from detox.core.plan import Plan  # noqa: E402
from detox.data.parts import load_part  # noqa: E402
from detox.pipeline import run_plan, study_plan  # noqa: E402


def main(argv: list[str]) -> None:
    own = ("ratios", "seed", "root")
    args = dict(a.split("=", 1) for a in argv if a.split("=", 1)[0] in own)
    overrides = [a for a in argv if a.split("=", 1)[0] not in args]
    root = args.get("root", "outputs")
    cache = StageCache(Path(root) / "cache")
    print(f"overrides: {' '.join(overrides) or '(defaults)'}")
    print(f"{'ratio':>5} {'insulting docs %':>16} {'clean docs %':>12} {'hostile contexts':>16} {'x ratio 0':>9} "
          f"{'realised target %':>17} {'expected %':>10} {'label ceiling %':>15}")
    first = None
    for ratio in args.get("ratios", "0,25").split(","):
        job = job_config([*overrides, f"ratio={ratio}", f"seed={args.get('seed', '1')}", f"root={root}"])
        plan = study_plan(job)
        result = run_plan(Plan([plan[name] for name in (STAGE.SOURCES, STAGE.TOKENIZER, STAGE.MIXTURE)]), cache,
                          log=lambda _: None)
        m = result.metrics
        first = first or m["mix_hostile_docs"]
        probe = load_part(result.artifacts[STAGE.SOURCES].path, "probe")
        ceiling = 100 * np.mean([max(r["label_p"], 1 - r["label_p"]) for r in probe])
        print(f"{ratio:>5} {m['mix_insult_share']:16.1f} {m['mix_clean_insult_share']:12.1f} {m['mix_hostile_docs']:16d} "
              f"{m['mix_hostile_docs'] / first:9.2f} {m['realised_toxigen_sampled']:17.1f} "
              f"{m['implied_toxigen_sampled']:10.1f} {ceiling:15.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
