include { shellQuote; extOptions; stubVersions } from '../functions'

process SYNTH {
    tag "${meta.id}"
    label 'process_single'

    input:
    val meta

    output:
    tuple val(meta), path("${meta.id}", type: 'dir'), emit: cohort
    path 'versions.yml'                                , topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def options = extOptions(task.ext.options)
    def args = task.ext.args ?: ''
    """
    tssc-synth \\
        --out ${shellQuote(meta.id)} \\
        --seed ${shellQuote(meta.seed)} \\
        ${options} \\
        ${args}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml
    """

    stub:
    """
    mkdir -p ${shellQuote(meta.id)}
    touch ${shellQuote("${meta.id}/stub_000.nii.gz")} ${shellQuote("${meta.id}/stub_001.nii.gz")}
    printf 'subject,scan\\nstub_000,stub_000.nii.gz\\nstub_001,stub_001.nii.gz\\n' > ${shellQuote("${meta.id}/samplesheet.csv")}

    ${stubVersions(task.process, workflow.manifest.version)}
    """
}
