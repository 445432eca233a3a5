include { shellQuote; stubVersions } from '../functions'

// The cohort report, laid out as a tssc-run folder (metrics/, and prepared/ + filled/METHOD/
// of the figure subject) so that tssc-report writes the same tables and figures as tssc-run.
process REPORT {
    tag "${dataset}"
    label 'process_single'

    input:
    val dataset                                     // the cohort's label (letters, digits, ._-)
    val figure_subject                              // subject of the example figures
    path frames  , stageAs: 'cohort/metrics/*'      // every *.frames.csv
    path prepared, stageAs: 'cohort/prepared/*'     // the figure subject's volume and record
    path filled  , stageAs: 'cohort/filled/*'       // METHOD/ folders of its filled series

    output:
    path 'report/*.csv'      , emit: tables   // comparison, paired (methods vs linear), ablation (diffusion and tssc), summary, cohort, frames
    path 'report/*.png'      , emit: figures  // psnr_per_frame, examples.DATASET, errors.DATASET
    path 'report/report.html', emit: html
    path 'versions.yml'      , topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    tssc-report \\
        --out report \\
        --dataset ${shellQuote("${dataset}=cohort")} \\
        --figure-subject ${shellQuote(figure_subject)} \\
        ${args}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml
    """

    stub:
    """
    mkdir -p report
    touch report/comparison.csv report/paired.csv report/ablation.csv report/summary.csv report/cohort.csv report/frames.csv
    touch report/psnr_per_frame.png ${shellQuote("report/examples.${dataset}.png")} ${shellQuote("report/errors.${dataset}.png")}
    touch report/report.html

    ${stubVersions(task.process, workflow.manifest.version)}
    """
}
