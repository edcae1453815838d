# Checkpoint sweeps (docs/DESIGN.md, "Model specs"): every checkpoint is a model of its own in the
# zoo (its own fetch_model and successor_scores jobs, with their resources, on SLURM as anywhere);
# this zoo-level rule sets their scores against training step: the best head's score and the score
# of the head that is top at the last checkpoint, with the behavioural agreement marked.


rule over_training:
    input:
        summaries=[layout.outputs("scores", RESULTS, m["model"])["summary"] for m in SWEEP_MEMBERS],
        scores_h5=[layout.outputs("scores", RESULTS, m["model"])["h5"] for m in SWEEP_MEMBERS],
    output:
        **reported(
            layout.zoo_outputs("over_training", RESULTS, ZOO_NAME),
            category="Zoo",
            subcategory=None,
            captions={"csv": "over_training_csv.rst", "fig": "over_training.rst"},
        ),
    params:
        members=SWEEP_MEMBERS,
    log:
        layout.zoo_log("over_training", RESULTS, ZOO_NAME),
    conda:
        CONDA_ENV
    localrule: True
    script:
        "../scripts/over_training.py"
