# Stage `editing`: vector arithmetic with the mod-m features through the successor head, its
# greater-than bias, and what a feature edit does to next-token loss (paper Section 3.2, Figure 5).


rule editing:
    params:
        **job_params("editing"),
    input:
        **layout.inputs("editing", RESULTS),
    output:
        **reported(
            layout.outputs("editing", RESULTS),
            category="Editing",
            captions={
                "va_summary": "editing_vector_arithmetic.rst",
                "prompts": "editing_loss_prompts.rst",
                "corpus": "editing_loss_corpus.rst",
                "sweep": "editing_scale_sweep.rst",
                "greater_fig": "editing_greater_than.rst",
            },
        ),
    log:
        layout.log("editing", RESULTS),
    conda:
        CONDA_ENV
    resources:
        mem_mb=res("mem_mb", streams=True),
        runtime=res("runtime"),
        gpu=res("gpu"),
    threads: res("cpus")
    script:
        "../scripts/editing.py"

