include { shellQuote; optionArg } from '../functions'

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
    path 'versions.yml'                  , emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    tssc-train-stage1 \\
        --data prepared \\
        --out stage1 \\
        --no-progress \\
        ${optionArg('--preset', params.train_stage1_preset)} \\
        ${optionArg('--steps', params.train_stage1_steps)} \\
        ${optionArg('--batch-size', params.train_stage1_batch_size)} \\
        ${optionArg('--lr', params.train_stage1_lr)} \\
        ${optionArg('--w-ssim', params.train_stage1_w_ssim)} \\
        ${optionArg('--val-subjects', params.train_stage1_val_subjects)} \\
        ${optionArg('--val-every', params.train_stage1_val_every)} \\
        ${optionArg('--checkpoint-every', params.train_stage1_checkpoint_every)} \\
        ${optionArg('--seed', params.train_stage1_seed)} \\
        ${optionArg('--device', params.device)} \\
        ${args}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml ${optionArg('--device', params.device)}
    """

    stub:
    """
    mkdir -p stage1/checkpoint
    touch stage1/checkpoint/config.json stage1/log.csv

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml ${optionArg('--device', params.device)}
    """
}
