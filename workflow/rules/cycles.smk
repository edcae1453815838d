# Stage `cycles` (ours): circular features of days, months, digits and letters, every head as a
# map of each circle (rotation score, shift, purity, circulant profile), the successor head's
# causal check; and the zoo's table of the successor head's rotation score per model and task.


rule cycles:
    params:
        **job_params("cycles"),
    input:
        **layout.inputs("cycles", RESULTS),
    output:
        **reported(
            layout.outputs("cycles", RESULTS),
            category="Circular features",
            captions={
                "circles": "cycles_circles_csv.rst",
                "rotation": "cycles_rotation_csv.rst",
                "circles_fig": "cycles_circles.rst",
                "heatmap": "cycles_heatmap.rst",
            },
        ),
    log:
        layout.log("cycles", RESULTS),
    conda:
        CONDA_ENV
    resources:
        mem_mb=res("mem_mb", streams=True),
        runtime=res("runtime"),
        gpu=res("gpu"),
    threads: res("cpus")
    script:
        "../scripts/cycles.py"


rule cycles_table:
    input:
        summaries=expand(layout.outputs("cycles", RESULTS)["summary"], model=ZOO),
    output:
        **reported(
            layout.zoo_outputs("cycles_table", RESULTS, ZOO_NAME),
            category="Zoo",
            subcategory=None,
            captions={"csv": "cycles_table.rst"},
        ),
    log:
        layout.zoo_log("cycles_table", RESULTS, ZOO_NAME),
    conda:
        CONDA_ENV
    localrule: True
    script:
        "../scripts/cycles_table.py"
