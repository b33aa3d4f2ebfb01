# FLAME Figure 1: win rate against FActScore for every Table 3 model, with error bars.

if "figure1" in EXTRA_TABLES:
    EXTRA_TARGETS += expand(f"{R}/figures/figure1.{{ext}}", ext=["png", "svg"])


rule figure1:
    input:
        f"{R}/tables/table3_dpo.csv",
    output:
        png=report(
            f"{R}/figures/figure1.png",
            caption="../report/figure1.rst",
            category="Figures",
        ),
        svg=report(
            f"{R}/figures/figure1.svg",
            caption="../report/figure1.rst",
            category="Figures",
        ),
    log:
        f"{LOGS}/figure1.log",
    conda:
        BASE_ENV
    threads: 1
    params:
        py=PY,
        out=lambda wc, output: output.png[: -len(".png")],
    shell:
        "{params.py} -m flame.figure --table {input} --x bio_fs --out {params.out} > {log} 2>&1"
