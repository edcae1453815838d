# Stage `wild`: successor heads in the wild (paper Section 4.3 and Appendix J): direct-effect
# mean ablation of every head on natural text, winning heads, categories of the successor
# head's winning tokens, and numbered-listing prompts.


rule wild:
    params:
        **job_params("wild"),
    input:
        **layout.inputs("wild", RESULTS),
    output:
        **reported(
            layout.outputs("wild", RESULTS),
            category="In the wild",
            captions={
                "winners": "wild_winners.rst",
                "categories": "wild_categories_csv.rst",
                "listings": "wild_listings.rst",
                "heatmap": "wild_heatmap.rst",
                "shares": "wild_category_shares.rst",
            },
        ),
    log:
        layout.log("wild", RESULTS),
    conda:
        CONDA_ENV
    resources:
        mem_mb=res("mem_mb", streams=True),
        runtime=res("runtime"),
        gpu=res("gpu"),
    threads: res("cpus")
    script:
        "../scripts/wild.py"

