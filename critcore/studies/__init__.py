"""Studies as the notebooks run them: the quickstart, RQ1 (critic quality, the paper's Table 2 and
Figure 2) and RQ2 (data scaling, Figures 3 and 6); their parameter schemas and dry-run validation;
the `critcore run` runner (papermill); and a small generated preference set with a ground truth.

A notebook is thin: its `parameters` cell holds the study's parameters (the keys of
`SCHEMAS[study]`), then it calls

    run = studies.setup("rq1", globals())          # validate, expand ${data}, open the cache
    splits = studies.load_splits(run)                # train / validation / eval pairs
    critiqued = studies.critique_all(run, splits)    # one pass of each critic over every split
    results = studies.rq1_train_all(run, critiqued)  # one RM per backbone x critic
    table = studies.rq1_table(run, results); run.save_table(table, "rq1_table")
    run.save_chart(studies.rq1_score_chart(table), "rq1_score")
    run.finish()                                     # run.json

Everything a run writes goes under `run.out_dir` (outputs/<study>/<run-id>/ from `critcore run`),
atomically: tables as CSV, charts as HTML and PNG, run.json, and one stable directory per reward
model, rms/<backbone>__<critic>[__n<size>]/, where `critcore.train.train` finds its finished run,
so a rerun reuses trained models; critiques are reused from the SQLite cache `critique_cache`
(default outputs/critiques.sqlite).

Modules, lower first (each imports only those above it): generated (the generated set), specs
(data specs), schema (parameters, critics, backbones), validation (dry runs), run (StudyRun and
the pipeline steps), rq1 (quickstart and RQ1), rq2, runner (`critcore run`).
"""
from .generated import (CAPITALS, GENERATED_KINDS, GENERATED_SECTIONS, GENERATED_SPLITS, generated_pairs,
                        generated_truth, load_generated)
from .rq1 import (_simulated_p, long_table, paired_tests, quickstart_chart, quickstart_table, quickstart_train_all,
                  rq1_charts, rq1_dose_chart, rq1_length_table, rq1_score_chart, rq1_table, rq1_train_all)
from .rq2 import (rq2_curves, rq2_score_chart, rq2_sections_chart, rq2_table, rq2_train_all, rq2_worth_chart,
                  rq2_worth_n)
from .run import (VERSIONED, Splits, StudyRun, choose_threads, critique_all, critique_examples, describe_splits,
                  eval_names, git_info, load_results, load_splits, outputs_root, package_versions, result_row, rm_dir,
                  setup, train_rm)
from .runner import read_params, run_study
from .schema import (COMMON, NOTEBOOK_FOR, NOTEBOOKS, PROJECT_ROOT, SCHEMAS, SECTION_LABELS, Backbone, backbones_of,
                     build_critic, critic_label, critics_of, is_baseline, resolve_params, slug)
from .specs import check_spec, load_spec, resolve_sections
from .validation import Report, check_backbone, find_notebook, notebook_parameters, validate, validate_generic
