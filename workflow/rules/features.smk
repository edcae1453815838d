# Stages `activations` + `features`: MLP0 outputs of number and succession tokens cached to
# HDF5, then SAEs and linear probes for index mod 10 (and mod 7, mod 12) read through the
# successor head (paper, Section 3; successor_heads.features.activations, .sae, .probes,
# .stages.features). directions.h5 is the contract the editing stage reads.


rule cache_activations:
    input:
        config=stage_config("activations"),
        manifest=MANIFEST,
    output:
        h5=f"{RESULTS}/{{model}}/activations/effective_embeddings.h5",
    log:
        f"{RESULTS}/logs/{{model}}/cache_activations.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
    threads: res("cpus")
    script:
        "../scripts/cache_activations.py"


rule features:
    input:
        config=stage_config("features"),
        manifest=MANIFEST,
        activations=rules.cache_activations.output.h5,
        scores=f"{RESULTS}/{{model}}/successor_scores.h5",
    output:
        directions=f"{RESULTS}/{{model}}/features/directions.h5",
        saes=f"{RESULTS}/{{model}}/features/saes.h5",
        table=report(
            f"{RESULTS}/{{model}}/features/features_table.csv",
            caption="../report/features_table.rst",
            category="Features",
            subcategory="{model}",
        ),
        summary=f"{RESULTS}/{{model}}/features/features_summary.json",
        activations_fig=report(
            f"{RESULTS}/{{model}}/features/feature_activations.png",
            caption="../report/features_activations.rst",
            category="Features",
            subcategory="{model}",
        ),
        confusion=report(
            f"{RESULTS}/{{model}}/features/probe_confusion.png",
            caption="../report/features_probe_confusion.rst",
            category="Features",
            subcategory="{model}",
        ),
        cosine=report(
            f"{RESULTS}/{{model}}/features/probe_sae_cosine.png",
            caption="../report/features_probe_sae_cosine.rst",
            category="Features",
            subcategory="{model}",
        ),
    log:
        f"{RESULTS}/logs/{{model}}/features.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
    threads: res("cpus")
    script:
        "../scripts/features.py"


STAGE_TARGETS["features"] = [
    f"{RESULTS}/{{model}}/features/directions.h5",
    f"{RESULTS}/{{model}}/features/features_summary.json",
    f"{RESULTS}/{{model}}/features/features_table.csv",
    f"{RESULTS}/{{model}}/features/feature_activations.png",
    f"{RESULTS}/{{model}}/features/probe_confusion.png",
    f"{RESULTS}/{{model}}/features/probe_sae_cosine.png",
]
