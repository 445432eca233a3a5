include { shellQuote; extOptions; stubVersions } from '../functions'

process REFINE {
    tag "${meta.id}"
    label 'process_medium'
    label 'process_gpu'

    input:
    tuple val(meta), path(filled, stageAs: 'filled/*'), path(record), path(checkpoint)

    output:
    tuple val(meta), path("${meta.method}/${meta.id}.nii"), emit: refined
    path 'versions.yml'                                        , topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def options = extOptions(task.ext.options)
    def args = task.ext.args ?: ''
    """
    tssc-refine \\
        --filled ${shellQuote(filled)} \\
        --record ${shellQuote(record)} \\
        --checkpoint ${shellQuote(checkpoint)} \\
        --out ${shellQuote("${meta.method}/${meta.id}.nii")} \\
        ${options} \\
        ${args}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml
    """

    stub:
    """
    mkdir -p ${shellQuote(meta.method)}
    touch ${shellQuote("${meta.method}/${meta.id}.nii")}

    ${stubVersions(task.process, workflow.manifest.version)}
    """
}
