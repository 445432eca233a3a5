include { shellQuote; optionArg } from '../functions'

process PREPARE {
    tag "${meta.subject}"
    label 'process_low'

    input:
    tuple val(meta), path(scan, stageAs: 'scan/*')

    output:
    tuple val(meta), path("${meta.subject}.nii"), path("${meta.subject}.json"), emit: prepared
    path 'versions.yml'                                                         , emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    tssc-prepare \\
        --scan ${shellQuote(scan)} \\
        --out ${shellQuote("${meta.subject}.nii")} \\
        --subject ${shellQuote(meta.subject)} \\
        --mode ${shellQuote(meta.mode)} \\
        ${optionArg('--start-frame', meta.start_frame != null ? meta.start_frame : params.start_frame)} \\
        ${optionArg('--end-frame', meta.end_frame != null ? meta.end_frame : params.end_frame)} \\
        ${optionArg('--frames', params.frames)} \\
        ${optionArg('--size', params.size)} \\
        ${optionArg('--depth', params.depth)} \\
        ${optionArg('--frames-between', meta.mode == 'upsample' ? params.frames_between : null)} \\
        ${optionArg('--known-every', meta.mode == 'evaluate' ? params.known_every : null)} \\
        ${optionArg('--low-percentile', params.low_percentile)} \\
        ${optionArg('--high-percentile', params.high_percentile)} \\
        ${args}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml
    """

    stub:
    """
    touch ${shellQuote("${meta.subject}.nii")} ${shellQuote("${meta.subject}.json")}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml
    """
}
