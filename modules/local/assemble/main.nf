include { shellQuote; shellQuoteAll; stubVersions } from '../functions'

process ASSEMBLE {
    tag "${meta.id}:${meta.method}"
    label 'process_low'

    input:
    tuple val(meta), path(chunks, stageAs: 'filled/*'), path(record)

    output:
    tuple val(meta), path("${meta.method}/${meta.id}.nii"), emit: filled
    path 'versions.yml'                                        , topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    tssc-assemble \\
        --record ${shellQuote(record)} \\
        --out ${shellQuote("${meta.method}/${meta.id}.nii")} \\
        ${args} \\
        ${shellQuoteAll(chunks)}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml
    """

    stub:
    """
    mkdir -p ${shellQuote(meta.method)}
    touch ${shellQuote("${meta.method}/${meta.id}.nii")}

    ${stubVersions(task.process, workflow.manifest.version)}
    """
}
