# Stage `wild`: successor heads in the wild (paper Section 4.3 and Appendix J): direct-effect
# mean ablation of every head on natural text, winning heads, categories of the successor
# head's winning tokens, and numbered-listing prompts.


rule wild:
    input:
        config=stage_config("wild"),
        manifest=MANIFEST,
        scores=f"{RESULTS}/{{model}}/successor_scores.h5",
    output:
        h5=f"{RESULTS}/{{model}}/wild/direct_effect.h5",
        winners=report(
            f"{RESULTS}/{{model}}/wild/winners.csv",
            caption="../report/wild_winners.rst",
            category="In the wild",
            subcategory="{model}",
        ),
        categories=report(
            f"{RESULTS}/{{model}}/wild/categories.csv",
            caption="../report/wild_categories_csv.rst",
            category="In the wild",
            subcategory="{model}",
        ),
        head_wins=f"{RESULTS}/{{model}}/wild/head_wins.csv",
        listings=report(
            f"{RESULTS}/{{model}}/wild/listings.csv",
            caption="../report/wild_listings.rst",
            category="In the wild",
            subcategory="{model}",
        ),
        heatmap=report(
            f"{RESULTS}/{{model}}/wild/loss_increase_heatmap.png",
            caption="../report/wild_heatmap.rst",
            category="In the wild",
            subcategory="{model}",
        ),
        shares=report(
            f"{RESULTS}/{{model}}/wild/category_shares.png",
            caption="../report/wild_category_shares.rst",
            category="In the wild",
            subcategory="{model}",
        ),
        summary=f"{RESULTS}/{{model}}/wild/wild_summary.json",
    log:
        f"{RESULTS}/logs/{{model}}/wild.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=res("mem_mb"),
        runtime=res("runtime"),
        gpu=res("gpu"),
    threads: res("cpus")
    script:
        "../scripts/wild.py"


STAGE_TARGETS["wild"] = [
    f"{RESULTS}/{{model}}/wild/winners.csv",
    f"{RESULTS}/{{model}}/wild/categories.csv",
    f"{RESULTS}/{{model}}/wild/listings.csv",
    f"{RESULTS}/{{model}}/wild/loss_increase_heatmap.png",
    f"{RESULTS}/{{model}}/wild/category_shares.png",
    f"{RESULTS}/{{model}}/wild/wild_summary.json",
]
