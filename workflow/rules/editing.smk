# Stage `editing`: vector arithmetic with the mod-m features through the successor head, its
# greater-than bias, and what a feature edit does to next-token loss (paper Section 3.2, Figure 5).


rule editing:
    input:
        config=stage_config("editing"),
        manifest=MANIFEST,
        scores=f"{RESULTS}/{{model}}/successor_scores.h5",
        directions=f"{RESULTS}/{{model}}/features/directions.h5",
    output:
        h5=f"{RESULTS}/{{model}}/editing/editing.h5",
        vector_arithmetic=f"{RESULTS}/{{model}}/editing/vector_arithmetic.csv",
        va_residues=f"{RESULTS}/{{model}}/editing/vector_arithmetic_residues.csv",
        va_summary=report(
            f"{RESULTS}/{{model}}/editing/vector_arithmetic_summary.csv",
            caption="../report/editing_vector_arithmetic.rst",
            category="Editing",
            subcategory="{model}",
        ),
        greater_than=f"{RESULTS}/{{model}}/editing/greater_than.csv",
        prompts=report(
            f"{RESULTS}/{{model}}/editing/edit_loss_prompts.csv",
            caption="../report/editing_loss_prompts.rst",
            category="Editing",
            subcategory="{model}",
        ),
        corpus=report(
            f"{RESULTS}/{{model}}/editing/edit_loss_corpus.csv",
            caption="../report/editing_loss_corpus.rst",
            category="Editing",
            subcategory="{model}",
        ),
        sweep=report(
            f"{RESULTS}/{{model}}/editing/scale_sweep.png",
            caption="../report/editing_scale_sweep.rst",
            category="Editing",
            subcategory="{model}",
        ),
        greater_fig=report(
            f"{RESULTS}/{{model}}/editing/greater_than.png",
            caption="../report/editing_greater_than.rst",
            category="Editing",
            subcategory="{model}",
        ),
        summary=f"{RESULTS}/{{model}}/editing/editing_summary.json",
    log:
        f"{RESULTS}/logs/{{model}}/editing.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
    threads: res("cpus")
    script:
        "../scripts/editing.py"


STAGE_TARGETS["editing"] = [
    f"{RESULTS}/{{model}}/editing/editing_summary.json",
    f"{RESULTS}/{{model}}/editing/vector_arithmetic_summary.csv",
    f"{RESULTS}/{{model}}/editing/scale_sweep.png",
    f"{RESULTS}/{{model}}/editing/greater_than.png",
]
