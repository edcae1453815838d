# Stages `activations` + `features`: MLP0 outputs of number and succession tokens cached to
# HDF5, then SAEs and linear probes for index mod 10 (and mod 7, mod 12) read through the
# successor head (paper, Section 3; successor_heads.features.activations, .sae, .probes,
# .stages.features). directions.h5 is the contract the editing stage reads.


rule cache_activations:
    params:
        **job_params("cache_activations"),
    input:
        **layout.inputs("activations", RESULTS),
    output:
        **layout.outputs("activations", RESULTS),
    log:
        layout.log("activations", RESULTS),
    conda:
        CONDA_ENV
    resources:
        mem_mb=res("mem_mb", streams=True),
        runtime=res("runtime"),
        gpu=res("gpu"),
    threads: res("cpus")
    script:
        "../scripts/cache_activations.py"


rule features:
    params:
        **job_params("features"),
    input:
        **layout.inputs("features", RESULTS),
    output:
        **reported(
            layout.outputs("features", RESULTS),
            category="Features",
            captions={
                "table": "features_table.rst",
                "activations_fig": "features_activations.rst",
                "confusion": "features_probe_confusion.rst",
                "cosine": "features_probe_sae_cosine.rst",
            },
        ),
    log:
        layout.log("features", RESULTS),
    conda:
        CONDA_ENV
    resources:
        mem_mb=res("mem_mb", streams=True),
        runtime=res("runtime"),
        gpu=res("gpu"),
    threads: res("cpus")
    script:
        "../scripts/features.py"

