# Stage `scores`: successor scores (both effective-embedding modes) + behavioural check,
# then the zoo table and the paper's Figure 2 (left).


rule successor_scores:
    params:
        **job_params("successor_scores"),
    input:
        **layout.inputs("scores", RESULTS),
    output:
        **reported(
            layout.outputs("scores", RESULTS),
            category="Successor scores",
            captions={
                "csv": "successor_scores_csv.rst",
                "heatmap": "successor_heatmap.rst",
                "top": "top_head_tasks.rst",
            },
        ),
    log:
        layout.log("scores", RESULTS),
    conda:
        CONDA_ENV
    resources:
        mem_mb=res("mem_mb", streams=True),
        runtime=res("runtime"),
        gpu=res("gpu"),
    threads: res("cpus")
    script:
        "../scripts/successor_scores.py"


rule zoo_table:
    params:
        **job_params("zoo_table"),
    input:
        summaries=expand(layout.outputs("scores", RESULTS)["summary"], model=ZOO),
        scores=expand(layout.outputs("scores", RESULTS)["csv"], model=ZOO),
        scores_h5=expand(layout.outputs("scores", RESULTS)["h5"], model=ZOO),
    output:
        **reported(
            layout.zoo_outputs("zoo_table", RESULTS, ZOO_NAME),
            category="Zoo",
            subcategory=None,
            captions={"csv": "zoo_table.rst", "fig": "zoo_figure.rst", "per_task": "zoo_per_task.rst"},
        ),
    log:
        layout.zoo_log("zoo_table", RESULTS, ZOO_NAME),
    conda:
        CONDA_ENV
    localrule: True
    script:
        "../scripts/zoo_table.py"

