include { shellQuote; extOptions; stubVersions } from '../functions'

process PREPARE {
    tag "${meta.subject}"
    label 'process_low'

    input:
    tuple val(meta), path(scan, stageAs: 'scan/*')

    output:
    tuple val(meta), path("${meta.subject}.nii"), path("${meta.subject}.json"), emit: prepared
    path 'versions.yml'                                                         , topic: versions

    script:
    // The row's frame range wins over the pipeline's; --frames-between is for upsample mode
    // only, --known-every for evaluate mode only (tssc-prepare refuses them otherwise).
    def row = [:]
    row['start-frame'] = meta.start_frame
    row['end-frame'] = meta.end_frame
    def options = (task.ext.options ?: [:]) + row.findAll { name, value -> value != null }
    def unused = meta.mode == 'upsample' ? ['known-every'] : ['frames-between']
    options = extOptions(options.findAll { name, value -> !(name in unused) })
    def args = task.ext.args ?: ''
    """
    tssc-prepare \\
        --scan ${shellQuote(scan)} \\
        --out ${shellQuote("${meta.subject}.nii")} \\
        --subject ${shellQuote(meta.subject)} \\
        --mode ${shellQuote(meta.mode)} \\
        ${options} \\
        ${args}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml
    """

    stub:
    """
    touch ${shellQuote("${meta.subject}.nii")} ${shellQuote("${meta.subject}.json")}

    ${stubVersions(task.process, workflow.manifest.version)}
    """
}
