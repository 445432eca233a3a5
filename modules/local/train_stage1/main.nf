include { shellQuote; extOptions; stubVersions } from '../functions'

process TRAIN_STAGE1 {
    tag 'stage1'
    label 'process_high'
    label 'process_long'
    label 'process_gpu'

    input:
    path volumes, stageAs: 'prepared/*'
    path records, stageAs: 'prepared/*'

    output:
    path 'stage1/checkpoint', type: 'dir', emit: checkpoint
    path 'stage1/log.csv'                , emit: log
    path 'versions.yml'                  , topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def options = extOptions(task.ext.options)
    def args = task.ext.args ?: ''
    """
    tssc-train-stage1 \\
        --data prepared \\
        --out stage1 \\
        --no-progress \\
        ${options} \\
        ${args}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml
    """

    stub:
    """
    mkdir -p stage1/checkpoint
    touch stage1/checkpoint/config.json stage1/log.csv

    ${stubVersions(task.process, workflow.manifest.version)}
    """
}
