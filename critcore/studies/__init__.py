"""The studies, as their notebooks run them: every name imported here is their API. Each study
module declares its schema, its steps and tables, and registers the schema, its dry-run checks and
its time projection (critcore.params.register); importing this package registers them all.
A notebook is thin: its `parameters` cell mirrors the study's schema, then, for RQ1:

    run = studies.setup("rq1", globals())            # resolve the parameters, open the run
    splits = studies.load_splits(run)                 # train / validation / eval pairs
    critiqued = studies.critique_all(run, splits)     # one pass of each critic over every split
    results = studies.rq1_train_all(run, critiqued)   # one RM per backbone x critic (x seed)
    table = studies.rq1_table(run, results); run.save_table(table, "rq1_table")
    run.finish()                                      # run.json

`critcore run PARAMS` (studies.run_study) executes a study's notebook with papermill.
"""
from ..rms import load_results
from ..run import setup
from ..splits import critique_examples, describe_splits, load_splits
from .base import critique_all
from .judge import judge_all, judge_examples, judge_table, ties_table
from .metacritique import first_items, metacritique_all, metacritique_table, quality_vs_gain
from .protocol import selected
from .quickstart import quickstart_chart, quickstart_table, quickstart_train_all
from .rq1 import (disagreement_examples, paired_tests, rq1_ablation, rq1_effects, rq1_information, rq1_length_table,
                  rq1_probe_all, rq1_seed_table, rq1_table, rq1_train_all, verdict_lines)
from .rq1_charts import effects_chart, information_chart, rq1_charts
from .rq2 import rq2_curves, rq2_effects, rq2_score_chart, rq2_sections_chart, rq2_splits, rq2_table, rq2_train_all, rq2_worth_chart, rq2_worth_n
from .runner import run_study
from .validation import notebook_parameters, validate
