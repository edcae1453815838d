# Stage `models`: fetch a model's weights once and store them as a transformers folder
# (docs/DESIGN.md, "Models without a network"; successor_heads.models.fetch_model).
# A local rule: compute nodes are often offline, and the job is download-bound. The folder is
# built under a temporary name and renamed into place with manifest.json written last, so
# downstream rules depend on its manifest (results/{model}/model/manifest.json), never on the folder.


localrules:
    fetch_model,


rule fetch_model:
    params:
        **job_params("fetch_model"),
    output:
        **layout.outputs("models", RESULTS),
    log:
        layout.log("models", RESULTS),
    conda:
        CONDA_ENV
    threads: res("cpus")  # the GGUF is dequantized with torch; the script sets its thread count
    script:
        "../scripts/fetch_model.py"
