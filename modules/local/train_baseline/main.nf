include { shellQuote; optionArg } from '../functions'

// One task per learned baseline of --train_baselines (tssc-train-baseline --model).
process TRAIN_BASELINE {
    tag "${model}"
    label 'process_high'
    label 'process_long'
    label 'process_gpu'

    input:
    path volumes, stageAs: 'prepared/*'
    path records, stageAs: 'prepared/*'
    val model

    output:
    path "baselines/${model}/checkpoint", type: 'dir', emit: checkpoint
    path "baselines/${model}/log.csv"                , emit: log
    path 'versions.yml'                               , emit: versions

    script:
    def args = task.ext.args ?: ''
    """
    tssc-train-baseline \\
        --data prepared \\
        --out ${shellQuote("baselines/${model}")} \\
        --model ${shellQuote(model)} \\
        --no-progress \\
        ${optionArg('--steps', params.train_baseline_steps)} \\
        ${optionArg('--batch-size', params.train_baseline_batch_size)} \\
        ${optionArg('--lr', params.train_baseline_lr)} \\
        ${optionArg('--val-subjects', params.train_baseline_val_subjects)} \\
        ${optionArg('--val-every', params.train_baseline_val_every)} \\
        ${optionArg('--checkpoint-every', params.train_baseline_checkpoint_every)} \\
        ${optionArg('--seed', params.train_baseline_seed)} \\
        ${optionArg('--device', params.device)} \\
        ${args}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml ${optionArg('--device', params.device)}
    """

    stub:
    """
    mkdir -p ${shellQuote("baselines/${model}/checkpoint")}
    touch ${shellQuote("baselines/${model}/checkpoint/config.json")} ${shellQuote("baselines/${model}/log.csv")}

    tssc-versions --process ${shellQuote(task.process)} --out versions.yml ${optionArg('--device', params.device)}
    """
}
