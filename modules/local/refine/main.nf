include { shellQuote; optionArg } from '../functions'

process REFINE {
    tag "${meta.subject}"
    label 'process_medium'
    label 'process_gpu'

    input:
    tuple val(meta), path(filled, stageAs: 'filled/*'), path(record), path(checkpoint)

    output:
    tuple val(meta), path("${meta.method}/${meta.subject}.nii"), emit: refined
    path 'versions.yml'                                        , emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    tssc-refine \\
        --filled ${shellQuote(filled)} \\
        --record ${shellQuote(record)} \\
        --checkpoint ${shellQuote(checkpoint)} \\
        --out ${shellQuote("${meta.method}/${meta.subject}.nii")} \\
        ${optionArg('--tile', params.tile)} \\
        ${optionArg('--overlap', params.overlap)} \\
        ${optionArg('--backend', params.backend)} \\
        ${optionArg('--device', params.device)} \\
        ${args}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml ${optionArg('--device', params.device)}
    """

    stub:
    """
    mkdir -p ${shellQuote(meta.method)}
    touch ${shellQuote("${meta.method}/${meta.subject}.nii")}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml ${optionArg('--device', params.device)}
    """
}
