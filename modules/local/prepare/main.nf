include { shellQuote; extOptions; stubVersions } from '../functions'

process PREPARE {
    tag "${meta.id}"
    label 'process_low'

    input:
    tuple val(meta), path(scan, stageAs: 'scan/*')

    output:
    tuple val(meta), path("${meta.id}.nii"), path("${meta.id}.json"), emit: prepared
    path 'versions.yml'                                                         , topic: versions

    when:
    task.ext.when == null || task.ext.when

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
        --out ${shellQuote("${meta.id}.nii")} \\
        --subject ${shellQuote(meta.id)} \\
        --mode ${shellQuote(meta.mode)} \\
        ${options} \\
        ${args}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml
    """

    stub:
    """
    touch ${shellQuote("${meta.id}.nii")} ${shellQuote("${meta.id}.json")}

    ${stubVersions(task.process, workflow.manifest.version)}
    """
}
