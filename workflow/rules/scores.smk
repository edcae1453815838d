# Stage `scores`: successor scores (both effective-embedding modes) + behavioural check,
# then the zoo table and the paper's Figure 2 (left).


rule successor_scores:
    input:
        config=stage_config("scores"),
        manifest=MANIFEST,
    output:
        h5=f"{RESULTS}/{{model}}/successor_scores.h5",
        csv=report(
            f"{RESULTS}/{{model}}/successor_scores.csv",
            caption="../report/successor_scores_csv.rst",
            category="Successor scores",
            subcategory="{model}",
        ),
        tasks=f"{RESULTS}/{{model}}/tasks.csv",
        heatmap=report(
            f"{RESULTS}/{{model}}/successor_heatmap.png",
            caption="../report/successor_heatmap.rst",
            category="Successor scores",
            subcategory="{model}",
        ),
        top=report(
            f"{RESULTS}/{{model}}/top_head_tasks.png",
            caption="../report/top_head_tasks.rst",
            category="Successor scores",
            subcategory="{model}",
        ),
        summary=f"{RESULTS}/{{model}}/scores_summary.json",
    log:
        f"{RESULTS}/logs/{{model}}/successor_scores.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
    threads: res("cpus")
    script:
        "../scripts/successor_scores.py"


rule zoo_table:
    input:
        summaries=expand(f"{RESULTS}/{{model}}/scores_summary.json", model=ZOO),
        scores=expand(f"{RESULTS}/{{model}}/successor_scores.csv", model=ZOO),
    output:
        csv=report(
            f"{ZOO_DIR}/successor_heads.csv",
            caption="../report/zoo_table.rst",
            category="Zoo",
        ),
        fig=report(
            f"{ZOO_DIR}/max_score_vs_params.png",
            caption="../report/zoo_figure.rst",
            category="Zoo",
        ),
        per_task=report(
            f"{ZOO_DIR}/top_heads_per_task.png",
            caption="../report/zoo_per_task.rst",
            category="Zoo",
        ),
    log:
        f"{RESULTS}/logs/{ZOO_NAME}/zoo_table.log",
    conda:
        CONDA_ENV
    localrule: True
    script:
        "../scripts/zoo_table.py"


STAGE_TARGETS["scores"] = [
    f"{RESULTS}/{{model}}/successor_scores.csv",
    f"{RESULTS}/{{model}}/successor_heatmap.png",
    f"{RESULTS}/{{model}}/top_head_tasks.png",
]
ZOO_TARGETS += [
    f"{ZOO_DIR}/successor_heads.csv",
    f"{ZOO_DIR}/max_score_vs_params.png",
    f"{ZOO_DIR}/top_heads_per_task.png",
]
